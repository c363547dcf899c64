#include "xks/hsm/multi_hsm_backend.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <thread>

#include "softhsm_env.hpp"

namespace xks::hsm {
namespace {

// A KeyBackend whose encrypt answers whatever `next` says, counting calls.
class FakeHsm final : public KeyBackend {
 public:
  explicit FakeHsm(std::string id) : id_(std::move(id)) {}

  std::function<Result<GcmCiphertext>()> next = [] { return GcmCiphertext{}; };
  HealthStatus health = HealthStatus::Active;
  std::atomic<int> calls{0};

  Result<KeyAttributes> key_attributes(std::string_view) override {
    ++calls;
    return KeyAttributes{};
  }
  Result<GcmCiphertext> encrypt(std::string_view, ByteView, ByteView) override {
    ++calls;
    return next();
  }
  Result<SecureBytes> decrypt(std::string_view, ByteView, ByteView, ByteView, ByteView) override {
    ++calls;
    return make_error(ErrorName::InvalidCiphertextException, "bad tag");
  }
  std::vector<EkmHealth> check_health() override {
    EkmHealth h;
    h.id = id_;
    h.status = health;
    return {h};
  }

 private:
  std::string id_;
};

Error err(ErrorName n) { return make_error(n, std::string{to_string(n)}); }

struct Fleet {
  FakeHsm* a;
  FakeHsm* b;
  std::unique_ptr<MultiHsmBackend> multi;
};

Fleet make_fleet() {
  auto a = std::make_unique<FakeHsm>("a");
  auto b = std::make_unique<FakeHsm>("b");
  Fleet f{a.get(), b.get(), nullptr};
  std::vector<std::unique_ptr<KeyBackend>> members;
  members.push_back(std::move(a));
  members.push_back(std::move(b));
  f.multi = std::make_unique<MultiHsmBackend>(std::move(members));
  return f;
}

TEST(MultiHsm, IdleFleetPrefersTheFirstHsm) {
  auto f = make_fleet();
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.a->calls.load(), 3);
  EXPECT_EQ(f.b->calls.load(), 0);
}

TEST(MultiHsm, LeastOutstandingCallsWins) {
  auto f = make_fleet();
  std::mutex m;
  std::condition_variable cv;
  bool entered = false, release = false;
  f.a->next = [&]() -> Result<GcmCiphertext> {
    std::unique_lock lock(m);
    entered = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    return GcmCiphertext{};
  };
  std::thread busy([&] { EXPECT_TRUE(f.multi->encrypt("k", {}, {})); });
  {
    std::unique_lock lock(m);
    cv.wait(lock, [&] { return entered; });
  }
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));  // a has one call in flight: goes to b
  EXPECT_EQ(f.b->calls.load(), 1);
  {
    std::lock_guard lock(m);
    release = true;
  }
  cv.notify_all();
  busy.join();
  EXPECT_EQ(f.a->calls.load(), 1);
}

TEST(MultiHsm, HsmFailureIsRetriedOnAnotherAndMarked) {
  auto f = make_fleet();
  f.a->next = [] { return err(ErrorName::InternalException); };
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.a->calls.load(), 1);
  EXPECT_EQ(f.b->calls.load(), 1);
  EXPECT_TRUE(f.multi->is_marked_failed(0));
  EXPECT_FALSE(f.multi->is_marked_failed(1));
  // While marked, calls avoid it.
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.a->calls.load(), 1);
  EXPECT_EQ(f.b->calls.load(), 2);
  // A health check that finds it ACTIVE again clears the mark.
  f.a->next = [] { return GcmCiphertext{}; };
  auto h = f.multi->check_health();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].id, "a");
  EXPECT_EQ(h[1].id, "b");
  EXPECT_FALSE(f.multi->is_marked_failed(0));
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.a->calls.load(), 2);
}

TEST(MultiHsm, DependencyTimeoutFailsOverToo) {
  auto f = make_fleet();
  f.a->next = [] { return err(ErrorName::DependencyTimeoutException); };
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_TRUE(f.multi->is_marked_failed(0));
}

TEST(MultiHsm, BusyHsmIsRetriedElsewhereButNotMarked) {
  auto f = make_fleet();
  f.a->next = [] { return err(ErrorName::ThrottlingException); };
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.b->calls.load(), 1);
  EXPECT_FALSE(f.multi->is_marked_failed(0));
}

TEST(MultiHsm, DataErrorsAreNeverRetried) {
  for (ErrorName n : {ErrorName::InvalidCiphertextException, ErrorName::InvalidKeyUsageException,
                      ErrorName::KeyNotFoundException, ErrorName::ValidationException,
                      ErrorName::UnsupportedOperationException}) {
    auto f = make_fleet();
    f.a->next = [n] { return err(n); };
    auto r = f.multi->encrypt("k", {}, {});
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name, n);
    EXPECT_EQ(f.b->calls.load(), 0) << to_string(n);
    EXPECT_FALSE(f.multi->is_marked_failed(0));
  }
  auto f = make_fleet();
  auto d = f.multi->decrypt("k", {}, {}, {}, {});  // a bad tag
  ASSERT_FALSE(d);
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_EQ(f.b->calls.load(), 0);
}

TEST(MultiHsm, RetriedOnlyOnce) {
  auto f = make_fleet();
  f.a->next = [] { return err(ErrorName::InternalException); };
  f.b->next = [] { return make_error(ErrorName::InternalException, "b down"); };
  auto r = f.multi->encrypt("k", {}, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "b down");
  EXPECT_EQ(f.a->calls.load() + f.b->calls.load(), 2);
  EXPECT_TRUE(f.multi->is_marked_failed(0));
  EXPECT_TRUE(f.multi->is_marked_failed(1));
  // Everything marked: still try (the marks may be stale), and a success clears.
  f.a->next = [] { return GcmCiphertext{}; };
  f.b->next = [] { return GcmCiphertext{}; };
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_FALSE(f.multi->is_marked_failed(0) && f.multi->is_marked_failed(1));
}

TEST(MultiHsm, UnavailableHealthMarksTheHsm) {
  auto f = make_fleet();
  f.a->health = HealthStatus::Unavailable;
  auto h = f.multi->check_health();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_TRUE(f.multi->is_marked_failed(0));
  ASSERT_TRUE(f.multi->encrypt("k", {}, {}));
  EXPECT_EQ(f.a->calls.load(), 0);
}

TEST(MultiHsm, SingleHsmIsAPassThrough) {
  auto a = std::make_unique<FakeHsm>("a");
  FakeHsm* raw = a.get();
  raw->next = [] { return err(ErrorName::InternalException); };
  std::vector<std::unique_ptr<KeyBackend>> members;
  members.push_back(std::move(a));
  MultiHsmBackend multi(std::move(members));
  auto r = multi.encrypt("k", {}, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(raw->calls.load(), 1);
  EXPECT_FALSE(multi.is_marked_failed(0));
  EXPECT_EQ(multi.check_health().size(), 1u);
}

TEST(MultiHsm, EmptyFleetIsAStartupError) {
  EXPECT_THROW(MultiHsmBackend(std::vector<std::unique_ptr<KeyBackend>>{}), std::invalid_argument);
  auto r = MultiHsmBackend::open({});
  EXPECT_FALSE(r);
}

TEST(MultiHsmSoftHsm, TwoTokensWithTheSameKey) {
  auto& hsm = test::SoftHsm::get();
  auto multi = MultiHsmBackend::open({hsm.config(test::kMainToken, test::kMainPin, 2),
                                      hsm.config(test::kSecondToken, test::kSecondPin, 2)});
  ASSERT_TRUE(multi) << multi.error().message;
  EXPECT_EQ((*multi)->size(), 2u);
  const Bytes pt{'h', 'i'};
  auto ct = (*multi)->encrypt("shared", pt, Bytes{1});
  ASSERT_TRUE(ct) << ct.error().detail;
  auto back = (*multi)->decrypt("shared", ct->ciphertext, ct->iv, ct->tag, Bytes{1});
  ASSERT_TRUE(back);
  EXPECT_EQ(Bytes(back->begin(), back->end()), pt);

  // Each token decrypts what the fleet encrypted: the key is the same.
  for (auto [token, pin] : {std::pair{test::kMainToken, test::kMainPin},
                            std::pair{test::kSecondToken, test::kSecondPin}}) {
    auto one = Pkcs11Backend::open(hsm.config(token, pin, 1));
    ASSERT_TRUE(one);
    EXPECT_TRUE((*one)->decrypt("shared", ct->ciphertext, ct->iv, ct->tag, Bytes{1})) << token;
  }

  auto h = (*multi)->check_health();
  ASSERT_EQ(h.size(), 2u);
  EXPECT_EQ(h[0].id.rfind("xks-main ", 0), 0u);
  EXPECT_EQ(h[1].id.rfind("xks-second ", 0), 0u);
  EXPECT_EQ(h[0].status, HealthStatus::Active) << h[0].detail;
  EXPECT_EQ(h[1].status, HealthStatus::Active) << h[1].detail;
}

TEST(MultiHsmSoftHsm, OpenNamesTheHsmThatFailed) {
  auto& hsm = test::SoftHsm::get();
  auto bad = hsm.config("missing-token", "1", 1);
  bad.name = "hsm-b";
  auto multi = MultiHsmBackend::open({hsm.config(test::kMainToken, test::kMainPin, 1), bad});
  ASSERT_FALSE(multi);
  EXPECT_NE(multi.error().message.find("'hsm-b'"), std::string::npos) << multi.error().message;
}

}  // namespace
}  // namespace xks::hsm
