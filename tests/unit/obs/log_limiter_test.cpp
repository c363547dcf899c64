#include "xks/obs/log_limiter.hpp"

#include <gtest/gtest.h>

namespace xks::obs {
namespace {

using namespace std::chrono_literals;
using Pairs = std::vector<std::pair<std::size_t, std::uint64_t>>;

class LogLimiterTest : public ::testing::Test {
 protected:
  LogLimiter::Clock::time_point now_{1000s};
  LogLimiter limiter_{3, 5, 10s, [this] { return now_; }};
};

TEST_F(LogLimiterTest, FirstBurstLinesPassThenTheRestAreCounted) {
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter_.admit(0)) << i;
  for (int i = 0; i < 995; ++i) EXPECT_FALSE(limiter_.admit(0)) << i;
  EXPECT_EQ(limiter_.take_suppressed(), (Pairs{{0, 995}}));
  EXPECT_EQ(limiter_.take_suppressed(), Pairs{}) << "counts restart after a summary";
}

TEST_F(LogLimiterTest, CausesAreLimitedSeparately) {
  for (int i = 0; i < 7; ++i) limiter_.admit(0);
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter_.admit(1)) << i;
  EXPECT_FALSE(limiter_.admit(1));
  EXPECT_TRUE(limiter_.admit(2));
  EXPECT_EQ(limiter_.take_suppressed(), (Pairs{{0, 2}, {1, 1}}));
}

TEST_F(LogLimiterTest, ANewPeriodGivesANewBurst) {
  for (int i = 0; i < 6; ++i) limiter_.admit(0);
  now_ += 9999ms;
  EXPECT_FALSE(limiter_.admit(0)) << "still the same period";
  now_ += 1ms;
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(limiter_.admit(0)) << i;
  EXPECT_FALSE(limiter_.admit(0));
  EXPECT_EQ(limiter_.take_suppressed(), (Pairs{{0, 3}}));
}

TEST_F(LogLimiterTest, UnknownCauseIsNeverLimited) {
  for (int i = 0; i < 100; ++i) EXPECT_TRUE(limiter_.admit(7));
  EXPECT_EQ(limiter_.take_suppressed(), Pairs{});
}

}  // namespace
}  // namespace xks::obs
