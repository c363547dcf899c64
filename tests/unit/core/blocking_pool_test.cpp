// BlockingPool: bounded queue, expired jobs not run, and a stop that does not
// wait forever for a hung job. offload(): every completion reaches the I/O
// thread, which serves other work while a call is outstanding.
#include "xks/core/blocking_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <thread>

#include "xks/core/offload.hpp"

namespace xks::core {
namespace {

using namespace std::chrono_literals;

TEST(BlockingPool, RunsJobsAndRefusesWhenFull) {
  BlockingPool pool(1, 1, "t");
  std::promise<void> release;
  auto released = release.get_future().share();
  std::atomic<int> ran{0};
  const auto later = SteadyClock::now() + 10s;
  ASSERT_TRUE(pool.try_submit(later, [&, released](bool) {
    released.wait();
    ++ran;
  }));
  while (pool.busy_workers() == 0) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(pool.try_submit(later, [&](bool) { ++ran; }));   // queued
  EXPECT_FALSE(pool.try_submit(later, [&](bool) { ++ran; }));  // queue full
  release.set_value();
  pool.stop();
  EXPECT_EQ(ran.load(), 2);
}

TEST(BlockingPool, RefusesAJobThatWouldEndPastItsDeadline) {
  BlockingPool pool(1, 100, "t");
  EXPECT_EQ(pool.recent_call_time(), 0ns);
  // Teach the pool that a call takes at least 40 ms.
  std::promise<void> first;
  ASSERT_TRUE(pool.try_submit(SteadyClock::now() + 10s, [&](bool) {
    std::this_thread::sleep_for(40ms);
    first.set_value();
  }));
  first.get_future().wait();
  while (pool.busy_workers() != 0) std::this_thread::sleep_for(1ms);
  EXPECT_GE(pool.recent_call_time(), 40ms);

  // The only worker busy: a job behind it would wait about 40 ms, then take 40.
  std::promise<void> release;
  auto released = release.get_future().share();
  ASSERT_TRUE(pool.try_submit(SteadyClock::now() + 10s, [released](bool) { released.wait(); }));
  while (pool.busy_workers() == 0) std::this_thread::sleep_for(1ms);
  std::atomic<int> ran{0};
  EXPECT_FALSE(pool.try_submit(SteadyClock::now() + 60ms, [&](bool) { ++ran; }))
      << "40 ms of wait and 40 ms of call end past a 60 ms deadline";
  EXPECT_TRUE(pool.try_submit(SteadyClock::now() + 10s, [&](bool) { ++ran; }));
  release.set_value();
  pool.stop();
  EXPECT_EQ(ran.load(), 1);
}

TEST(BlockingPool, AnIdleWorkerTakesAJobWhateverTheCallTime) {
  BlockingPool pool(1, 100, "t");
  std::promise<void> first;
  ASSERT_TRUE(pool.try_submit(SteadyClock::now() + 10s, [&](bool) {
    std::this_thread::sleep_for(40ms);
    first.set_value();
  }));
  first.get_future().wait();
  while (pool.busy_workers() != 0) std::this_thread::sleep_for(1ms);
  std::promise<bool> expired;
  ASSERT_TRUE(pool.try_submit(SteadyClock::now() + 20ms, [&](bool e) { expired.set_value(e); }));
  EXPECT_FALSE(expired.get_future().get());
}

TEST(BlockingPool, ExpiredJobIsToldSo) {
  BlockingPool pool(1, 4, "t");
  std::promise<bool> expired;
  ASSERT_TRUE(pool.try_submit(SteadyClock::now() - 1ms, [&](bool e) { expired.set_value(e); }));
  EXPECT_TRUE(expired.get_future().get());
}

TEST(BlockingPool, StopWithinReturnsAtOnceWhenIdle) {
  BlockingPool pool(2, 4, "t");
  const auto t0 = SteadyClock::now();
  EXPECT_TRUE(pool.stop_within(5s));
  EXPECT_LT(SteadyClock::now() - t0, 1s);
  EXPECT_EQ(pool.threads(), 0U);
}

TEST(BlockingPool, StopWithinGivesUpOnAHungJob) {
  auto release = std::make_shared<std::promise<void>>();
  auto released = release->get_future().share();
  // On the heap: if an assertion fails before the release, the pool (and its
  // hung worker) is leaked rather than joined forever.
  auto* pool = new BlockingPool(1, 4, "t");
  ASSERT_TRUE(pool->try_submit(SteadyClock::now() + 10s, [released](bool) { released.wait(); }));
  while (pool->busy_workers() == 0) std::this_thread::sleep_for(1ms);
  const auto t0 = SteadyClock::now();
  EXPECT_FALSE(pool->stop_within(100ms));
  const auto waited = SteadyClock::now() - t0;
  EXPECT_GE(waited, 100ms);
  EXPECT_LT(waited, 2s);
  // Once the job returns, the pool finishes stopping normally.
  release->set_value();
  EXPECT_TRUE(pool->stop_within(5s));
  delete pool;
}

// Runs `body` as a coroutine on an io_context of its own thread, as the
// proxy's I/O threads do, until it returns.
void run_on_io_thread(std::function<boost::asio::awaitable<void>()> body) {
  boost::asio::io_context context(1);
  auto guard = boost::asio::make_work_guard(context);
  std::thread io([&] { context.run(); });
  boost::asio::co_spawn(
      context,
      [&]() -> boost::asio::awaitable<void> {
        co_await body();
        guard.reset();
        context.stop();
      },
      boost::asio::detached);
  io.join();
}

TEST(Offload, DeliversEveryCompletion) {
  BlockingPool pool(2, 64, "t");
  int sum = 0;
  run_on_io_thread([&]() -> boost::asio::awaitable<void> {
    for (int i = 1; i <= 200; ++i) {
      auto job = [i]() -> Result<int> { return i; };
      auto r = co_await offload(pool, SteadyClock::now() + 5s, std::move(job));
      sum += r ? *r : -100000;
    }
  });
  EXPECT_EQ(sum, 200 * 201 / 2);
}

TEST(Offload, RunsOtherWorkWhileACallIsOutstanding) {
  BlockingPool pool(1, 64, "t");
  std::atomic<int> ticks{0};
  run_on_io_thread([&]() -> boost::asio::awaitable<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    // While a call is outstanding, work posted from another thread (as the
    // reactor would deliver a request) runs on the I/O thread: the call sees
    // all ten ticks before it returns.
    std::thread poster([&] {
      for (int i = 0; i < 10; ++i) {
        boost::asio::post(ex, [&] { ++ticks; });
        std::this_thread::sleep_for(2ms);
      }
    });
    auto slow = [&]() -> Result<int> {
      for (int i = 0; i < 1000 && ticks.load() < 10; ++i) std::this_thread::sleep_for(1ms);
      return ticks.load();
    };
    const auto t0 = SteadyClock::now();
    auto r = co_await offload(pool, SteadyClock::now() + 5s, std::move(slow));
    const auto waited = SteadyClock::now() - t0;
    poster.join();
    EXPECT_TRUE(r && *r == 10);
    EXPECT_LT(waited, 500ms);  // the posts ran within ~20 ms, not after the call
  });
}

}  // namespace
}  // namespace xks::core
