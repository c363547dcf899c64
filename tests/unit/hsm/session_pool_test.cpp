#include "xks/hsm/session_pool.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <set>
#include <thread>

namespace xks::hsm {
namespace {

using namespace std::chrono_literals;

struct FakeHsm {
  std::atomic<CK_SESSION_HANDLE> next{1};
  std::atomic<int> opened{0}, closed{0};
  std::atomic<bool> fail_open{false};
  SessionPool::Hooks hooks() {
    return {[this]() -> Result<CK_SESSION_HANDLE> {
              if (fail_open) return make_error(ErrorName::InternalException, "open failed");
              ++opened;
              return next.fetch_add(1);
            },
            [this](CK_SESSION_HANDLE) { ++closed; }};
  }
};

TEST(SessionPool, ReusesIdleSessions) {
  FakeHsm hsm;
  SessionPool pool("h", 2, 10ms, hsm.hooks());
  CK_SESSION_HANDLE first;
  {
    auto l = pool.lease();
    ASSERT_TRUE(l);
    first = l->handle();
    EXPECT_EQ(pool.in_use(), 1u);
  }
  EXPECT_EQ(pool.in_use(), 0u);
  auto again = pool.lease();
  ASSERT_TRUE(again);
  EXPECT_EQ(again->handle(), first);
  EXPECT_EQ(hsm.opened.load(), 1);
}

TEST(SessionPool, ThrottlesWhenAllAreBusyAfterTheTimeout) {
  FakeHsm hsm;
  SessionPool pool("hsm-a", 1, 20ms, hsm.hooks());
  auto held = pool.lease();
  ASSERT_TRUE(held);
  const auto start = std::chrono::steady_clock::now();
  auto r = pool.lease();
  ASSERT_FALSE(r);
  EXPECT_GE(std::chrono::steady_clock::now() - start, 20ms);
  EXPECT_EQ(r.error().name, ErrorName::ThrottlingException);
  EXPECT_NE(r.error().message.find("'hsm-a'"), std::string::npos);
}

TEST(SessionPool, AWaiterGetsTheReturnedSession) {
  FakeHsm hsm;
  SessionPool pool("h", 1, 2s, hsm.hooks());
  auto held = pool.lease();
  ASSERT_TRUE(held);
  std::thread t([&] {
    std::this_thread::sleep_for(20ms);
    held = SessionPool::Lease{};  // returns it
  });
  auto r = pool.lease();
  t.join();
  EXPECT_TRUE(r);
}

TEST(SessionPool, DiscardClosesAndFreesThePlace) {
  FakeHsm hsm;
  SessionPool pool("h", 1, 10ms, hsm.hooks());
  {
    auto l = pool.lease();
    ASSERT_TRUE(l);
    l->discard();
    EXPECT_EQ(hsm.closed.load(), 1);
  }
  EXPECT_EQ(pool.open_count(), 0u);
  auto l = pool.lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(hsm.opened.load(), 2);
}

TEST(SessionPool, FreshLeaseOpensBeforeClosingTheIdleOne) {
  FakeHsm hsm;
  SessionPool pool("h", 2, 10ms, hsm.hooks());
  ASSERT_TRUE(pool.fill());
  EXPECT_EQ(hsm.opened.load(), 2);
  auto l = pool.lease_fresh();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->handle(), 3u);
  EXPECT_EQ(hsm.closed.load(), 1);
  EXPECT_EQ(pool.open_count(), 2u);
}

TEST(SessionPool, OpenFailureIsReturnedAndTheReservationReleased) {
  FakeHsm hsm;
  hsm.fail_open = true;
  SessionPool pool("h", 1, 10ms, hsm.hooks());
  auto l = pool.lease();
  ASSERT_FALSE(l);
  EXPECT_EQ(l.error().message, "open failed");
  EXPECT_EQ(pool.open_count(), 0u);
  hsm.fail_open = false;
  EXPECT_TRUE(pool.lease());
}

TEST(SessionPool, FreshLeaseKeepsTheIdleSessionWhenOpeningFails) {
  FakeHsm hsm;
  SessionPool pool("h", 1, 10ms, hsm.hooks());
  ASSERT_TRUE(pool.fill());
  hsm.fail_open = true;
  EXPECT_FALSE(pool.lease_fresh());
  EXPECT_EQ(hsm.closed.load(), 0);
  auto l = pool.lease();
  ASSERT_TRUE(l);
  EXPECT_EQ(l->handle(), 1u);
}

TEST(SessionPool, NeverMoreThanCapacityUnderContention) {
  FakeHsm hsm;
  SessionPool pool("h", 3, 5s, hsm.hooks());
  std::atomic<int> concurrent{0}, peak{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        auto l = pool.lease();
        ASSERT_TRUE(l);
        int now = ++concurrent;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        --concurrent;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_LE(peak.load(), 3);
  EXPECT_LE(hsm.opened.load(), 3);
  EXPECT_EQ(pool.in_use(), 0u);
}

TEST(SessionPool, DestructorClosesIdleSessions) {
  FakeHsm hsm;
  {
    SessionPool pool("h", 3, 10ms, hsm.hooks());
    ASSERT_TRUE(pool.fill());
  }
  EXPECT_EQ(hsm.closed.load(), 3);
}

}  // namespace
}  // namespace xks::hsm
