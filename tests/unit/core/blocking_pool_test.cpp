// BlockingPool: bounded queue, expired jobs not run, and a stop that does not
// wait forever for a hung job.
#include "xks/core/blocking_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>

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

}  // namespace
}  // namespace xks::core
