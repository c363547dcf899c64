// BlockingPool: bounded queue, expired jobs not run, and a stop that does not
// wait forever for a hung job. offload() and run_io_thread(): completions reach
// the I/O thread, which waits for fast calls but does not burn a core on slow ones.
#include "xks/core/blocking_pool.hpp"

#include <gtest/gtest.h>
#include <time.h>

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
  ASSERT_TRUE(pool.try_submit(later, [&, released](bool) { released.wait(); ++ran; }));
  while (pool.busy_workers() == 0) std::this_thread::sleep_for(1ms);
  ASSERT_TRUE(pool.try_submit(later, [&](bool) { ++ran; }));   // queued
  EXPECT_FALSE(pool.try_submit(later, [&](bool) { ++ran; }));  // queue full
  release.set_value();
  pool.stop();
  EXPECT_EQ(ran.load(), 2);
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

TEST(BlockingPool, RecentJobTimeFollowsTheJobsThatRan) {
  BlockingPool pool(1, 64, "t");
  EXPECT_EQ(pool.recent_job_time(), SteadyClock::duration::zero());
  // Expired jobs do no work and do not count.
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(pool.try_submit(SteadyClock::now() - 1ms, [](bool) {}));
  std::promise<void> done;
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(pool.try_submit(SteadyClock::now() + 10s, [&, i](bool) {
      std::this_thread::sleep_for(2ms);
      if (i == 39) done.set_value();
    }));
  }
  done.get_future().wait();
  // A 1/16-weight average of 40 samples of >= 2 ms, from zero: >= 2 ms x 0.92.
  EXPECT_GE(pool.recent_job_time(), 1500us);
  EXPECT_LT(pool.recent_job_time(), 1s);
}

// Runs run_io_thread() on its own thread and `body` as a coroutine on it;
// returns the I/O thread's CPU time.
std::chrono::nanoseconds run_on_io_thread(BlockingPool& pool, CompletionWait& wait,
                                          std::function<boost::asio::awaitable<void>()> body) {
  boost::asio::io_context context(1);
  auto guard = boost::asio::make_work_guard(context);
  std::promise<std::chrono::nanoseconds> cpu;
  std::thread io([&] {
    run_io_thread(context, pool, wait);
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    cpu.set_value(std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec));
  });
  boost::asio::co_spawn(
      context,
      [&]() -> boost::asio::awaitable<void> {
        co_await body();
        guard.reset();
        context.stop();
      },
      boost::asio::detached);
  io.join();
  return cpu.get_future().get();
}

TEST(RunIoThread, DeliversEveryCompletionAndStops) {
  BlockingPool pool(2, 64, "t");
  CompletionWait wait;
  int sum = 0;
  run_on_io_thread(pool, wait, [&]() -> boost::asio::awaitable<void> {
    for (int i = 1; i <= 200; ++i) {
      auto job = [i]() -> Result<int> { return i; };
      auto r = co_await offload(pool, SteadyClock::now() + 5s, std::move(job));
      sum += r ? *r : -100000;
    }
  });
  EXPECT_EQ(sum, 200 * 201 / 2);
  EXPECT_EQ(wait.awaiting, 0U);
  EXPECT_EQ(wait.posted.load(), 200U);
  EXPECT_EQ(CompletionWait::current, nullptr);  // this thread never was an I/O thread
}

TEST(RunIoThread, SleepsThroughASlowCallInsteadOfSpinning) {
  BlockingPool pool(1, 64, "t");
  CompletionWait wait;
  // Fast calls teach the pool that waiting pays; then one call takes 300 ms
  // (a network HSM that stalls). The I/O thread may wait a few hundred µs for
  // it, then must sleep: its CPU time stays far below the 300 ms.
  const auto cpu = run_on_io_thread(pool, wait, [&]() -> boost::asio::awaitable<void> {
    for (int i = 0; i < 50; ++i) {
      auto fast = []() -> Result<int> { return 1; };
      (void)co_await offload(pool, SteadyClock::now() + 5s, std::move(fast));
    }
    EXPECT_LT(pool.recent_job_time(), 200us);
    auto slow = []() -> Result<int> {
      std::this_thread::sleep_for(300ms);
      return 2;
    };
    auto r = co_await offload(pool, SteadyClock::now() + 5s, std::move(slow));
    EXPECT_TRUE(r && *r == 2);
  });
  EXPECT_LT(cpu, 100ms);
}

TEST(RunIoThread, RunsOtherWorkWhileACallIsOutstanding) {
  BlockingPool pool(1, 64, "t");
  CompletionWait wait;
  std::atomic<int> ticks{0};
  run_on_io_thread(pool, wait, [&]() -> boost::asio::awaitable<void> {
    auto ex = co_await boost::asio::this_coro::executor;
    for (int i = 0; i < 20; ++i) {
      auto fast = []() -> Result<int> { return 1; };
      (void)co_await offload(pool, SteadyClock::now() + 5s, std::move(fast));
    }
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
    EXPECT_LT(waited, 500ms);  // the posts ran within ~20 ms, not after a long spin
  });
}

}  // namespace
}  // namespace xks::core
