// Pkcs11Backend against a real SoftHSM2 token (softhsm_env.hpp).
#include "xks/hsm/pkcs11_backend.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "softhsm_env.hpp"
#include "xks/hsm/ckr.hpp"

#include <openssl/evp.h>

namespace xks::hsm {
namespace {

using test::SoftHsm;

std::unique_ptr<Pkcs11Backend> open_or_fail(const config::HsmConfig& c,
                                            Pkcs11Backend::Options o = {}) {
  auto b = Pkcs11Backend::open(c, std::move(o));
  if (!b) {
    ADD_FAILURE() << b.error().message << " | " << b.error().detail;
    return nullptr;
  }
  return std::move(*b);
}

Bytes bytes(std::string_view s) { return Bytes(s.begin(), s.end()); }

class Pkcs11BackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    backend_ = open_or_fail(SoftHsm::get().config(test::kMainToken, test::kMainPin));
    ASSERT_NE(backend_, nullptr);
  }

  std::unique_ptr<Pkcs11Backend> backend_;
  const Bytes plaintext_ = bytes("attack at dawn, bring snacks");
  const Bytes aad_ = {0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0x00};
};

TEST_F(Pkcs11BackendTest, RoundTripWithAad) {
  auto ct = backend_->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(ct) << ct.error().detail;
  EXPECT_EQ(ct->ciphertext.size(), plaintext_.size());
  EXPECT_EQ(ct->iv.size(), kGcmIvBytes);
  EXPECT_EQ(ct->tag.size(), kGcmTagBytes);
  EXPECT_NE(ct->ciphertext, plaintext_);

  auto pt = backend_->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, aad_);
  ASSERT_TRUE(pt) << pt.error().detail;
  EXPECT_EQ(Bytes(pt->begin(), pt->end()), plaintext_);
}

TEST_F(Pkcs11BackendTest, FreshIvEveryCall) {
  auto a = backend_->encrypt("aes-1", plaintext_, aad_);
  auto b = backend_->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(a && b);
  EXPECT_NE(a->iv, b->iv);
  EXPECT_NE(a->ciphertext, b->ciphertext);
}

TEST_F(Pkcs11BackendTest, EmptyAadEmptyPlaintextAndSpecMaximumSizes) {
  for (const auto& [pt, aad] : {std::pair{Bytes{}, Bytes{}}, std::pair{plaintext_, Bytes{}},
                                std::pair{Bytes(4300, 0x41), Bytes(8192 + 3, 0x42)}}) {
    auto ct = backend_->encrypt("aes-1", pt, aad);
    ASSERT_TRUE(ct) << ct.error().detail;
    auto back = backend_->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, aad);
    ASSERT_TRUE(back) << back.error().detail;
    EXPECT_EQ(Bytes(back->begin(), back->end()), pt);
  }
}

TEST_F(Pkcs11BackendTest, TamperingIsInvalidCiphertext) {
  auto ct = backend_->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(ct);
  auto expect_invalid = [&](Bytes c, Bytes iv, Bytes tag, Bytes aad, const char* what) {
    auto r = backend_->decrypt("aes-1", c, iv, tag, aad);
    ASSERT_FALSE(r) << what;
    EXPECT_EQ(r.error().name, ErrorName::InvalidCiphertextException)
        << what << ": " << r.error().detail;
    // What SoftHSM2 answers is pinned down in the log detail.
    RecordProperty(what, r.error().detail);
  };
  Bytes bad = ct->tag;
  bad[0] ^= 1;
  expect_invalid(ct->ciphertext, ct->iv, bad, aad_, "tag");
  bad = ct->iv;
  bad[11] ^= 0x80;
  expect_invalid(ct->ciphertext, bad, ct->tag, aad_, "iv");
  bad = aad_;
  bad.push_back(0);
  expect_invalid(ct->ciphertext, ct->iv, ct->tag, bad, "aad");
  expect_invalid(ct->ciphertext, ct->iv, ct->tag, {}, "missing aad");
  bad = ct->ciphertext;
  bad[3] ^= 4;
  expect_invalid(bad, ct->iv, ct->tag, aad_, "ciphertext");
  bad.pop_back();
  expect_invalid(bad, ct->iv, ct->tag, aad_, "truncated ciphertext");
  expect_invalid(ct->ciphertext, Bytes(16, 1), ct->tag, aad_, "wrong 16-byte iv");
  expect_invalid(ct->ciphertext, ct->iv, Bytes(12, 1), aad_, "short tag");

  // The session survived the failures: the next call works.
  auto pt = backend_->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, aad_);
  EXPECT_TRUE(pt);
}

TEST_F(Pkcs11BackendTest, SoftHsmAnswersABadTagWithAKnownCode) {
  auto ct = backend_->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(ct);
  Bytes tag = ct->tag;
  tag[15] ^= 0xff;
  auto r = backend_->decrypt("aes-1", ct->ciphertext, ct->iv, tag, aad_);
  ASSERT_FALSE(r);
  // SoftHSM2 2.6 reports a failed GCM tag check as CKR_GENERAL_ERROR, which is
  // why hsm.vendor softhsm2 adds it to hsm.auth_failure_codes.
  EXPECT_NE(r.error().detail.find("C_Decrypt (AES-GCM)"), std::string::npos) << r.error().detail;
  EXPECT_NE(r.error().detail.find("CKR_GENERAL_ERROR"), std::string::npos) << r.error().detail;
  EXPECT_EQ(r.error().name, ErrorName::InvalidCiphertextException);
}

TEST_F(Pkcs11BackendTest, BadTagsAreNeverDeviceErrorsWithTheVendorsCodes) {
  auto ct = backend_->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(ct);
  const Bytes wrong_aad = bytes("another context");
  for (int i = 0; i < 20; ++i) {
    auto r = backend_->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, wrong_aad);
    ASSERT_FALSE(r);
    EXPECT_EQ(r.error().name, ErrorName::InvalidCiphertextException);
  }
  EXPECT_EQ(backend_->stats().device_errors, 0U);
  EXPECT_FALSE(backend_->is_down());
}

TEST_F(Pkcs11BackendTest, CodesOutsideTheVendorsListStayFaults) {
  // With only the standard codes, SoftHSM2's CKR_GENERAL_ERROR is a device
  // fault: the vendor's list, not a global rule, makes it a bad tag.
  config::HsmConfig c = SoftHsm::get().config(test::kMainToken, test::kMainPin);
  c.auth_failure_codes = {CKR_ENCRYPTED_DATA_INVALID, CKR_ENCRYPTED_DATA_LEN_RANGE};
  auto b = open_or_fail(c);
  ASSERT_NE(b, nullptr);
  auto ct = b->encrypt("aes-1", plaintext_, aad_);
  ASSERT_TRUE(ct);
  auto r = b->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, bytes("wrong"));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::InternalException);
  EXPECT_EQ(b->stats().device_errors, 1U);
}

TEST_F(Pkcs11BackendTest, SixteenByteIvDecrypts) {
  // A ciphertext made elsewhere (OpenSSL) with a 16-byte IV, as HSMs that
  // generate 16-byte IVs produce.
  const Bytes key_value(32, 0x5a);
  test::KeySpec spec;
  spec.label = "iv16-key";
  spec.id_hex = "1616";
  spec.value = key_value;
  SoftHsm::get().create_key(test::kMainToken, test::kMainPin, spec);
  const Bytes iv(16, 0x24);
  Bytes ciphertext(plaintext_.size());
  Bytes tag(kGcmTagBytes);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  ASSERT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, nullptr, nullptr), 1);
  ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, 16, nullptr), 1);
  ASSERT_EQ(EVP_EncryptInit_ex(ctx, nullptr, nullptr, key_value.data(), iv.data()), 1);
  ASSERT_EQ(EVP_EncryptUpdate(ctx, nullptr, &len, aad_.data(), static_cast<int>(aad_.size())), 1);
  ASSERT_EQ(EVP_EncryptUpdate(ctx, ciphertext.data(), &len, plaintext_.data(),
                              static_cast<int>(plaintext_.size())),
            1);
  ASSERT_EQ(EVP_EncryptFinal_ex(ctx, nullptr, &len), 1);
  ASSERT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, tag.data()), 1);
  EVP_CIPHER_CTX_free(ctx);

  auto pt = backend_->decrypt("iv16-key", ciphertext, iv, tag, aad_);
  SoftHsm::get().destroy_keys(test::kMainToken, test::kMainPin, "iv16-key");
  ASSERT_TRUE(pt) << pt.error().detail;
  EXPECT_EQ(Bytes(pt->begin(), pt->end()), plaintext_);
}

TEST_F(Pkcs11BackendTest, AnIvTheHsmDidNotGenerateIsRefusedPerCall) {
  // SoftHSM2 uses a given IV as given: in hsm_into_zero_buffer mode the buffer
  // comes back all zero, which would repeat the IV; with pIv NULL it has no IV.
  for (const config::IvMode mode :
       {config::IvMode::HsmIntoZeroBuffer, config::IvMode::HsmAppended}) {
    config::HsmConfig c = SoftHsm::get().config(test::kMainToken, test::kMainPin);
    c.iv = mode;
    auto b = open_or_fail(c);
    ASSERT_NE(b, nullptr);
    auto ct = b->encrypt("aes-1", plaintext_, aad_);
    ASSERT_FALSE(ct) << config::to_string(mode);
    EXPECT_EQ(ct.error().name, ErrorName::InternalException);
    if (mode == config::IvMode::HsmIntoZeroBuffer) {
      EXPECT_NE(ct.error().message.find("did not generate a GCM IV"), std::string::npos)
          << ct.error().message;
      EXPECT_NE(ct.error().message.find("hsm.iv"), std::string::npos) << ct.error().message;
    }
  }
}

TEST_F(Pkcs11BackendTest, MissingKeyIsKeyNotFoundNamingTheLabel) {
  auto r = backend_->encrypt("no-such-key", plaintext_, aad_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::KeyNotFoundException);
  EXPECT_NE(r.error().message.find("'no-such-key'"), std::string::npos);
  auto a = backend_->key_attributes("no-such-key");
  ASSERT_FALSE(a);
  EXPECT_EQ(a.error().name, ErrorName::KeyNotFoundException);
}

TEST_F(Pkcs11BackendTest, AmbiguousLabelIsInternal) {
  auto r = backend_->encrypt("dup", plaintext_, aad_);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::InternalException);
  EXPECT_NE(r.error().message.find("ambiguous"), std::string::npos);
}

TEST_F(Pkcs11BackendTest, KeyUsageIsEnforcedByTheHsm) {
  auto ct = backend_->encrypt("aes-enc-only", plaintext_, aad_);
  ASSERT_TRUE(ct) << ct.error().detail;
  auto pt = backend_->decrypt("aes-enc-only", ct->ciphertext, ct->iv, ct->tag, aad_);
  ASSERT_FALSE(pt);
  EXPECT_EQ(pt.error().name, ErrorName::InvalidKeyUsageException) << pt.error().detail;

  auto e = backend_->encrypt("aes-dec-only", plaintext_, aad_);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().name, ErrorName::InvalidKeyUsageException) << e.error().detail;
}

TEST_F(Pkcs11BackendTest, KeyAttributes) {
  auto a = backend_->key_attributes("aes-1");
  ASSERT_TRUE(a) << a.error().detail;
  EXPECT_TRUE(a->is_aes_256());
  EXPECT_TRUE(a->encrypt);
  EXPECT_TRUE(a->decrypt);
  EXPECT_FALSE(a->wrap);
  EXPECT_TRUE(a->sensitive);
  EXPECT_FALSE(a->extractable);
  EXPECT_EQ(a->id_hex, "01");
  EXPECT_EQ(a->key_usage(), (std::vector<std::string>{"ENCRYPT", "DECRYPT"}));

  auto w = backend_->key_attributes("aes-wrap");
  ASSERT_TRUE(w);
  EXPECT_EQ(w->key_usage(), (std::vector<std::string>{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"}));
  auto e = backend_->key_attributes("aes-enc-only");
  ASSERT_TRUE(e);
  EXPECT_EQ(e->key_usage(), (std::vector<std::string>{"ENCRYPT"}));
  EXPECT_EQ(e->id_hex, "02");
}

TEST_F(Pkcs11BackendTest, KeyHandlesAreCached) {
  ASSERT_TRUE(backend_->encrypt("aes-1", plaintext_, aad_));
  const auto lookups = backend_->stats().key_lookups;
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(backend_->encrypt("aes-1", plaintext_, aad_));
  EXPECT_EQ(backend_->stats().key_lookups, lookups);
}

TEST_F(Pkcs11BackendTest, DeletedKeyIsFoundAgainOrReportedMissing) {
  auto& hsm = SoftHsm::get();
  hsm.create_key(test::kMainToken, test::kMainPin, {"temp", "aa", true, true, false, false, {}});
  ASSERT_TRUE(backend_->encrypt("temp", plaintext_, aad_));  // handle cached

  // Recreated under the same label: the stale handle is dropped, the label found again.
  hsm.destroy_keys(test::kMainToken, test::kMainPin, "temp");
  hsm.create_key(test::kMainToken, test::kMainPin, {"temp", "ab", true, true, false, false, {}});
  auto again = backend_->encrypt("temp", plaintext_, aad_);
  ASSERT_TRUE(again) << again.error().detail;
  EXPECT_EQ(backend_->stats().stale_handles, 1u);

  // Gone for good: KeyNotFoundException naming the label.
  hsm.destroy_keys(test::kMainToken, test::kMainPin, "temp");
  auto gone = backend_->encrypt("temp", plaintext_, aad_);
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().name, ErrorName::KeyNotFoundException) << gone.error().detail;
  EXPECT_NE(gone.error().message.find("'temp'"), std::string::npos);
  EXPECT_EQ(backend_->stats().stale_handles, 2u);
}

TEST_F(Pkcs11BackendTest, BrokenSessionsAreReplacedAndTheCallRetried) {
  ASSERT_TRUE(backend_->encrypt("aes-1", plaintext_, aad_));
  const auto before = backend_->stats();
  // Closes every session of the process on this token, which also logs it out.
  SoftHsm::get().close_all_sessions(test::kMainToken);
  for (int i = 0; i < 6; ++i) {
    auto r = backend_->encrypt("aes-1", plaintext_, aad_);
    ASSERT_TRUE(r) << r.error().detail;
  }
  const auto after = backend_->stats();
  EXPECT_GE(after.sessions_discarded, before.sessions_discarded + 1);
  EXPECT_EQ(after.login_attempts, before.login_attempts + 1);  // one re-login, shared
  EXPECT_EQ(after.sessions_in_use, 0u);
}

TEST_F(Pkcs11BackendTest, HealthIsActiveWithTokenIdentity) {
  auto h = backend_->check_health();
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Active) << h[0].detail;
  EXPECT_EQ(h[0].id.rfind("xks-main ", 0), 0u) << h[0].id;
  EXPECT_GT(h[0].id.size(), std::string{"xks-main "}.size());
  EXPECT_EQ(h[0].vendor, "SoftHSM project");
  EXPECT_EQ(h[0].model.rfind("SoftHSM project SoftHSM v2 firmware ", 0), 0u) << h[0].model;
  EXPECT_GT(h[0].latency.count(), 0);
}

TEST(Pkcs11BackendHealth, MissingHealthKeyIsUnavailableNamingIt) {
  auto c = SoftHsm::get().config(test::kMainToken, test::kMainPin, 1);
  c.health_key = "no-health-key";
  auto b = open_or_fail(c);
  ASSERT_NE(b, nullptr);
  auto h = b->check_health();
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Unavailable);
  EXPECT_NE(h[0].detail.find("no-health-key"), std::string::npos) << h[0].detail;
  EXPECT_NE(h[0].detail.find("KeyNotFoundException"), std::string::npos) << h[0].detail;
}

std::size_t occurrences(const std::string& text, const std::string& part) {
  std::size_t n = 0;
  for (auto at = text.find(part); at != std::string::npos; at = text.find(part, at + part.size()))
    ++n;
  return n;
}

TEST(Pkcs11BackendHealth, FailingCallNamesItsContextOnce) {
  // A health key without CKA_ENCRYPT: the probe's C_EncryptInit is refused.
  auto c = SoftHsm::get().config(test::kMainToken, test::kMainPin, 1);
  c.health_key = "aes-dec-only";
  auto b = open_or_fail(c);
  ASSERT_NE(b, nullptr);
  auto h = b->check_health();
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Unavailable);
  const std::string context = "C_EncryptInit (AES-GCM) with key 'aes-dec-only'";
  EXPECT_EQ(occurrences(h[0].detail, context), 1u) << h[0].detail;
  EXPECT_EQ(occurrences(h[0].detail, "CKR_KEY_FUNCTION_NOT_PERMITTED"), 1u) << h[0].detail;
  EXPECT_EQ(occurrences(h[0].detail, "aes-dec-only"),
            2u)  // "health key 'aes-dec-only'" and the call
      << h[0].detail;
}

TEST(Pkcs11BackendOpen, TokenBySlotId) {
  auto c = SoftHsm::get().config(test::kMainToken, test::kMainPin, 1);
  c.token_label.reset();
  c.slot_id = SoftHsm::get().slot(test::kMainToken);
  auto b = open_or_fail(c);
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->slot_id(), *c.slot_id);
  auto ct = b->encrypt("aes-1", Bytes{1, 2, 3}, {});
  ASSERT_TRUE(ct);
  EXPECT_TRUE(b->decrypt("aes-1", ct->ciphertext, ct->iv, ct->tag, {}));
}

TEST(Pkcs11BackendOpen, ClearErrors) {
  auto& hsm = SoftHsm::get();
  auto c = hsm.config("no-such-token", "1234", 1);
  auto r = Pkcs11Backend::open(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("not found"), std::string::npos) << r.error().message;
  EXPECT_NE(r.error().message.find("'xks-main'"), std::string::npos) << r.error().message;

  c = hsm.config(test::kMainToken, test::kMainPin, 1);
  c.token_label.reset();
  c.slot_id = 0xdeadbeef;
  r = Pkcs11Backend::open(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("slot 3735928559 not found"), std::string::npos)
      << r.error().message;

  c = hsm.config(test::kMainToken, test::kMainPin, 1);
  c.slot_id = 1;  // both set
  r = Pkcs11Backend::open(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("exactly one"), std::string::npos);

  c = hsm.config(test::kMainToken, test::kMainPin, 1);
  c.module = "/nonexistent/libpkcs11.so";
  r = Pkcs11Backend::open(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("no such file"), std::string::npos) << r.error().message;

  c.module = XKS_BINARY_DIR "/libxks_hsm.a";  // a file, but not a shared library
  r = Pkcs11Backend::open(c);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("dlopen failed"), std::string::npos) << r.error().message;
}

TEST(Pkcs11BackendOpen, SharedLibraryWithoutPkcs11IsRejected) {
  // libp11-kit is a shared library on every system with this header, but the
  // plain one exports no C_GetFunctionList... check with one that surely has none.
  auto c = SoftHsm::get().config(test::kMainToken, test::kMainPin, 1);
  for (const char* lib : {"/usr/lib/x86_64-linux-gnu/libz.so.1", "/lib/x86_64-linux-gnu/libz.so.1",
                          "/usr/lib/aarch64-linux-gnu/libz.so.1"}) {
    if (!std::filesystem::exists(lib)) continue;
    c.module = lib;
    auto r = Pkcs11Backend::open(c);
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message.find("not a PKCS#11 module"), std::string::npos)
        << r.error().message;
    return;
  }
  GTEST_SKIP() << "no libz.so.1 found";
}

TEST(Pkcs11BackendLogin, WrongPinAtStartupIsOneAttemptAndAClearError) {
  auto c = SoftHsm::get().config(test::kBadPinToken, "0000", 4);
  std::vector<CK_RV> logins;
  Pkcs11Backend::Options o;
  o.on_login = [&](std::string_view, CK_RV rv) { logins.push_back(rv); };
  auto r = Pkcs11Backend::open(c, o);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::InternalException);
  EXPECT_EQ(r.error().message, "HSM login refused (CKR_PIN_INCORRECT); fix hsm.pin and reload");
  EXPECT_EQ(r.error().message.find("0000"), std::string::npos);
  EXPECT_EQ(r.error().detail.find("0000"), std::string::npos);
  ASSERT_EQ(logins.size(), 1u);  // never retried, although 4 sessions were wanted
  EXPECT_EQ(logins[0], CKR_PIN_INCORRECT);

  // The right PIN still works: the token was not locked by retries.
  EXPECT_NE(open_or_fail(SoftHsm::get().config(test::kBadPinToken, test::kBadPinPin, 1)), nullptr);
}

TEST(Pkcs11BackendLogin, PinRefusedLaterLatchesUntilANewBackend) {
  auto& hsm = SoftHsm::get();
  std::atomic<int> logins{0};
  Pkcs11Backend::Options o;
  o.on_login = [&](std::string_view, CK_RV) { ++logins; };
  auto b = open_or_fail(hsm.config(test::kPinChangeToken, test::kPinChangePin, 2), o);
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(b->encrypt("aes-1", Bytes{1}, {}));
  EXPECT_EQ(logins.load(), 1);

  // The PIN changes on the HSM and the token logs out: our next login is refused.
  hsm.change_pin_and_logout(test::kPinChangeToken, test::kPinChangePin, "2222");
  auto r = b->encrypt("aes-1", Bytes{1}, {});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().message, "HSM login refused (CKR_PIN_INCORRECT); fix hsm.pin and reload");
  EXPECT_EQ(logins.load(), 2);
  ASSERT_TRUE(b->login_refused().has_value());

  // Latched: every later call fails fast, no further login attempt.
  for (int i = 0; i < 5; ++i) {
    auto again = b->key_attributes("aes-1");
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().name, ErrorName::InternalException);
  }
  auto h = b->check_health();
  ASSERT_EQ(h.size(), 1u);
  EXPECT_EQ(h[0].status, HealthStatus::Unavailable);
  EXPECT_NE(h[0].detail.find("CKR_PIN_INCORRECT"), std::string::npos);
  EXPECT_EQ(logins.load(), 2);
  EXPECT_EQ(b->stats().login_attempts, 2u);

  // A new backend with the fixed PIN works.
  b.reset();
  auto fixed = open_or_fail(hsm.config(test::kPinChangeToken, "2222", 1));
  ASSERT_NE(fixed, nullptr);
  EXPECT_TRUE(fixed->encrypt("aes-1", Bytes{1}, {}));
  // Put the PIN back, so that the test can run again (--gtest_repeat).
  hsm.change_pin_and_logout(test::kPinChangeToken, "2222", test::kPinChangePin);
}

TEST(Pkcs11BackendConcurrency, EightThreadsShareFourSessions) {
  Pkcs11Backend::Options o;
  o.lease_timeout = std::chrono::seconds(5);
  auto b = open_or_fail(SoftHsm::get().config(test::kMainToken, test::kMainPin, 4), o);
  ASSERT_NE(b, nullptr);
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        Bytes pt(static_cast<std::size_t>(t * 10 + i), static_cast<std::uint8_t>(t));
        Bytes aad{static_cast<std::uint8_t>(i)};
        auto ct = b->encrypt(i % 2 ? "aes-1" : "shared", pt, aad);
        if (!ct) {
          ++failures;
          continue;
        }
        auto back = b->decrypt(i % 2 ? "aes-1" : "shared", ct->ciphertext, ct->iv, ct->tag, aad);
        if (!back || Bytes(back->begin(), back->end()) != pt) ++failures;
        if (i % 10 == 0 && !b->key_attributes("aes-1")) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  const auto s = b->stats();
  EXPECT_EQ(s.sessions_in_use, 0u);
  EXPECT_EQ(s.sessions_open, 4u);
  EXPECT_LE(s.login_attempts, 1u);  // one login serves every session of the token
}

}  // namespace
}  // namespace xks::hsm
