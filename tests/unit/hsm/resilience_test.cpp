// Resilience pieces that need no HSM: SessionPool::invalidate, DeferredHsm (a fleet
// member that failed to open), MultiHsmBackend::open_fleet's refusal of configuration
// errors, and the event names. The device-error recovery of Pkcs11Backend is
// exercised end to end with the fault module (tests/integration/test_resilience.py).
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "unit/core/fake_clock.hpp"
#include "xks/hsm/events.hpp"
#include "xks/hsm/multi_hsm_backend.hpp"
#include "xks/hsm/session_pool.hpp"

namespace xks::hsm {
namespace {

using namespace std::chrono_literals;

TEST(SessionPoolInvalidate, ClosesIdleAtOnceAndLeasedOnReturn) {
  std::atomic<CK_SESSION_HANDLE> next{1};
  std::atomic<int> closed{0};
  SessionPool pool("h", 2, 10ms,
                   {[&]() -> Result<CK_SESSION_HANDLE> { return next.fetch_add(1); },
                    [&](CK_SESSION_HANDLE) { ++closed; }});
  ASSERT_TRUE(pool.fill());
  auto leased = pool.lease();
  ASSERT_TRUE(leased);
  const CK_SESSION_HANDLE old = leased->handle();
  pool.invalidate();
  EXPECT_EQ(closed.load(), 1);          // the idle one
  EXPECT_EQ(pool.open_count(), 1u);     // the leased one still counts
  { auto moved = std::move(*leased); }  // comes back: closed, not pooled
  EXPECT_EQ(closed.load(), 2);
  EXPECT_EQ(pool.open_count(), 0u);
  auto fresh = pool.lease();
  ASSERT_TRUE(fresh);
  EXPECT_NE(fresh->handle(), old);
}

class OkBackend final : public KeyBackend {
 public:
  Result<KeyAttributes> key_attributes(std::string_view) override { return KeyAttributes{}; }
  Result<GcmCiphertext> encrypt(std::string_view, ByteView, ByteView) override {
    return GcmCiphertext{};
  }
  Result<SecureBytes> decrypt(std::string_view, ByteView, ByteView, ByteView, ByteView) override {
    return SecureBytes{};
  }
  std::vector<EkmHealth> check_health() override {
    EkmHealth h;
    h.id = "real";
    h.status = HealthStatus::Active;
    return {h};
  }
};

config::HsmConfig hsm_config(std::string name) {
  config::HsmConfig c;
  c.name = std::move(name);
  c.module = "/nonexistent/libpkcs11.so";
  c.token_label = "tok";
  return c;
}

TEST(DeferredHsm, FailsFastReportsUnavailableAndOpensWithBackoff) {
  testing::FakeClock clock;
  std::atomic<int> attempts{0};
  std::atomic<bool> device_up{false};
  std::vector<HsmEvent::Kind> events;
  std::mutex events_mutex;
  DeferredHsm hsm(
      hsm_config("b"), make_error(ErrorName::InternalException, "C_OpenSession: CKR_DEVICE_ERROR"),
      [&](const config::HsmConfig&, bool& transient) -> Result<std::unique_ptr<KeyBackend>> {
        ++attempts;
        if (!device_up) {
          transient = true;
          return make_error(ErrorName::InternalException, "still down");
        }
        return std::unique_ptr<KeyBackend>(std::make_unique<OkBackend>());
      },
      [&](const HsmEvent& e) {
        std::lock_guard lock(events_mutex);
        events.push_back(e.kind);
      },
      20ms, 40ms, clock);

  auto r = hsm.encrypt("k", {}, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::InternalException);
  EXPECT_NE(r.error().message.find("failed to open"), std::string::npos);

  // Not due yet: no attempt, UNAVAILABLE with the reason.
  auto h = hsm.check_health();
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Unavailable);
  EXPECT_NE(h[0].detail.find("CKR_DEVICE_ERROR"), std::string::npos);
  EXPECT_EQ(attempts.load(), 0);

  clock.advance(19ms);
  h = hsm.check_health();  // 1 ms before due: no attempt
  EXPECT_EQ(attempts.load(), 0);
  EXPECT_NE(h[0].detail.find("next attempt in 1 ms"), std::string::npos) << h[0].detail;
  clock.advance(6ms);
  h = hsm.check_health();  // due: one attempt, still down
  EXPECT_EQ(attempts.load(), 1);
  EXPECT_EQ(h[0].status, HealthStatus::Unavailable);
  h = hsm.check_health();  // backoff: no new attempt
  EXPECT_EQ(attempts.load(), 1);

  device_up = true;
  clock.advance(39ms);  // the doubled delay: 40 ms
  (void)hsm.check_health();
  EXPECT_EQ(attempts.load(), 1);
  clock.advance(6ms);
  h = hsm.check_health();
  EXPECT_EQ(attempts.load(), 2);
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Active);
  EXPECT_TRUE(hsm.is_open());
  EXPECT_TRUE(hsm.encrypt("k", {}, {}));
  std::lock_guard lock(events_mutex);
  ASSERT_EQ(events.size(), 2u);
  EXPECT_EQ(events[0], HsmEvent::Kind::ReinitFailed);
  EXPECT_EQ(events[1], HsmEvent::Kind::Opened);
}

// A reload recovers from it with a new backend (the daemon's reload opens new
// HSM sessions while an HSM is unavailable: tests/unit/app/daemon_test.cpp).
TEST(DeferredHsm, StopsRetryingOnAConfigurationFailure) {
  testing::FakeClock clock;
  std::atomic<int> attempts{0};
  DeferredHsm hsm(
      hsm_config("b"), make_error(ErrorName::InternalException, "device"),
      [&](const config::HsmConfig&, bool& transient) -> Result<std::unique_ptr<KeyBackend>> {
        ++attempts;
        transient = false;
        return make_error(ErrorName::InternalException, "HSM login refused (CKR_PIN_INCORRECT)");
      },
      {}, 1ms, 1ms, clock);
  clock.advance(3ms);
  (void)hsm.check_health();
  clock.advance(3ms);
  auto h = hsm.check_health();
  EXPECT_EQ(attempts.load(), 1);
  EXPECT_NE(h[0].detail.find("CKR_PIN_INCORRECT"), std::string::npos);
  EXPECT_NE(h[0].detail.find("not retried"), std::string::npos);
  clock.advance(3ms);
  (void)hsm.check_health();
  EXPECT_EQ(attempts.load(), 1);
}

TEST(MultiHsmOpenFleet, AConfigurationFailureStillFailsTheFleet) {
  auto fleet = MultiHsmBackend::open_fleet({hsm_config("a")});
  ASSERT_FALSE(fleet);
  EXPECT_NE(fleet.error().message.find("hsm.module"), std::string::npos);
}

TEST(MultiHsmOpenFleet, NoHsmIsAnError) { EXPECT_FALSE(MultiHsmBackend::open_fleet({})); }

TEST(HsmEvent, Names) {
  EXPECT_EQ(to_string(HsmEvent::Kind::MarkedFailed), "marked_failed");
  EXPECT_EQ(to_string(HsmEvent::Kind::Recovered), "recovered");
  EXPECT_EQ(to_string(HsmEvent::Kind::KeyNotFound), "key_not_found");
  EXPECT_EQ(to_string(HsmEvent::Kind::OpenDeferred), "open_deferred");
}

}  // namespace
}  // namespace xks::hsm
