// co_await a blocking call on the BlockingPool from a connection's coroutine.
// The coroutine must run on a strand (or a single-threaded executor): the
// worker's completion and the deadline timer both resume it through that
// executor, and whichever comes first answers.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <memory>
#include <optional>
#include <type_traits>

#include "xks/core/blocking_pool.hpp"
#include "xks/core/result.hpp"

namespace xks::core {

inline constexpr const char* kThrottledMessage =
    "the proxy is at capacity (HSM work queue full); retry later";
inline constexpr const char* kDeadlineMessage =
    "the HSM did not answer within the request deadline";

// Runs f() (returning Result<T>) on `pool`. Answers:
//  - ThrottlingException (cause QueueFull) at once when the pool's queue is full;
//  - DependencyTimeoutException when the deadline passes first — a call already
//    running is left to finish on its worker and its result is discarded;
//  - otherwise f()'s result.
//
// Parameters are taken by value: g++ 12 mishandles class-type temporaries (e.g.
// defaulted reference arguments) that live across a co_await (double free).
template <class F, class R = std::invoke_result_t<F&>>
boost::asio::awaitable<R> offload(BlockingPool& pool, Deadline deadline, F f) {
  auto executor = co_await boost::asio::this_coro::executor;
  struct State {
    explicit State(decltype(executor) ex) : timer(ex) {}
    boost::asio::steady_timer timer;
    std::optional<R> result;
  };
  auto state = std::make_shared<State>(executor);
  state->timer.expires_at(deadline);

  const bool queued =
      pool.try_submit(deadline, [state, executor, f = std::move(f)](bool expired) mutable {
        R r = expired ? R(make_error(ErrorName::DependencyTimeoutException, kDeadlineMessage,
                                     "deadline passed while queued for an HSM worker"))
                      : f();
        boost::asio::post(executor, [state, r = std::move(r)]() mutable {
          if (state->result) return;  // the deadline already answered
          state->result.emplace(std::move(r));
          state->timer.cancel();
        });
      });
  if (!queued) {
    co_return R(make_error(ErrorName::ThrottlingException, kThrottledMessage, "HSM work queue full",
                           Error::Cause::QueueFull));
  }
  // Completes on expiry or when the worker's completion cancels it; the
  // operation_aborted error is expected in the second case.
  co_await state->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (!state->result) {
    state->result.emplace(make_error(ErrorName::DependencyTimeoutException, kDeadlineMessage,
                                     "HSM call overran the request deadline"));
    co_return std::move(*state->result);
  }
  co_return std::move(*state->result);
}

}  // namespace xks::core
