// Key versions and legacy layouts in XksService: Encrypt uses the current
// version and names it in ciphertextMetadata, Decrypt picks the version the
// metadata names, and ciphertexts of other proxies decrypt only when their
// layout is enabled. The legacy ciphertexts are made here with OpenSSL, not
// with the service.
#include <openssl/evp.h>

#include <gtest/gtest.h>

#include <string>

#include "unit/api/fake_backend.hpp"
#include "unit/api/test_util.hpp"
#include "xks/api/service.hpp"
#include "xks/crypto/aad.hpp"

namespace xks::api {
namespace {

using config::LegacyLayout;
using testing::decrypt_request;
using testing::encrypt_request;
using testing::FakeKeyBackend;

config::KeyEntry versioned_key(std::uint32_t current = 3) {
  config::KeyEntry k;
  k.id = "payments";
  k.versions = {{1, "payments-v1", true, true},
                {2, "payments-v2", false, false},
                {3, "payments-v3", true, false}};
  k.current = current;
  k.label = k.version(current)->label;
  k.versions_listed = true;
  return k;
}

// AES-256-GCM with OpenSSL directly: a ciphertext another proxy could have made.
EncryptResponse gcm(const SecureBytes& key, std::string_view pt, const Bytes& aad) {
  EncryptResponse out;
  out.iv = testing::random_bytes(12);
  out.ciphertext.resize(pt.size());
  out.tag.resize(16);
  EVP_CIPHER_CTX* ctx = EVP_CIPHER_CTX_new();
  int len = 0;
  EXPECT_EQ(EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nullptr, key.data(), out.iv.data()), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, nullptr, &len, aad.data(), static_cast<int>(aad.size())), 1);
  EXPECT_EQ(EVP_EncryptUpdate(ctx, out.ciphertext.data(), &len,
                              reinterpret_cast<const unsigned char*>(pt.data()),
                              static_cast<int>(pt.size())),
            1);
  EXPECT_EQ(EVP_EncryptFinal_ex(ctx, out.ciphertext.data() + len, &len), 1);
  EXPECT_EQ(EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, out.tag.data()), 1);
  EVP_CIPHER_CTX_free(ctx);
  return out;
}

Bytes sha256(const Bytes& data) {
  Bytes out(32);
  unsigned int n = 0;
  EXPECT_EQ(EVP_Digest(data.data(), data.size(), out.data(), &n, EVP_sha256(), nullptr), 1);
  return out;
}

class KeyVersionsTest : public ::testing::Test {
 protected:
  KeyVersionsTest() {
    for (const char* l : {"payments-v1", "payments-v2", "payments-v3"}) {
      backend_.add_key(l, FakeKeyBackend::aes256());
    }
    backend_.add_key("enc-only-v1", FakeKeyBackend::aes256(true, false));
  }
  FakeKeyBackend backend_;
  XksService service_{backend_};
};

TEST_F(KeyVersionsTest, EncryptUsesTheCurrentVersionAndNamesIt) {
  KeyVersionUse use;
  auto e = service_.encrypt(versioned_key(3), encrypt_request("hello", "ctx"), &use);
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(backend_.last_label, "payments-v3");
  EXPECT_EQ(e->ciphertext_metadata, crypto::ciphertext_metadata_for(3));
  EXPECT_EQ(use.version.load(), 3u);
  EXPECT_EQ(backend_.last_aad, crypto::frame_aad(as_bytes("ctx"), e->ciphertext_metadata));
  // Version 1 as current keeps the metadata every earlier ciphertext has.
  config::KeyEntry v1 = versioned_key(3);
  v1.versions[0].decrypt_only = false;
  v1.current = 1;
  v1.label = "payments-v1";
  auto e1 = service_.encrypt(v1, encrypt_request("hello"), &use);
  ASSERT_TRUE(e1.has_value());
  EXPECT_EQ(e1->ciphertext_metadata, crypto::current_ciphertext_metadata());
  EXPECT_EQ(use.version.load(), 1u);
}

TEST_F(KeyVersionsTest, DecryptPicksTheVersionTheMetadataNames) {
  config::KeyEntry k = versioned_key(1);
  k.versions[0].decrypt_only = false;
  auto old = service_.encrypt(k, encrypt_request("written under v1", "a"));
  ASSERT_TRUE(old.has_value());
  // Rotated: v3 current, v1 still decrypts (decrypt_only), even with CDIV on encrypt.
  const config::KeyEntry now = versioned_key(3);
  EncryptRequest with_cdiv = encrypt_request("written under v3", "a");
  with_cdiv.want_cdiv = true;
  auto fresh = service_.encrypt(now, with_cdiv);
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message;
  for (const auto* e : {&*old, &*fresh}) {
    KeyVersionUse use;
    auto d = service_.decrypt(now, decrypt_request(*e, "a"), &use);
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(use.version.load(), e == &*old ? 1u : 3u);
    EXPECT_EQ(backend_.last_label, e == &*old ? "payments-v1" : "payments-v3");
    EXPECT_FALSE(use.legacy_layout());
  }
  // Metadata moved to another version fails the tag (it is bound into the AAD).
  DecryptRequest moved = decrypt_request(*fresh, "a");
  moved.ciphertext_metadata = crypto::ciphertext_metadata_for(1);
  auto d = service_.decrypt(now, moved);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
}

TEST_F(KeyVersionsTest, RetiredAndUnknownVersionsAreRefusedWithoutTheHsm) {
  const config::KeyEntry k = versioned_key(3);
  auto e = service_.encrypt(k, encrypt_request("x"));
  ASSERT_TRUE(e.has_value());
  const int calls = backend_.decrypt_calls;
  DecryptRequest r = decrypt_request(*e);
  r.ciphertext_metadata = crypto::ciphertext_metadata_for(2);
  KeyVersionUse use;
  auto d = service_.decrypt(k, r, &use);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidStateException);
  EXPECT_NE(d.error().message.find("version 2 of external key 'payments' is retired"),
            std::string::npos)
      << d.error().message;
  EXPECT_NE(d.error().message.find("keys[].versions[].enabled: false"), std::string::npos);
  EXPECT_EQ(use.version.load(), 2u);

  r.ciphertext_metadata = crypto::ciphertext_metadata_for(9);
  d = service_.decrypt(k, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_NE(d.error().message.find("version 9 of external key 'payments'"), std::string::npos);
  EXPECT_NE(d.error().message.find("keys[].versions"), std::string::npos);
  EXPECT_EQ(backend_.decrypt_calls, calls);

  // A disabled key disables every version.
  config::KeyEntry off = k;
  off.enabled = false;
  d = service_.decrypt(off, decrypt_request(*e));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidStateException);
  auto enc = service_.encrypt(off, encrypt_request("x"));
  ASSERT_FALSE(enc.has_value());
  EXPECT_EQ(enc.error().name, ErrorName::InvalidStateException);
}

TEST_F(KeyVersionsTest, KeyMetadataReportsTheCurrentVersion) {
  backend_.add_key("enc-only-v3", FakeKeyBackend::aes256(true, false));
  config::KeyEntry k = versioned_key(3);
  k.versions[2].label = "enc-only-v3";
  k.label = "enc-only-v3";
  auto m = service_.get_key_metadata(k);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->key_usage, (std::vector<std::string>{"ENCRYPT"}));
}

class LegacyTest : public KeyVersionsTest {
 protected:
  config::KeyEntry key(std::vector<LegacyLayout> layouts) {
    config::KeyEntry k = versioned_key(3);
    k.legacy_layouts = std::move(layouts);
    return k;
  }
  const SecureBytes& v1() { return backend_.key("payments-v1").material; }

  // The AWS sample proxy's AAD, built here from its definition.
  static Bytes aws_sample_aad(const std::optional<Bytes>& aad, const Bytes& md) {
    const std::size_t n = aad ? aad->size() : 0;
    Bytes out = {static_cast<std::uint8_t>(n >> 8), static_cast<std::uint8_t>(n & 0xff)};
    if (aad) {
      const Bytes d = sha256(*aad);
      out.insert(out.end(), d.begin(), d.end());
    }
    out.push_back(static_cast<std::uint8_t>(md.size()));
    out.insert(out.end(), md.begin(), md.end());
    return out;
  }
};

TEST_F(LegacyTest, AwsSampleCiphertextsDecryptWithVersionOneWhenEnabled) {
  const Bytes md(testing::unb64("a2V5X3ZlcnNpb249MQ=="));  // "key_version=1"
  struct Case {
    std::optional<Bytes> aad;
    std::optional<Bytes> md;
  };
  for (const Case& c : {Case{Bytes{'c', 't', 'x'}, md}, Case{std::nullopt, md},
                        Case{Bytes{}, std::nullopt}, Case{std::nullopt, std::nullopt}}) {
    EncryptResponse e = gcm(v1(), "from the sample", aws_sample_aad(c.aad, c.md.value_or(Bytes{})));
    DecryptRequest r;
    r.ciphertext = e.ciphertext;
    r.iv = e.iv;
    r.tag = e.tag;
    r.aad = c.aad;
    r.ciphertext_metadata = c.md;
    const int calls = backend_.decrypt_calls;
    auto off = service_.decrypt(key({}), r);
    ASSERT_FALSE(off.has_value());
    EXPECT_EQ(off.error().name, ErrorName::InvalidCiphertextException);
    EXPECT_EQ(off.error().message,
              "ciphertextMetadata is missing or was not written by this proxy");
    EXPECT_EQ(backend_.decrypt_calls, calls);  // refused without the HSM

    KeyVersionUse use;
    auto on =
        service_.decrypt(key({LegacyLayout::SpecNoMetadata, LegacyLayout::AwsSample}), r, &use);
    ASSERT_TRUE(on.has_value()) << on.error().message;
    EXPECT_EQ(as_chars(on->plaintext), "from the sample");
    EXPECT_EQ(backend_.last_label, "payments-v1");
    EXPECT_EQ(use.version.load(), 1u);
    // With neither AAD nor metadata both layouts frame the same three bytes, so
    // the first one listed decrypts it.
    EXPECT_EQ(use.legacy_layout(),
              !c.aad && !c.md ? LegacyLayout::SpecNoMetadata : LegacyLayout::AwsSample);
  }
  // Empty and absent AAD differ in the sample's framing (a digest or none).
  EncryptResponse e = gcm(v1(), "x", aws_sample_aad(Bytes{}, {}));
  DecryptRequest r;
  r.ciphertext = e.ciphertext;
  r.iv = e.iv;
  r.tag = e.tag;
  auto d = service_.decrypt(key({LegacyLayout::AwsSample}), r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_NE(d.error().message.find("aws-sample"), std::string::npos) << d.error().message;
}

TEST_F(LegacyTest, SpecNoMetadataOnlyWithoutMetadata) {
  EncryptResponse e = gcm(v1(), "spec proxy", crypto::frame_aad(as_bytes("ctx"), {}));
  DecryptRequest r;
  r.ciphertext = e.ciphertext;
  r.iv = e.iv;
  r.tag = e.tag;
  r.aad = Bytes{'c', 't', 'x'};
  KeyVersionUse use;
  auto d = service_.decrypt(key({LegacyLayout::SpecNoMetadata}), r, &use);
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(use.legacy_layout(), LegacyLayout::SpecNoMetadata);
  r.ciphertext_metadata = Bytes{};  // empty counts as none
  EXPECT_TRUE(service_.decrypt(key({LegacyLayout::SpecNoMetadata}), r).has_value());
  // With foreign metadata it is not tried at all.
  r.ciphertext_metadata = Bytes{'z', 'z'};
  const int calls = backend_.decrypt_calls;
  auto m = service_.decrypt(key({LegacyLayout::SpecNoMetadata}), r);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_EQ(backend_.decrypt_calls, calls);
  // Not enabled: refused.
  r.ciphertext_metadata.reset();
  m = service_.decrypt(key({LegacyLayout::AwsSample}), r);
  ASSERT_FALSE(m.has_value());
  EXPECT_EQ(m.error().name, ErrorName::InvalidCiphertextException);
}

TEST_F(LegacyTest, VersionOneRetiredOrMissingRefusesLegacyCiphertexts) {
  EncryptResponse e = gcm(v1(), "x", crypto::frame_aad({}, {}));
  DecryptRequest r;
  r.ciphertext = e.ciphertext;
  r.iv = e.iv;
  r.tag = e.tag;
  config::KeyEntry k = key({LegacyLayout::SpecNoMetadata});
  k.versions[0].enabled = false;
  auto d = service_.decrypt(k, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidStateException);
  EXPECT_NE(d.error().message.find("version 1 of external key 'payments'"), std::string::npos);
  k.versions.erase(k.versions.begin());
  d = service_.decrypt(k, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_NE(d.error().message.find("version 1"), std::string::npos);
}

TEST_F(LegacyTest, KeyUsageStillComesFirst) {
  config::KeyEntry k;
  k.id = "eo";
  k.label = "enc-only-v1";
  k.versions = {{1, "enc-only-v1", true, false}};
  k.legacy_layouts = {LegacyLayout::AwsSample};
  DecryptRequest r;
  r.ciphertext = Bytes(4, 0);
  r.iv = Bytes(12, 0);
  r.tag = Bytes(16, 0);
  auto d = service_.decrypt(k, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidKeyUsageException) << d.error().message;
}

}  // namespace
}  // namespace xks::api
