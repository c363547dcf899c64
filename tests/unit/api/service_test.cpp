#include "xks/api/service.hpp"

#include <openssl/evp.h>

#include <gtest/gtest.h>

#include <string>

#include "unit/api/fake_backend.hpp"
#include "unit/api/test_util.hpp"
#include "xks/api/version.hpp"
#include "xks/crypto/aad.hpp"

namespace xks::api {
namespace {

using nlohmann::json;
using testing::decrypt_request;
using testing::encrypt_request;
using testing::FakeKeyBackend;

config::KeyEntry entry(std::string id, std::string label = {}, bool enabled = true) {
  config::KeyEntry e;
  e.id = std::move(id);
  e.label = label.empty() ? e.id : std::move(label);
  e.enabled = enabled;
  return e;
}

class ServiceTest : public ::testing::Test {
 protected:
  ServiceTest() {
    backend_.add_key("hsm-k1", FakeKeyBackend::aes256());
    backend_.add_key("enc-only", FakeKeyBackend::aes256(true, false));
    backend_.add_key("dec-only", FakeKeyBackend::aes256(false, true));
    hsm::KeyAttributes aes128 = FakeKeyBackend::aes256();
    aes128.key_bytes = 16;
    backend_.add_key("aes128", aes128);
  }

  FakeKeyBackend backend_;
  XksService service_{backend_};
  const config::KeyEntry k1_ = entry("k1", "hsm-k1");
};

TEST_F(ServiceTest, RoundTripWithAndWithoutAad) {
  for (const auto& aad : {std::optional<std::string>{}, std::optional<std::string>{""},
                          std::optional<std::string>{"project=nile,department=marketing"}}) {
    for (std::string_view pt : {std::string_view(""), std::string_view("Hello World!")}) {
      auto e = service_.encrypt(k1_, encrypt_request(pt, aad));
      ASSERT_TRUE(e.has_value()) << e.error().message;
      EXPECT_EQ(e->ciphertext.size(), pt.size());
      EXPECT_EQ(e->iv.size(), 12u);
      EXPECT_EQ(e->tag.size(), 16u);
      EXPECT_EQ(e->ciphertext_metadata, crypto::current_ciphertext_metadata());
      EXPECT_FALSE(e->cdiv.has_value());
      auto d = service_.decrypt(k1_, decrypt_request(*e, aad));
      ASSERT_TRUE(d.has_value()) << d.error().message;
      EXPECT_EQ(as_chars(d->plaintext), pt);
    }
  }
  EXPECT_EQ(backend_.last_label, "hsm-k1");  // the HSM label, not the URI key id
}

TEST_F(ServiceTest, LargestSizesRoundTrip) {
  for (std::size_t n : {std::size_t{4300}, kMaxPlaintextBytes}) {
    const std::string pt(n, 'p');
    const std::string aad(8192, 'a');
    auto e = service_.encrypt(k1_, encrypt_request(pt, aad, true));
    ASSERT_TRUE(e.has_value()) << e.error().message;
    auto d = service_.decrypt(k1_, decrypt_request(*e, aad));
    ASSERT_TRUE(d.has_value()) << d.error().message;
    EXPECT_EQ(as_chars(d->plaintext), pt);
  }
}

TEST_F(ServiceTest, AadIsFramedWithMetadata) {
  auto e = service_.encrypt(k1_, encrypt_request("x", std::string("ab")));
  ASSERT_TRUE(e.has_value());
  const Bytes md = crypto::current_ciphertext_metadata();
  Bytes expected = {0x00, 0x02, 'a', 'b', static_cast<std::uint8_t>(md.size())};
  expected.insert(expected.end(), md.begin(), md.end());
  EXPECT_EQ(backend_.last_aad, expected);
}

TEST_F(ServiceTest, EncryptCostsOneHsmCallAndNoAttributeLookup) {
  ASSERT_TRUE(service_.encrypt(k1_, encrypt_request("abc")).has_value());
  EXPECT_EQ(backend_.encrypt_calls, 1);
  EXPECT_EQ(backend_.decrypt_calls, 0);
  EXPECT_EQ(backend_.attribute_calls, 0);
}

TEST_F(ServiceTest, WrongAadFails) {
  auto e = service_.encrypt(k1_, encrypt_request("secret", std::string("aad-1")));
  ASSERT_TRUE(e.has_value());
  for (const auto& aad : {std::optional<std::string>{}, std::optional<std::string>{"aad-2"}}) {
    auto d = service_.decrypt(k1_, decrypt_request(*e, aad));
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  }
}

TEST_F(ServiceTest, MetadataTamperingFails) {
  auto e = service_.encrypt(k1_, encrypt_request("secret"));
  ASSERT_TRUE(e.has_value());
  const int calls = backend_.decrypt_calls;

  // Not ours: absent, a foreign value, a modified magic.
  for (const std::optional<Bytes>& md :
       {std::optional<Bytes>{}, std::optional<Bytes>{testing::unb64("a2V5X3ZlcnNpb249MQ==")},
        std::optional<Bytes>{Bytes{'x', 'k', 'S', 1}}, std::optional<Bytes>{Bytes{}}}) {
    DecryptRequest r = decrypt_request(*e);
    r.ciphertext_metadata = md;
    auto d = service_.decrypt(k1_, r);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
    EXPECT_EQ(d.error().message, "ciphertextMetadata is missing or was not written by this proxy");
  }
  // A version this build does not know.
  DecryptRequest r = decrypt_request(*e);
  r.ciphertext_metadata->back() = 2;
  auto d = service_.decrypt(k1_, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_NE(d.error().message.find("version 2"), std::string::npos) << d.error().message;
  EXPECT_EQ(backend_.decrypt_calls, calls);  // none of these reached the HSM
}

TEST_F(ServiceTest, MetadataPassedAsAadFails) {
  // The spec's warning: encrypt without AAD, then decrypt with the metadata given
  // as AAD. Both with and without the metadata field it must not decrypt.
  auto e = service_.encrypt(k1_, encrypt_request("secret"));
  ASSERT_TRUE(e.has_value());
  const std::string md_as_aad(e->ciphertext_metadata.begin(), e->ciphertext_metadata.end());
  DecryptRequest r = decrypt_request(*e, md_as_aad);
  auto d = service_.decrypt(k1_, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  r.ciphertext_metadata.reset();
  d = service_.decrypt(k1_, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
}

TEST_F(ServiceTest, TamperedCiphertextIvTagFail) {
  auto e = service_.encrypt(k1_, encrypt_request("secret data"));
  ASSERT_TRUE(e.has_value());
  for (int field = 0; field < 3; ++field) {
    DecryptRequest r = decrypt_request(*e);
    Bytes& b = field == 0 ? r.ciphertext : field == 1 ? r.iv : r.tag;
    b[0] ^= 0x80;
    auto d = service_.decrypt(k1_, r);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  }
}

TEST_F(ServiceTest, SixteenByteIvReachesTheHsm) {
  // The spec allows 16-byte IVs (some HSMs generate them): the HSM judges the tag.
  auto e = service_.encrypt(k1_, encrypt_request("x"));
  ASSERT_TRUE(e.has_value());
  DecryptRequest r = decrypt_request(*e);
  r.iv.resize(16);
  const int calls = backend_.decrypt_calls;
  auto d = service_.decrypt(k1_, r);
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidCiphertextException);
  EXPECT_EQ(backend_.decrypt_calls, calls + 1);
}

std::string independent_cdiv(const Bytes& aad, const EncryptResponse& e) {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  unsigned char digest[32];
  unsigned int len = 0;
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  for (const Bytes* b : {&aad, &e.ciphertext_metadata, &e.iv, &e.ciphertext, &e.tag}) {
    EVP_DigestUpdate(ctx, b->data(), b->size());
  }
  EVP_DigestFinal_ex(ctx, digest, &len);
  EVP_MD_CTX_free(ctx);
  return testing::b64(ByteView(digest, len));
}

TEST_F(ServiceTest, CdivMatchesIndependentComputation) {
  for (const auto& aad : {std::optional<std::string>{},
                          std::optional<std::string>{"project=nile,department=marketing"}}) {
    auto e = service_.encrypt(k1_, encrypt_request("Hello World!", aad, true));
    ASSERT_TRUE(e.has_value()) << e.error().message;
    ASSERT_TRUE(e->cdiv.has_value());
    const Bytes aad_bytes = aad ? Bytes(aad->begin(), aad->end()) : Bytes{};
    EXPECT_EQ(*e->cdiv, independent_cdiv(aad_bytes, *e));
  }
  EXPECT_EQ(backend_.encrypt_calls, 2);
  EXPECT_EQ(backend_.decrypt_calls, 2);  // each CDIV proved by a round trip
}

TEST_F(ServiceTest, CdivIsComputedBeforeTheCheckDecrypt) {
  // The ciphertext is corrupted in memory while the check decrypt runs: the CDIV
  // must cover the bytes the HSM produced, so that KMS sees the mismatch.
  backend_.corrupt_input_after_decrypt = true;
  const std::string aad = "project=nile";
  auto e = service_.encrypt(k1_, encrypt_request("Hello World!", aad, true));
  ASSERT_TRUE(e.has_value()) << e.error().message;
  ASSERT_TRUE(e->cdiv.has_value());
  ASSERT_EQ(backend_.decrypt_input_before_corruption.size(), e->ciphertext.size());
  EncryptResponse as_produced = *e;
  as_produced.ciphertext = backend_.decrypt_input_before_corruption;
  const Bytes aad_bytes(aad.begin(), aad.end());
  EXPECT_EQ(*e->cdiv, independent_cdiv(aad_bytes, as_produced));
  EXPECT_NE(*e->cdiv, independent_cdiv(aad_bytes, *e));  // the flip is detectable
}

TEST_F(ServiceTest, DecryptChecksKeyUsageBeforeTheCiphertext) {
  auto good = service_.encrypt(k1_, encrypt_request("x"));
  ASSERT_TRUE(good.has_value());
  const auto eo = entry("eo", "enc-only");
  DecryptRequest no_metadata = decrypt_request(*good);
  no_metadata.ciphertext_metadata.reset();
  DecryptRequest bad_metadata = decrypt_request(*good);
  bad_metadata.ciphertext_metadata = Bytes{'z', 'z'};
  DecryptRequest bad_iv = decrypt_request(*good);
  bad_iv.iv.resize(8);
  for (const DecryptRequest* r : {&no_metadata, &bad_metadata, &bad_iv}) {
    auto d = service_.decrypt(eo, *r);
    ASSERT_FALSE(d.has_value());
    EXPECT_EQ(d.error().name, ErrorName::InvalidKeyUsageException) << d.error().message;
    EXPECT_NE(d.error().message.find("does not allow DECRYPT"), std::string::npos);
    // A key that allows DECRYPT gets the ciphertext's error.
    auto k = service_.decrypt(k1_, *r);
    ASSERT_FALSE(k.has_value());
    EXPECT_EQ(k.error().name, ErrorName::InvalidCiphertextException) << k.error().message;
  }
  // A key missing from the HSM is KeyNotFound before any ciphertext complaint.
  auto gone = service_.decrypt(entry("gone", "no-such-label"), no_metadata);
  ASSERT_FALSE(gone.has_value());
  EXPECT_EQ(gone.error().name, ErrorName::KeyNotFoundException);
  // A disabled key is InvalidState before usage (no HSM call at all).
  const int calls = backend_.attribute_calls;
  auto off = service_.decrypt(entry("eo", "enc-only", false), no_metadata);
  ASSERT_FALSE(off.has_value());
  EXPECT_EQ(off.error().name, ErrorName::InvalidStateException);
  EXPECT_EQ(backend_.attribute_calls, calls);
}

TEST_F(ServiceTest, CdivOnEncryptOnlyKeyIsInvalidKeyUsage) {
  const auto key = entry("eo", "enc-only");
  ASSERT_TRUE(service_.encrypt(key, encrypt_request("x")).has_value());
  auto e = service_.encrypt(key, encrypt_request("x", {}, true));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().name, ErrorName::InvalidKeyUsageException);
  EXPECT_NE(e.error().message.find("DECRYPT"), std::string::npos) << e.error().message;
}

TEST_F(ServiceTest, KeyUsageComesFromTheHsm) {
  auto e = service_.encrypt(entry("do", "dec-only"), encrypt_request("x"));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().name, ErrorName::InvalidKeyUsageException);

  auto good = service_.encrypt(k1_, encrypt_request("x"));
  ASSERT_TRUE(good.has_value());
  // Decrypting with an encrypt-only key (the tag will not matter: usage is first).
  auto d = service_.decrypt(entry("eo", "enc-only"), decrypt_request(*good));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidKeyUsageException);
}

TEST_F(ServiceTest, CdivRoundTripFailureIsInternalAndCarriesNoCdiv) {
  backend_.corrupt_encrypt = true;
  auto e = service_.encrypt(k1_, encrypt_request("Hello", {}, true));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().name, ErrorName::InternalException);
  backend_.corrupt_encrypt = false;
  backend_.corrupt_decrypt = true;
  e = service_.encrypt(k1_, encrypt_request("Hello", {}, true));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().name, ErrorName::InternalException);
  EXPECT_NE(e.error().message.find("round-trip"), std::string::npos);
}

TEST_F(ServiceTest, DisabledKey) {
  const auto off = entry("k1", "hsm-k1", false);
  auto e = service_.encrypt(off, encrypt_request("x"));
  ASSERT_FALSE(e.has_value());
  EXPECT_EQ(e.error().name, ErrorName::InvalidStateException);
  EXPECT_NE(e.error().message.find("'k1' is disabled"), std::string::npos);

  auto good = service_.encrypt(k1_, encrypt_request("x"));
  ASSERT_TRUE(good.has_value());
  const int enc = backend_.encrypt_calls;
  const int dec = backend_.decrypt_calls;
  auto d = service_.decrypt(off, decrypt_request(*good));
  ASSERT_FALSE(d.has_value());
  EXPECT_EQ(d.error().name, ErrorName::InvalidStateException);
  EXPECT_EQ(backend_.encrypt_calls, enc);
  EXPECT_EQ(backend_.decrypt_calls, dec);

  auto m = service_.get_key_metadata(off);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_FALSE(m->enabled);
  EXPECT_EQ(json::parse(serialize(*m))["keyStatus"], "DISABLED");
}

TEST_F(ServiceTest, KeyMetadata) {
  auto m = service_.get_key_metadata(k1_);
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->key_spec, "AES_256");
  EXPECT_EQ(m->key_usage, (std::vector<std::string>{"ENCRYPT", "DECRYPT"}));
  EXPECT_TRUE(m->enabled);
  EXPECT_EQ(backend_.last_label, "");  // only key_attributes was called
  EXPECT_EQ(backend_.attribute_calls, 1);

  auto eo = service_.get_key_metadata(entry("eo", "enc-only"));
  ASSERT_TRUE(eo.has_value());
  EXPECT_EQ(eo->key_usage, (std::vector<std::string>{"ENCRYPT"}));
}

TEST_F(ServiceTest, KeyMetadataOfNonAes256KeySaysWhatItIs) {
  // Reported as what it is (KMS refuses CreateKey for a keySpec other than
  // AES_256 and names that reason), not as a key that is "not enabled".
  auto m = service_.get_key_metadata(entry("small", "aes128"));
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->key_spec, "AES_128");
  EXPECT_EQ(json::parse(serialize(*m))["keySpec"], "AES_128");
  EXPECT_EQ(json::parse(serialize(*m))["keyStatus"], "ENABLED");

  hsm::KeyAttributes secret = FakeKeyBackend::aes256();
  secret.is_aes = false;
  backend_.add_key("generic", secret);
  auto g = service_.get_key_metadata(entry("gen", "generic"));
  ASSERT_TRUE(g.has_value()) << g.error().message;
  EXPECT_EQ(g->key_spec, "NOT_AES");
}

TEST_F(ServiceTest, MissingHsmKeyIsKeyNotFound) {
  const auto ghost = entry("ghost");
  for (auto name : {service_.get_key_metadata(ghost).error().name,
                    service_.encrypt(ghost, encrypt_request("x")).error().name}) {
    EXPECT_EQ(name, ErrorName::KeyNotFoundException);
  }
}

TEST_F(ServiceTest, LabelDefaultsToId) {
  config::KeyEntry e;
  e.id = "hsm-k1";
  ASSERT_TRUE(service_.encrypt(e, encrypt_request("x")).has_value());
  EXPECT_EQ(backend_.last_label, "hsm-k1");
}

TEST_F(ServiceTest, JsonEndToEnd) {
  // Spec example request -> response JSON -> decrypt request JSON -> plaintext.
  const std::string enc_body = json{
      {"requestMetadata", testing::request_metadata("Encrypt")},
      {"additionalAuthenticatedData", "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"},
      {"plaintext", "SGVsbG8gV29ybGQh"},
      {"encryptionAlgorithm", "AES_GCM"},
      {"ciphertextDataIntegrityValueAlgorithm",
       "SHA_256"}}.dump();
  auto req = parse_encrypt_request(enc_body);
  ASSERT_TRUE(req.has_value()) << req.error().message;
  auto resp = service_.encrypt(k1_, *req);
  ASSERT_TRUE(resp.has_value()) << resp.error().message;
  const json out = json::parse(serialize(*resp));
  EXPECT_EQ(out.size(), 5u);
  EXPECT_EQ(testing::unb64(out["ciphertext"].get<std::string>()).size(), 12u);

  json dec = {{"requestMetadata", testing::request_metadata("Decrypt")},
              {"additionalAuthenticatedData", "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"},
              {"encryptionAlgorithm", "AES_GCM"}};
  for (const char* f :
       {"ciphertext", "ciphertextMetadata", "initializationVector", "authenticationTag"}) {
    dec[f] = out[f];
  }
  auto dreq = parse_decrypt_request(dec.dump());
  ASSERT_TRUE(dreq.has_value()) << dreq.error().message;
  auto dresp = service_.decrypt(k1_, *dreq);
  ASSERT_TRUE(dresp.has_value()) << dresp.error().message;
  EXPECT_EQ(serialize(*dresp), R"({"plaintext":"SGVsbG8gV29ybGQh"})");
}

TEST(Health, ResponseShape) {
  std::vector<hsm::EkmHealth> ekms(2);
  ekms[0] = {"token-a/123", "SoftHSM v2 2.6", "SoftHSM project", hsm::HealthStatus::Active, "", {}};
  ekms[1] = {"token-b/456",
             "SoftHSM v2 2.6",
             "Other vendor",
             hsm::HealthStatus::Unavailable,
             "C_Login: CKR_PIN_INCORRECT",
             {}};
  const HealthResponse r = make_health_response(ekms, 3);
  EXPECT_EQ(r.fleet_size, 3u);
  EXPECT_EQ(r.proxy_vendor, "xks-proxy project");
  EXPECT_EQ(r.proxy_model, "xks-proxy " + std::string(kVersion));
  EXPECT_EQ(r.ekm_vendor, "SoftHSM project");
  const json j = json::parse(serialize(r));
  EXPECT_EQ(j["xksProxyFleetSize"], 3);
  EXPECT_EQ(j["xksProxyModel"], "xks-proxy 0.1.0");
  ASSERT_EQ(j["ekmFleetDetails"].size(), 2u);
  EXPECT_EQ(
      j["ekmFleetDetails"][0],
      json::parse(R"({"id":"token-a/123","model":"SoftHSM v2 2.6","healthStatus":"ACTIVE"})"));
  EXPECT_EQ(j["ekmFleetDetails"][1]["healthStatus"], "UNAVAILABLE");
  EXPECT_EQ(serialize(r).find("CKR_PIN"), std::string::npos);  // detail stays in logs
}

TEST(Health, Limits) {
  const HealthResponse none = make_health_response({}, 0);
  EXPECT_EQ(none.fleet_size, 1u);
  ASSERT_EQ(none.ekm_fleet.size(), 1u);
  EXPECT_EQ(none.ekm_fleet[0].status, hsm::HealthStatus::Unavailable);
  EXPECT_FALSE(none.ekm_vendor.empty());

  std::vector<hsm::EkmHealth> many(12);
  for (std::size_t i = 0; i < many.size(); ++i) many[i].id = "hsm" + std::to_string(i);
  const HealthResponse r = make_health_response(many, 1);
  EXPECT_EQ(r.ekm_fleet.size(), 10u);
  EXPECT_EQ(r.ekm_fleet.back().id, "hsm9");
  EXPECT_EQ(r.ekm_vendor, "unknown");
}

}  // namespace
}  // namespace xks::api
