// co_await a blocking call on the BlockingPool from a connection's coroutine.
// The coroutine must run on a strand (or a single-threaded executor): the
// worker's completion and the deadline timer both resume it through that
// executor, and whichever comes first answers.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <sched.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <type_traits>

#include "xks/core/blocking_pool.hpp"
#include "xks/core/result.hpp"

namespace xks::core {

inline constexpr const char* kThrottledMessage =
    "the proxy is at capacity (HSM work queue full); retry later";
// Log-only detail of the queue-full ThrottlingException (metrics tell the
// throttling reasons apart by it).
inline constexpr std::string_view kQueueFullDetail = "HSM work queue full";
inline constexpr const char* kDeadlineMessage =
    "the HSM did not answer within the request deadline";

// The I/O thread's side of offload(): an I/O thread whose coroutines wait for
// HSM completions, and that has nothing else to run, waits a moment for them
// instead of sleeping in epoll_wait and being woken by the worker's post (on a
// virtual machine each such wake-up of an idle vCPU costs tens of µs, and its
// tail milliseconds). See run_io_thread().
struct CompletionWait {
  unsigned awaiting = 0;                    // offloads of this thread not yet resumed
  std::atomic<std::uint64_t> posted{0};     // completions workers posted to this thread
  static inline thread_local CompletionWait* current = nullptr;
};

// Runs `context` on this thread until it stops, like io_context::run(), but
// when it has nothing ready to run while offloads of this thread are
// outstanding and the pool's recent calls are fast (a local HSM), it waits up
// to about twice their time for a completion before blocking in epoll_wait.
// With a slow (network) HSM it blocks at once. `wait` must outlive the pool's
// jobs (workers write to it after they post).
inline void run_io_thread(boost::asio::io_context& context, const BlockingPool& pool, CompletionWait& wait) {
  // Wait only for calls that usually finish within this...
  constexpr auto kSpinCallCeiling = std::chrono::microseconds(200);
  // ...and never longer than this (the worker's own wake-up is included).
  constexpr auto kSpinLimit = std::chrono::microseconds(300);
  CompletionWait::current = &wait;
  while (!context.stopped()) {
    const auto seen = wait.posted.load(std::memory_order_acquire);
    if (context.poll() > 0) continue;  // everything that was ready has run
    const auto recent = pool.recent_job_time();
    if (wait.awaiting > 0 && recent <= kSpinCallCeiling && !context.stopped()) {
      const auto until =
          SteadyClock::now() + std::min<SteadyClock::duration>(2 * recent + kSpinCallCeiling / 2, kSpinLimit);
      while (wait.posted.load(std::memory_order_acquire) == seen && SteadyClock::now() < until) {
        sched_yield();  // lets a worker queued on this CPU run
      }
      if (wait.posted.load(std::memory_order_acquire) != seen) continue;
    }
    context.run_one();
  }
  CompletionWait::current = nullptr;
}

// Runs f() (returning Result<T>) on `pool`. Answers:
//  - ThrottlingException at once when the pool's queue is full;
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

  CompletionWait* const waiter = CompletionWait::current;  // null off I/O threads
  const bool queued = pool.try_submit(
      deadline, [state, executor, waiter, f = std::move(f)](bool expired) mutable {
        R r = expired ? R(make_error(ErrorName::DependencyTimeoutException, kDeadlineMessage,
                                     "deadline passed while queued for an HSM worker"))
                      : f();
        boost::asio::post(executor, [state, r = std::move(r)]() mutable {
          if (state->result) return;  // the deadline already answered
          state->result.emplace(std::move(r));
          state->timer.cancel();
        });
        if (waiter) waiter->posted.fetch_add(1, std::memory_order_release);
      });
  if (!queued) {
    co_return R(make_error(ErrorName::ThrottlingException, kThrottledMessage,
                           std::string(kQueueFullDetail)));
  }
  // Completes on expiry or when the worker's completion cancels it; the
  // operation_aborted error is expected in the second case.
  if (waiter) ++waiter->awaiting;
  co_await state->timer.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
  if (waiter) --waiter->awaiting;
  if (!state->result) {
    state->result.emplace(make_error(ErrorName::DependencyTimeoutException, kDeadlineMessage,
                                     "HSM call overran the request deadline"));
    co_return std::move(*state->result);
  }
  co_return std::move(*state->result);
}

}  // namespace xks::core
