// core::Backoff against a fake clock: the first delay, doubling up to max,
// reset on success, remaining time, give_up/resume, and max below initial.
#include "xks/core/backoff.hpp"

#include <gtest/gtest.h>

#include "unit/core/fake_clock.hpp"

namespace xks::core {
namespace {

using namespace std::chrono_literals;
using testing::FakeClock;

TEST(Backoff, DueUntilTheFirstFailure) {
  FakeClock clock;
  Backoff b(clock, 100ms, 1000ms);
  EXPECT_TRUE(b.due());
  EXPECT_EQ(b.remaining(), 0ms);
  EXPECT_EQ(b.next_delay(), 100ms);
}

TEST(Backoff, EachFailureWaitsTheDelayThenDoublesItUpToMax) {
  FakeClock clock;
  Backoff b(clock, 100ms, 500ms);
  EXPECT_EQ(b.failed(), 100ms);
  EXPECT_FALSE(b.due());
  EXPECT_EQ(b.remaining(), 100ms);
  clock.advance(99ms);
  EXPECT_FALSE(b.due());
  EXPECT_EQ(b.remaining(), 1ms);
  clock.advance(1ms);
  EXPECT_TRUE(b.due());
  EXPECT_EQ(b.remaining(), 0ms);

  EXPECT_EQ(b.failed(), 200ms);
  clock.advance(199ms);
  EXPECT_FALSE(b.due());
  clock.advance(1ms);
  EXPECT_TRUE(b.due());
  EXPECT_EQ(b.failed(), 400ms);
  EXPECT_EQ(b.failed(), 500ms);  // capped
  EXPECT_EQ(b.failed(), 500ms);
  EXPECT_EQ(b.remaining(), 500ms);
}

TEST(Backoff, ResetStartsAgainFromInitial) {
  FakeClock clock;
  Backoff b(clock, 10ms, 1000ms);
  (void)b.failed();
  (void)b.failed();
  EXPECT_EQ(b.next_delay(), 40ms);
  b.reset();
  EXPECT_EQ(b.next_delay(), 10ms);
  EXPECT_EQ(b.failed(), 10ms);
}

TEST(Backoff, GivenUpIsNeverDueUntilResumed) {
  FakeClock clock;
  Backoff b(clock, 10ms, 10ms);
  (void)b.failed();
  b.give_up();
  EXPECT_TRUE(b.gave_up());
  clock.advance(std::chrono::hours{24});
  EXPECT_FALSE(b.due());
  b.resume();
  EXPECT_FALSE(b.gave_up());
  EXPECT_TRUE(b.due());
}

TEST(Backoff, MaxBelowInitialIsInitial) {
  FakeClock clock;
  Backoff b(clock, 300ms, 100ms);
  EXPECT_EQ(b.failed(), 300ms);
  EXPECT_EQ(b.failed(), 300ms);
}

TEST(Backoff, TheRealClockMoves) {
  const auto a = steady_clock().now();
  EXPECT_LE(a, steady_clock().now());
  EXPECT_LE(a, SteadyClock::now());
}

}  // namespace
}  // namespace xks::core
