#include "xks/api/dto.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <random>
#include <string>
#include <vector>

#include "unit/api/test_util.hpp"

namespace xks::api {
namespace {

using nlohmann::json;
using testing::b64;
using testing::request_metadata;

json health_body() {
  return {{"requestMetadata",
           {{"kmsRequestId", "4112f4d6-db54-4af4-ae30-c55a22a8dfae"},
            {"kmsOperation", "CreateCustomKeyStore"}}}};
}
json metadata_body() {
  json md = request_metadata("DescribeKey");
  return {{"requestMetadata", md}};
}
json encrypt_body() {
  return {{"requestMetadata", request_metadata("Encrypt")},
          {"additionalAuthenticatedData", "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"},
          {"plaintext", "SGVsbG8gV29ybGQh"},
          {"encryptionAlgorithm", "AES_GCM"},
          {"ciphertextDataIntegrityValueAlgorithm", "SHA_256"}};
}
json decrypt_body() {
  return {{"requestMetadata", request_metadata("Decrypt")},
          {"additionalAuthenticatedData", "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n"},
          {"encryptionAlgorithm", "AES_GCM"},
          {"ciphertext", "ghxkK1txeDNn3q8Y"},
          {"ciphertextMetadata", "a2V5X3ZlcnNpb249MQ=="},
          {"initializationVector", "HMrlRw85cAJUd5Ax"},
          {"authenticationTag", "vBxN2ncH1oEkR8WVXpmyYQ=="}};
}

enum class Which { Health, Metadata, Encrypt, Decrypt };

std::string hex(ByteView b) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const auto c : b) {
    out += kHex[c >> 4];
    out += kHex[c & 0xf];
  }
  return out;
}
std::string opt(const std::optional<std::string>& s) { return s ? "'" + *s + "'" : "absent"; }
std::string opt(const std::optional<Bytes>& b) { return b ? hex(*b) : "absent"; }

// Everything a parse produced, as text: two parses agree iff these are equal.
std::string describe(const Error& e) {
  return "error " + std::string(to_string(e.name)) + ": " + e.message + " | " + e.detail;
}
std::string describe(const RequestMetadata& m) {
  return "id='" + m.kms_request_id + "' op='" + m.kms_operation +
         "' principal=" + opt(m.aws_principal_arn) + " key=" + opt(m.kms_key_arn) +
         " via=" + opt(m.kms_via_service) + " vpc=" + opt(m.aws_source_vpc) +
         " vpce=" + opt(m.aws_source_vpce);
}
std::string describe(const HealthRequest& r) { return describe(r.metadata); }
std::string describe(const KeyMetadataRequest& r) { return describe(r.metadata); }
std::string describe(const EncryptRequest& r) {
  return describe(r.metadata) + " plaintext=" + hex(r.plaintext) + " aad=" + opt(r.aad) +
         " cdiv=" + (r.want_cdiv ? "yes" : "no");
}
std::string describe(const DecryptRequest& r) {
  return describe(r.metadata) + " ct=" + hex(r.ciphertext) + " iv=" + hex(r.iv) +
         " tag=" + hex(r.tag) + " aad=" + opt(r.aad) + " md=" + opt(r.ciphertext_metadata);
}
template <class T>
std::string describe(const Result<T>& r) {
  return r ? describe(*r) : describe(r.error());
}

std::string parse_with(Which which, std::string_view text, detail::Reader reader) {
  switch (which) {
    case Which::Health: return describe(parse_health_request(text, reader));
    case Which::Metadata: return describe(parse_key_metadata_request(text, reader));
    case Which::Encrypt: return describe(parse_encrypt_request(text, reader));
    case Which::Decrypt: return describe(parse_decrypt_request(text, reader));
  }
  return {};
}

// The production parse (fast reader when it can) must say exactly what
// nlohmann's DOM parser says; returns that.
std::string same_with_both_readers(Which which, std::string_view text) {
  const std::string dom = parse_with(which, text, detail::Reader::Dom);
  const std::string automatic = parse_with(which, text, detail::Reader::Auto);
  EXPECT_EQ(automatic, dom) << "body: " << text;
  return automatic;
}

// Parses with the parser for `which`, with both readers (which must agree);
// returns the error (or nullopt on success).
std::optional<Error> parse(Which which, const json& body) {
  const std::string text = body.dump();
  same_with_both_readers(which, text);
  switch (which) {
    case Which::Health: {
      auto r = parse_health_request(text);
      if (r) return std::nullopt;
      return r.error();
    }
    case Which::Metadata: {
      auto r = parse_key_metadata_request(text);
      if (r) return std::nullopt;
      return r.error();
    }
    case Which::Encrypt: {
      auto r = parse_encrypt_request(text);
      if (r) return std::nullopt;
      return r.error();
    }
    case Which::Decrypt: {
      auto r = parse_decrypt_request(text);
      if (r) return std::nullopt;
      return r.error();
    }
  }
  return std::nullopt;
}

json body_of(Which which) {
  switch (which) {
    case Which::Health: return health_body();
    case Which::Metadata: return metadata_body();
    case Which::Encrypt: return encrypt_body();
    case Which::Decrypt: return decrypt_body();
  }
  return {};
}

void expect_error(const std::optional<Error>& e, ErrorName name, std::string_view mentions) {
  ASSERT_TRUE(e.has_value()) << "expected " << to_string(name) << " mentioning " << mentions;
  EXPECT_EQ(e->name, name) << e->message;
  EXPECT_NE(e->message.find(mentions), std::string::npos) << e->message;
}

TEST(Dto, SpecExamplesParse) {
  const auto h = parse_health_request(health_body().dump());
  ASSERT_TRUE(h.has_value()) << h.error().message;
  EXPECT_EQ(h->metadata.kms_request_id, "4112f4d6-db54-4af4-ae30-c55a22a8dfae");
  EXPECT_EQ(h->metadata.kms_operation, "CreateCustomKeyStore");
  EXPECT_FALSE(h->metadata.aws_principal_arn.has_value());

  const auto m = parse_key_metadata_request(metadata_body().dump());
  ASSERT_TRUE(m.has_value()) << m.error().message;
  EXPECT_EQ(m->metadata.aws_principal_arn, "arn:aws:iam::123456789012:user/Alice");
  EXPECT_EQ(m->metadata.kms_via_service, "ebs");
  EXPECT_FALSE(m->metadata.aws_source_vpc.has_value());

  const auto e = parse_encrypt_request(encrypt_body().dump());
  ASSERT_TRUE(e.has_value()) << e.error().message;
  EXPECT_EQ(as_chars(e->plaintext), "Hello World!");
  ASSERT_TRUE(e->aad.has_value());
  EXPECT_EQ(as_chars(*e->aad), "project=nile,department=marketing");
  EXPECT_TRUE(e->want_cdiv);
  EXPECT_EQ(e->metadata.kms_operation, "Encrypt");
  EXPECT_TRUE(e->metadata.kms_key_arn.has_value());

  const auto d = parse_decrypt_request(decrypt_body().dump());
  ASSERT_TRUE(d.has_value()) << d.error().message;
  EXPECT_EQ(d->ciphertext.size(), 12u);
  EXPECT_EQ(d->iv.size(), 12u);
  EXPECT_EQ(d->tag.size(), 16u);
  ASSERT_TRUE(d->ciphertext_metadata.has_value());
  EXPECT_EQ(as_chars(*d->ciphertext_metadata), "key_version=1");
}

TEST(Dto, OptionalFieldsMayBeAbsent) {
  json e = encrypt_body();
  e.erase("additionalAuthenticatedData");
  e.erase("ciphertextDataIntegrityValueAlgorithm");
  e["requestMetadata"].erase("kmsViaService");
  const auto er = parse_encrypt_request(e.dump());
  ASSERT_TRUE(er.has_value()) << er.error().message;
  EXPECT_FALSE(er->aad.has_value());
  EXPECT_FALSE(er->want_cdiv);

  json d = decrypt_body();
  d.erase("additionalAuthenticatedData");
  d.erase("ciphertextMetadata");
  const auto dr = parse_decrypt_request(d.dump());
  ASSERT_TRUE(dr.has_value()) << dr.error().message;
  EXPECT_FALSE(dr->aad.has_value());
  EXPECT_FALSE(dr->ciphertext_metadata.has_value());

  json m = metadata_body();
  m["requestMetadata"].erase("kmsKeyArn");  // CreateKey sends none
  EXPECT_FALSE(parse(Which::Metadata, m).has_value());
}

TEST(Dto, NullOptionalFieldsCountAsAbsent) {
  json e = encrypt_body();
  e["additionalAuthenticatedData"] = nullptr;
  e["requestMetadata"]["awsSourceVpc"] = nullptr;
  const auto r = parse_encrypt_request(e.dump());
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_FALSE(r->aad.has_value());
  EXPECT_FALSE(r->metadata.aws_source_vpc.has_value());
}

TEST(Dto, VpcFields) {
  json m = metadata_body();
  m["requestMetadata"]["awsSourceVpc"] = "vpc-123";
  m["requestMetadata"]["awsSourceVpce"] = "vpce-456";
  const auto r = parse_key_metadata_request(m.dump());
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->metadata.aws_source_vpc, "vpc-123");
  EXPECT_EQ(r->metadata.aws_source_vpce, "vpce-456");
}

struct Required {
  Which which;
  std::vector<std::string> top;       // required top-level fields
  std::vector<std::string> metadata;  // required requestMetadata fields
};

TEST(Dto, EveryRequiredFieldPerApi) {
  const std::vector<Required> table = {
      {Which::Health, {"requestMetadata"}, {"kmsRequestId", "kmsOperation"}},
      {Which::Metadata, {"requestMetadata"}, {"kmsRequestId", "kmsOperation", "awsPrincipalArn"}},
      {Which::Encrypt,
       {"requestMetadata", "plaintext", "encryptionAlgorithm"},
       {"kmsRequestId", "kmsOperation", "awsPrincipalArn", "kmsKeyArn"}},
      {Which::Decrypt,
       {"requestMetadata", "ciphertext", "encryptionAlgorithm", "initializationVector",
        "authenticationTag"},
       {"kmsRequestId", "kmsOperation", "awsPrincipalArn", "kmsKeyArn"}},
  };
  for (const auto& row : table) {
    for (const auto& field : row.top) {
      SCOPED_TRACE(field);
      json b = body_of(row.which);
      b.erase(field);
      // Without an IV or a tag a ciphertext cannot verify (the spec's error table).
      const bool ciphertext_part = field == "initializationVector" || field == "authenticationTag";
      expect_error(
          parse(row.which, b),
          ciphertext_part ? ErrorName::InvalidCiphertextException : ErrorName::ValidationException,
          field + " is required");
    }
    for (const auto& field : row.metadata) {
      SCOPED_TRACE(field);
      json b = body_of(row.which);
      b["requestMetadata"].erase(field);
      expect_error(parse(row.which, b), ErrorName::ValidationException,
                   "requestMetadata." + field + " is required");
      b["requestMetadata"][field] = "";
      if (field == "kmsRequestId") continue;  // opaque: see EmptyKmsRequestIdIsAccepted
      expect_error(parse(row.which, b), ErrorName::ValidationException,
                   "requestMetadata." + field + " must not be empty");
    }
  }
}

TEST(Dto, WrongJsonTypesNameTheField) {
  for (Which w : {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt}) {
    const json base = body_of(w);
    for (const auto& bad : {json(42), json(true), json::array({"x"}), json::object()}) {
      for (const char* f : {"kmsRequestId", "kmsOperation", "awsPrincipalArn", "kmsKeyArn",
                            "kmsViaService", "awsSourceVpc", "awsSourceVpce"}) {
        json b = base;
        b["requestMetadata"][f] = bad;
        SCOPED_TRACE(b.dump());
        expect_error(parse(w, b), ErrorName::ValidationException,
                     std::string("requestMetadata.") + f + " must be a string");
      }
      if (bad.is_object()) continue;
      json b = base;
      b["requestMetadata"] = bad;
      expect_error(parse(w, b), ErrorName::ValidationException,
                   "requestMetadata must be a JSON object");
    }
  }
  for (const char* f : {"plaintext", "additionalAuthenticatedData"}) {
    json b = encrypt_body();
    b[f] = 12;
    expect_error(parse(Which::Encrypt, b), ErrorName::ValidationException,
                 std::string(f) + " must be a Base64 string (got number)");
  }
  for (const char* f : {"ciphertext", "additionalAuthenticatedData", "ciphertextMetadata",
                        "initializationVector", "authenticationTag"}) {
    json b = decrypt_body();
    b[f] = json::array();
    expect_error(parse(Which::Decrypt, b), ErrorName::ValidationException,
                 std::string(f) + " must be a Base64 string (got array)");
  }
  json e = encrypt_body();
  e["encryptionAlgorithm"] = 1;
  expect_error(parse(Which::Encrypt, e), ErrorName::ValidationException,
               "encryptionAlgorithm must be a string");
  e = encrypt_body();
  e["ciphertextDataIntegrityValueAlgorithm"] = false;
  expect_error(parse(Which::Encrypt, e), ErrorName::ValidationException,
               "ciphertextDataIntegrityValueAlgorithm must be a string");
}

TEST(Dto, BodyMustBeAJsonObject) {
  for (const char* text :
       {"", "{", "[]", "\"x\"", "null", "42", "{\"requestMetadata\":}", "{\"a\":1} trailing"}) {
    SCOPED_TRACE(text);
    const auto r = parse_health_request(text);
    ASSERT_FALSE(r.has_value());
    EXPECT_EQ(r.error().name, ErrorName::ValidationException);
    EXPECT_NE(r.error().message.find("request body"), std::string::npos);
  }
  // Invalid UTF-8 inside a string is not JSON.
  EXPECT_FALSE(parse_health_request("{\"requestMetadata\":{\"kmsRequestId\":\"\xff\","
                                    "\"kmsOperation\":\"x\"}}")
                   .has_value());
}

TEST(Dto, UnknownFieldsAndOperationsAreAccepted) {
  for (Which w : {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt}) {
    json b = body_of(w);
    b["someFutureField"] = {{"nested", true}};
    b["requestMetadata"]["kmsFutureContext"] = 7;
    b["requestMetadata"]["kmsOperation"] = "BulkSomethingNew";
    const auto e = parse(w, b);
    EXPECT_FALSE(e.has_value()) << e->message;
  }
  const auto r = parse_health_request(
      R"({"requestMetadata":{"kmsRequestId":"not-a-uuid","kmsOperation":"KmsHealthCheck"}})");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->metadata.kms_request_id, "not-a-uuid");
}

TEST(Dto, EmptyKmsRequestIdIsAccepted) {
  // Spec: kmsRequestId is opaque and MUST NOT be validated.
  for (Which w : {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt}) {
    for (std::string id : {"", " ", "\u00e9t\u00e9", "{not json}"}) {
      SCOPED_TRACE(id);
      json b = body_of(w);
      b["requestMetadata"]["kmsRequestId"] = id;
      const auto e = parse(w, b);
      EXPECT_FALSE(e.has_value()) << e->message;
    }
  }
}

TEST(Dto, LongArnsAreAccepted) {
  // Spec: MUST support 2048; longer ones are accepted too (see dto.cpp).
  for (std::size_t n : {2048u, 5000u}) {
    const std::string arn = "arn:aws:iam::123456789012:role/" + std::string(n - 31, 'r');
    json b = encrypt_body();
    b["requestMetadata"]["awsPrincipalArn"] = arn;
    b["requestMetadata"]["kmsKeyArn"] = arn;
    const auto r = parse_encrypt_request(b.dump());
    ASSERT_TRUE(r.has_value()) << r.error().message;
    EXPECT_EQ(r->metadata.aws_principal_arn->size(), n);
    EXPECT_EQ(r->metadata.kms_key_arn->size(), n);
  }
}

TEST(Dto, PlaintextSizes) {
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{4300}, kMaxPlaintextBytes}) {
    json b = encrypt_body();
    b["plaintext"] = b64(Bytes(n, 0xab));
    const auto r = parse_encrypt_request(b.dump());
    ASSERT_TRUE(r.has_value()) << n << ": " << r.error().message;
    EXPECT_EQ(r->plaintext.size(), n);
  }
  for (std::size_t n : {kMaxPlaintextBytes + 1, kMaxPlaintextBytes + 3, std::size_t{100000}}) {
    json b = encrypt_body();
    b["plaintext"] = b64(Bytes(n, 0xab));
    expect_error(parse(Which::Encrypt, b), ErrorName::UnsupportedOperationException,
                 "plaintext is larger than the 32768 bytes");
  }
}

TEST(Dto, CiphertextSizes) {
  for (std::size_t n : {std::size_t{0}, std::size_t{4300}, kMaxCiphertextBytes}) {
    json b = decrypt_body();
    b["ciphertext"] = b64(Bytes(n, 1));
    const auto r = parse_decrypt_request(b.dump());
    ASSERT_TRUE(r.has_value()) << n << ": " << r.error().message;
    EXPECT_EQ(r->ciphertext.size(), n);
  }
  json b = decrypt_body();
  b["ciphertext"] = b64(Bytes(kMaxCiphertextBytes + 1, 1));
  expect_error(parse(Which::Decrypt, b), ErrorName::UnsupportedOperationException, "ciphertext");
}

TEST(Dto, AadSizes) {
  for (Which w : {Which::Encrypt, Which::Decrypt}) {
    for (std::size_t n : {std::size_t{0}, std::size_t{8192}, std::size_t{65535}}) {
      json b = body_of(w);
      b["additionalAuthenticatedData"] = b64(Bytes(n, 2));
      EXPECT_FALSE(parse(w, b).has_value()) << n;
    }
    json b = body_of(w);
    b["additionalAuthenticatedData"] = b64(Bytes(65536, 2));
    expect_error(parse(w, b), ErrorName::UnsupportedOperationException,
                 "additionalAuthenticatedData is larger than the 65535 bytes");
  }
  json b = encrypt_body();
  b["additionalAuthenticatedData"] = "";
  const auto r = parse_encrypt_request(b.dump());
  ASSERT_TRUE(r.has_value());
  ASSERT_TRUE(r->aad.has_value());
  EXPECT_TRUE(r->aad->empty());
}

TEST(Dto, DecryptFieldSizes) {
  auto with = [](const char* field, std::size_t n) {
    json b = decrypt_body();
    b[field] = b64(Bytes(n, 3));
    return b;
  };
  EXPECT_FALSE(parse(Which::Decrypt, with("initializationVector", 12)).has_value());
  EXPECT_FALSE(parse(Which::Decrypt, with("initializationVector", 16)).has_value());
  for (std::size_t n : {0u, 8u, 11u, 13u, 15u, 17u, 32u}) {
    SCOPED_TRACE(n);
    const auto e = parse(Which::Decrypt, with("initializationVector", n));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->name, ErrorName::InvalidCiphertextException);
    EXPECT_NE(e->message.find("initializationVector"), std::string::npos) << e->message;
  }
  EXPECT_FALSE(parse(Which::Decrypt, with("authenticationTag", 16)).has_value());
  for (std::size_t n : {0u, 12u, 15u, 17u, 32u}) {
    SCOPED_TRACE(n);
    const auto e = parse(Which::Decrypt, with("authenticationTag", n));
    ASSERT_TRUE(e.has_value());
    EXPECT_EQ(e->name, ErrorName::InvalidCiphertextException);
    EXPECT_NE(e->message.find("authenticationTag"), std::string::npos) << e->message;
  }
  EXPECT_FALSE(parse(Which::Decrypt, with("ciphertextMetadata", 20)).has_value());
  EXPECT_FALSE(parse(Which::Decrypt, with("ciphertextMetadata", 0)).has_value());
  expect_error(parse(Which::Decrypt, with("ciphertextMetadata", 21)),
               ErrorName::ValidationException, "ciphertextMetadata");
}

TEST(Dto, StrictBase64NeverEchoed) {
  // Unpadded, URL-safe alphabet, whitespace, bad padding, non-canonical bits.
  for (const char* bad : {"SGVsbG8gV29ybGQ", "SGVs-G8_", "SGVs bG8=", "SGVsbG8=\n",
                          "S===", "SGVsbG9=", "=SGV", "SGVsbG8gV29ybGQh!!!!"}) {
    SCOPED_TRACE(bad);
    json e = encrypt_body();
    e["plaintext"] = bad;
    const auto err = parse(Which::Encrypt, e);
    expect_error(err, ErrorName::ValidationException, "plaintext is not valid standard Base64");
    if (err) {
      EXPECT_EQ(err->message.find(bad), std::string::npos);
    }
    json d = decrypt_body();
    d["ciphertext"] = bad;
    expect_error(parse(Which::Decrypt, d), ErrorName::ValidationException,
                 "ciphertext is not valid standard Base64");
  }
}

TEST(Dto, Algorithms) {
  json e = encrypt_body();
  e["encryptionAlgorithm"] = "AES_CBC_SECRETVALUE";
  auto err = parse(Which::Encrypt, e);
  expect_error(err, ErrorName::UnsupportedOperationException, "encryptionAlgorithm");
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message.find("SECRETVALUE"), std::string::npos);
  e["encryptionAlgorithm"] = "aes_gcm";  // case matters
  expect_error(parse(Which::Encrypt, e), ErrorName::UnsupportedOperationException,
               "encryptionAlgorithm");
  e["encryptionAlgorithm"] = "";
  expect_error(parse(Which::Encrypt, e), ErrorName::ValidationException,
               "encryptionAlgorithm must not be empty");

  json d = decrypt_body();
  d["encryptionAlgorithm"] = "RSAES_OAEP_SHA_256";
  expect_error(parse(Which::Decrypt, d), ErrorName::UnsupportedOperationException,
               "encryptionAlgorithm");

  e = encrypt_body();
  e["ciphertextDataIntegrityValueAlgorithm"] = "SHA_512";
  expect_error(parse(Which::Encrypt, e), ErrorName::UnsupportedOperationException,
               "ciphertextDataIntegrityValueAlgorithm");
}

TEST(Dto, MessagesDoNotEchoValues) {
  json e = encrypt_body();
  e["requestMetadata"]["kmsKeyArn"] = json::array({"SECRETVALUE"});
  e["plaintext"] = "SECRETVALUE!";
  auto err = parse(Which::Encrypt, e);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message.find("SECRETVALUE"), std::string::npos);
  e = encrypt_body();
  e["plaintext"] = "SECRETVALUE!";
  err = parse(Which::Encrypt, e);
  ASSERT_TRUE(err.has_value());
  EXPECT_EQ(err->message.find("SECRETVALUE"), std::string::npos);
  EXPECT_EQ(err->detail.find("SECRETVALUE"), std::string::npos);
}

TEST(Dto, SerializeKeyMetadata) {
  KeyMetadataResponse r;
  r.key_usage = {"ENCRYPT", "DECRYPT"};
  EXPECT_EQ(json::parse(serialize(r)),
            json::parse(
                R"({"keySpec":"AES_256","keyUsage":["ENCRYPT","DECRYPT"],"keyStatus":"ENABLED"})"));
  r.enabled = false;
  r.key_usage.assign(12, "WRAP");
  const json j = json::parse(serialize(r));
  EXPECT_EQ(j["keyStatus"], "DISABLED");
  EXPECT_EQ(j["keyUsage"].size(), 10u);
}

TEST(Dto, SerializeEncrypt) {
  // The spec's Encrypt response example.
  EncryptResponse r;
  r.ciphertext = testing::unb64("ghxkK1txeDNn3q8Y");
  r.iv = testing::unb64("HMrlRw85cAJUd5Ax");
  r.tag = testing::unb64("vBxN2ncH1oEkR8WVXpmyYQ==");
  r.ciphertext_metadata = testing::unb64("a2V5X3ZlcnNpb249MQ==");
  r.cdiv = "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=";
  EXPECT_EQ(json::parse(serialize(r)), json::parse(R"({
      "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ==",
      "ciphertext": "ghxkK1txeDNn3q8Y",
      "ciphertextDataIntegrityValue": "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=",
      "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
      "initializationVector": "HMrlRw85cAJUd5Ax"})"));
  r.cdiv.reset();
  r.ciphertext_metadata.clear();
  r.ciphertext.clear();
  const json j = json::parse(serialize(r));
  EXPECT_FALSE(j.contains("ciphertextDataIntegrityValue"));
  EXPECT_FALSE(j.contains("ciphertextMetadata"));
  EXPECT_EQ(j["ciphertext"], "");
}

TEST(Dto, SerializeDecrypt) {
  DecryptResponse r;
  const std::string_view text = "Hello World!";
  r.plaintext.assign(text.begin(), text.end());
  EXPECT_EQ(serialize(r), R"({"plaintext":"SGVsbG8gV29ybGQh"})");
  r.plaintext.clear();
  EXPECT_EQ(serialize(r), R"({"plaintext":""})");
}

TEST(Dto, SerializeHealth) {
  HealthResponse r;
  r.fleet_size = 2;
  r.proxy_vendor = "xks-proxy project";
  r.proxy_model = "xks-proxy 0.1.0";
  r.ekm_vendor = "SoftHSM";
  r.ekm_fleet = {{"hsm-1", "Luna 5.0", hsm::HealthStatus::Degraded},
                 {"hsm-2\xff", "Luna \"5.1\"", hsm::HealthStatus::Active}};
  const json j = json::parse(serialize(r));
  EXPECT_EQ(j["xksProxyFleetSize"], 2);
  EXPECT_EQ(j["xksProxyVendor"], "xks-proxy project");
  EXPECT_EQ(j["xksProxyModel"], "xks-proxy 0.1.0");
  EXPECT_EQ(j["ekmVendor"], "SoftHSM");
  ASSERT_EQ(j["ekmFleetDetails"].size(), 2u);
  EXPECT_EQ(j["ekmFleetDetails"][0],
            json::parse(R"({"id":"hsm-1","model":"Luna 5.0","healthStatus":"DEGRADED"})"));
  EXPECT_EQ(j["ekmFleetDetails"][1]["healthStatus"], "ACTIVE");
  EXPECT_EQ(j["ekmFleetDetails"][1]["model"], "Luna \"5.1\"");
  EXPECT_EQ(j.size(), 5u);
}

TEST(Dto, ErrorBody) {
  const Error e = make_error(ErrorName::InvalidCiphertextException,
                             "tag \"bad\"\n\xc3\xa9 " + std::string(600, 'x'),
                             "CKR_ENCRYPTED_DATA_INVALID secret-detail");
  const std::string body = error_body(e);
  EXPECT_EQ(body.find("secret-detail"), std::string::npos);
  const json j = json::parse(body);
  EXPECT_EQ(j["errorName"], "InvalidCiphertextException");
  const std::string msg = j["errorMessage"];
  EXPECT_LT(msg.size(), 512u);
  EXPECT_EQ(msg.substr(0, 13), "tag \"bad\"??? ");
  for (char c : msg) EXPECT_TRUE(c >= 0x20 && c <= 0x7e);
  EXPECT_EQ(j.size(), 2u);
}

// ---------------------------------------------------------------------------
// Responses: byte for byte what the nlohmann::json code they replaced wrote.

namespace reference {

std::string dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

std::string serialize(const KeyMetadataResponse& response) {
  json usage = json::array();
  for (std::size_t i = 0; i < response.key_usage.size() && i < kMaxKeyUsages; ++i) {
    usage.push_back(response.key_usage[i]);
  }
  return dump({{"keySpec", response.key_spec},
               {"keyUsage", std::move(usage)},
               {"keyStatus", response.enabled ? "ENABLED" : "DISABLED"}});
}

std::string serialize(const EncryptResponse& response) {
  std::string out = "{";
  const auto field = [&](std::string_view name, std::string_view value, bool first) {
    if (!first) out += ',';
    out += '"';
    out += name;
    out += "\":\"";
    out += value;
    out += '"';
  };
  field("ciphertext", testing::b64(response.ciphertext), true);
  field("initializationVector", testing::b64(response.iv), false);
  field("authenticationTag", testing::b64(response.tag), false);
  if (!response.ciphertext_metadata.empty()) {
    field("ciphertextMetadata", testing::b64(response.ciphertext_metadata), false);
  }
  if (response.cdiv) field("ciphertextDataIntegrityValue", *response.cdiv, false);
  out += '}';
  return out;
}

std::string serialize(const DecryptResponse& response) {
  return "{\"plaintext\":\"" + testing::b64(response.plaintext) + "\"}";
}

std::string serialize(const HealthResponse& response) {
  json fleet = json::array();
  for (std::size_t i = 0; i < response.ekm_fleet.size() && i < kMaxEkmFleetEntries; ++i) {
    const auto& e = response.ekm_fleet[i];
    fleet.push_back({{"id", e.id},
                     {"model", e.model},
                     {"healthStatus", std::string(hsm::to_string(e.status))}});
  }
  return dump({{"xksProxyFleetSize", response.fleet_size},
               {"xksProxyVendor", response.proxy_vendor},
               {"xksProxyModel", response.proxy_model},
               {"ekmVendor", response.ekm_vendor},
               {"ekmFleetDetails", std::move(fleet)}});
}

std::string error_body(const Error& error) {
  return dump({{"errorName", std::string(to_string(error.name))},
               {"errorMessage", sanitize_error_message(error.message)}});
}

}  // namespace reference

// Strings an HSM might report: plain, quoted, control characters, UTF-8, and
// bytes that are not UTF-8.
const std::vector<std::string> kAwkwardStrings = {"",
                                                  "SoftHSM",
                                                  "Luna \"7\" \\ fw 7.8.4",
                                                  "tab\there\nnewline\x01\x1f\x7f",
                                                  "caf\xc3\xa9 \xe2\x82\xac",
                                                  "bad \xff\xfe utf8 \xc3",
                                                  "\xe2\x82",
                                                  "\xed\xa0\x80 surrogate",
                                                  std::string(300, 'x')};

TEST(Dto, SerializedBytesAreUnchanged) {
  KeyMetadataResponse km;
  EXPECT_EQ(serialize(km), reference::serialize(km));
  km.key_usage = {"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"};
  EXPECT_EQ(serialize(km), reference::serialize(km));
  EXPECT_EQ(serialize(km), R"({"keySpec":"AES_256","keyStatus":"ENABLED",)"
                           R"("keyUsage":["ENCRYPT","DECRYPT","WRAP","UNWRAP"]})");
  km.enabled = false;
  km.key_usage = kAwkwardStrings;
  km.key_usage.resize(12, "SIGN");
  km.key_spec = "AES\"256\xff";
  EXPECT_EQ(serialize(km), reference::serialize(km));

  for (std::size_t n : {0u, 1u, 2u, 3u, 4u, 12u, 32u, 4300u}) {
    EncryptResponse er;
    er.ciphertext.assign(n, 0xc5);
    er.iv.assign(12, 1);
    er.tag.assign(16, 2);
    EXPECT_EQ(serialize(er), reference::serialize(er)) << n;
    er.ciphertext_metadata = {'x', 'k', 's', 1};
    er.cdiv = "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=";
    EXPECT_EQ(serialize(er), reference::serialize(er)) << n;

    DecryptResponse dr;
    dr.plaintext.assign(n, 0x3e);
    EXPECT_EQ(serialize(dr), reference::serialize(dr)) << n;
  }

  HealthResponse h;
  h.fleet_size = 4294967295u;
  h.proxy_vendor = "xks-proxy project";
  h.proxy_model = "xks-proxy 0.1.0";
  for (const auto& s : kAwkwardStrings) {
    h.ekm_vendor = s;
    h.ekm_fleet.push_back({s, s + "-model", hsm::HealthStatus::Degraded});
    EXPECT_EQ(serialize(h), reference::serialize(h));
    EXPECT_TRUE(json::accept(serialize(h)));
  }
  h.ekm_fleet.resize(12);  // only 10 are listed
  EXPECT_EQ(serialize(h), reference::serialize(h));
  h.ekm_fleet.clear();
  h.fleet_size = 1;
  EXPECT_EQ(serialize(h), reference::serialize(h));
}

// Error messages can carry bytes from the request (a key id, a field name): the
// body stays valid JSON and UTF-8, the message printable ASCII under 512.
TEST(Dto, ErrorBodyOfArbitraryBytes) {
  std::vector<std::string> messages = kAwkwardStrings;
  messages.push_back(std::string("nul \0 inside", 12));
  messages.push_back(R"(key "a\b" not found)");
  messages.push_back(std::string(1000, '"'));
  std::string all;
  for (int c = 0; c < 256; ++c) all += static_cast<char>(c);
  messages.push_back(all);
  for (const auto& m : messages) {
    for (const ErrorName name : {ErrorName::ValidationException, ErrorName::KeyNotFoundException,
                                 ErrorName::InternalException}) {
      const Error e = make_error(name, m, "log-only \xff detail");
      const std::string body = error_body(e);
      ASSERT_EQ(body, reference::error_body(e)) << testing::b64(m);
      json j;
      ASSERT_NO_THROW(j = json::parse(body)) << testing::b64(m);
      EXPECT_EQ(j.size(), 2u);
      EXPECT_EQ(j["errorName"], std::string(to_string(name)));
      EXPECT_EQ(j["errorMessage"], sanitize_error_message(m));  // round trip
      EXPECT_EQ(body.find("log-only"), std::string::npos);
    }
  }
  EXPECT_EQ(error_body(make_error(ErrorName::ThrottlingException, "")),
            R"({"errorMessage":"","errorName":"ThrottlingException"})");
}

// ---------------------------------------------------------------------------
// Requests: the fast reader against nlohmann's DOM parser.

std::string compact(Which which) { return body_of(which).dump(); }

TEST(Dto, KmsShapedBodiesTakeTheFastReader) {
  for (Which w : {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt}) {
    const json b = body_of(w);
    // Compact (as KMS sends), Python's json.dumps spacing, and pretty-printed.
    for (const std::string& text :
         {b.dump(), b.dump(2), b.dump(1, '\t'), std::string(" \r\n") + b.dump() + "\n\t "}) {
      SCOPED_TRACE(text);
      const std::string fast = parse_with(w, text, detail::Reader::Fast);
      EXPECT_EQ(fast.find("error"), std::string::npos) << fast;
      EXPECT_EQ(fast, same_with_both_readers(w, text));
    }
    json with_future = b;  // fields KMS may add later do not leave the fast path
    with_future["futureFlag"] = true;
    with_future["futureList"] = json::array({"a", json::object(), nullptr, false});
    with_future["requestMetadata"]["kmsFutureContext"] = {{"k", {{"deeper", "v"}}}};
    EXPECT_EQ(parse_with(w, with_future.dump(), detail::Reader::Fast).find("error"),
              std::string::npos);
    same_with_both_readers(w, with_future.dump());
  }
  json e = encrypt_body();
  e["plaintext"] = testing::b64(Bytes(4300, 0x11));
  EXPECT_EQ(parse_with(Which::Encrypt, e.dump(), detail::Reader::Fast),
            same_with_both_readers(Which::Encrypt, e.dump()));
  EXPECT_NE(parse_with(Which::Encrypt, "[]", detail::Reader::Fast).find("fast reader"),
            std::string::npos);
}

// Bodies outside the fast reader's subset: what they mean is nlohmann's call.
TEST(Dto, BodiesOutsideTheFastSubsetMeanWhatTheyMeantBefore) {
  const std::string enc = compact(Which::Encrypt);
  const auto replace = [](std::string text, std::string_view from, std::string_view to) {
    const auto at = text.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return text.replace(at, from.size(), to);
  };
  const std::vector<std::string> bodies = {
      // escapes: in a Base64 value ("\/" is "/"), in a key, in metadata
      replace(enc, "\"plaintext\":\"SGVsbG8gV29ybGQh\"",
              R"("plaintext":"SGVsbG8g\u0056\u0032\u0039ybGQh")"),
      replace(enc, "\"plaintext\":\"SGVsbG8gV29ybGQh\"", R"("plaintext":"SGVsbG8\/V29ybGQh")"),
      replace(enc, "\"plaintext\":", R"("pl\u0061intext":)"),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", R"("kmsOperation":"Enc\"rypt\\")"),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", "\"kmsOperation\":\"Encr\xc3\xbdpt\""),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", "\"kmsOperation\":\"Encr\xffpt\""),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", "\"kmsOperation\":\"Encr\x7fpt\""),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", "\"kmsOperation\":\"Encr\x01pt\""),
      // numbers, in unknown fields and in known ones
      replace(enc, "{", R"({"retries":3,"weight":-0.5e-3,)"),
      replace(enc, "{", R"({"huge":1e400,)"),
      replace(enc, "\"plaintext\":\"SGVsbG8gV29ybGQh\"", R"("plaintext":12)"),
      replace(enc, "\"kmsOperation\":\"Encrypt\"", R"("kmsOperation":-0)"),
      // duplicated known keys: the last one wins, null or not
      replace(enc, "{", R"({"plaintext":"QUJD",)"),
      replace(enc, "{", R"({"plaintext":null,)"),
      enc.substr(0, enc.size() - 1) + R"(,"plaintext":null})",
      enc.substr(0, enc.size() - 1) + R"(,"plaintext":"QUJD"})",
      enc.substr(0, enc.size() - 1) + R"(,"requestMetadata":{"kmsRequestId":"x"}})",
      replace(enc, "\"kmsOperation\":\"Encrypt\"", R"("kmsOperation":"A","kmsOperation":"B")"),
      // duplicated unknown keys, nesting deeper than the fast reader goes
      replace(enc, "{", R"({"x":1,"x":[],)"),
      replace(enc, "{", "{\"deep\":" + std::string(40, '[') + std::string(40, ']') + ","),
      replace(enc, "{", "{\"deep\":" + std::string(15, '[') + std::string(15, ']') + ","),
      replace(enc, "{", "{\"deep\":" + std::string(16, '[') + std::string(16, ']') + ","),
      // a byte order mark, and things that are not JSON at all
      "\xEF\xBB\xBF" + enc,
      enc + "x",
      enc + "{}",
      enc.substr(0, enc.size() - 1),
      enc.substr(0, enc.size() - 1) + ",}",
      replace(enc, "\"plaintext\":", "\"plaintext\" "),
      replace(enc, ":\"AES_GCM\"", ":AES_GCM"),
      replace(enc, "{", "{,"),
      "{}",
      "{ }",
      "",
      " ",
      "[1]",
      "\"str\"",
      "nul",
      "nullx",
      "tru",
      R"({"requestMetadata":{}})",
      R"({"requestMetadata":[]})",
      R"({"requestMetadata":"x"})",
      R"({"requestMetadata":{"kmsRequestId":"a","kmsOperation":"b","awsPrincipalArn":"c",)"
      R"("kmsKeyArn":"d"},"ciphertext":"","initializationVector":"AAAAAAAAAAAAAAAA",)"
      R"("authenticationTag":"AAAAAAAAAAAAAAAAAAAAAA==","encryptionAlgorithm":"AES_GCM"})",
  };
  for (const auto& text : bodies) {
    for (Which w : {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt}) {
      same_with_both_readers(w, text);
    }
  }
  // And what the last-one-wins rule gives, spelled out.
  const auto r = parse_encrypt_request(replace(enc, "{", R"({"plaintext":"QUJD",)"));
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(as_chars(r->plaintext), "Hello World!");
  const auto escaped = parse_encrypt_request(bodies[1]);
  ASSERT_TRUE(escaped.has_value());
  EXPECT_EQ(testing::b64(escaped->plaintext), "SGVsbG8/V29ybGQh");
}

// The fast reader skips 8 bytes at a time: a byte that ends its subset must be
// noticed at every position of a long string.
TEST(Dto, EveryPositionOfASpecialByteIsNoticed) {
  const std::string id = "4112f4d6-db54-4af4-ae30-c55a22a8dfae-0123456789";
  for (const std::string_view special : {"\\\"", "\\\\", "\\u0041", "\x01", "\x1f", "\x7f",
                                         "\xc3\xa9", "\xff", "\x80", "\"", " ", "~"}) {
    for (std::size_t at = 0; at <= id.size(); ++at) {
      std::string v = id;
      v.insert(at, special);
      const std::string text =
          R"({"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":")" + v + "\"}}";
      const std::string result = same_with_both_readers(Which::Health, text);
      if (special == " " || special == "~") {
        EXPECT_NE(result.find("id='" + v + "'"), std::string::npos) << result;
      }
    }
  }
}

// Random edits of realistic bodies, byte-level and field-level: whatever comes
// out, both readers must agree on it exactly.
TEST(Dto, RandomBodiesMeanTheSameToBothReaders) {
  std::mt19937 rng(2024);
  const auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  const std::vector<std::string> bytes = {
      "\"",   "\\",   "{",    "}",    "[",    "]", ",", ":", " ", "\t",
      "\n",   "0",    "1",    "-",    "e",    ".", "n", "t", "f", std::string(1, '\0'),
      "\x1f", "\x7f", "\x80", "\xc3", "\xff", "A", "=", "/", "+"};
  const std::vector<std::string> tokens = {"null",
                                           "true",
                                           "false",
                                           "1",
                                           "-0.5e3",
                                           "\"x\"",
                                           "{}",
                                           "[]",
                                           R"({"a":[1,{"b":null}]})",
                                           "\\u0041",
                                           "\\/",
                                           "\\\"",
                                           "  ",
                                           R"("kmsRequestId":"dup",)",
                                           R"("plaintext":"QUJD",)",
                                           R"("requestMetadata":{},)",
                                           "\xc3\xa9",
                                           ",",
                                           "\":\""};
  const std::vector<json> values = {nullptr,
                                    0,
                                    -1.5,
                                    true,
                                    false,
                                    "",
                                    "x",
                                    "QUJD",
                                    "QUJD=",
                                    "AAAAAAAAAAAAAAAA",
                                    "AAAAAAAAAAAAAAAAAAAAAA==",
                                    "AES_GCM",
                                    "SHA_256",
                                    json::array(),
                                    json::array({"a"}),
                                    json::object(),
                                    {{"kmsRequestId", "r"}, {"kmsOperation", "o"}}};
  const std::vector<std::string> top = {"requestMetadata",
                                        "plaintext",
                                        "additionalAuthenticatedData",
                                        "encryptionAlgorithm",
                                        "ciphertextDataIntegrityValueAlgorithm",
                                        "ciphertext",
                                        "initializationVector",
                                        "authenticationTag",
                                        "ciphertextMetadata",
                                        "unknownField"};
  const std::vector<std::string> md = {"kmsRequestId",  "kmsOperation",  "awsPrincipalArn",
                                       "kmsKeyArn",     "kmsViaService", "awsSourceVpc",
                                       "awsSourceVpce", "kmsOther"};
  const Which kinds[] = {Which::Health, Which::Metadata, Which::Encrypt, Which::Decrypt};
  std::size_t fast_ok = 0;
  constexpr int kBodies = 2500;
  for (int i = 0; i < kBodies; ++i) {
    json b = body_of(kinds[pick(4)]);
    for (std::size_t k = pick(3); k > 0; --k) {  // field-level edits
      const json& v = values[pick(values.size())];
      if (pick(2) == 0) {
        b[top[pick(top.size())]] = v;
      } else if (b["requestMetadata"].is_object()) {
        b["requestMetadata"][md[pick(md.size())]] = v;
      }
    }
    std::string text = pick(4) == 0 ? b.dump(pick(3)) : b.dump();
    for (std::size_t k = pick(3); k > 0 && !text.empty(); --k) {  // byte-level edits
      const std::size_t at = pick(text.size());
      switch (pick(5)) {
        case 0: text.replace(at, 1, bytes[pick(bytes.size())]); break;
        case 1: text.insert(at, tokens[pick(tokens.size())]); break;
        case 2: text.erase(at, 1 + pick(8)); break;
        case 3: text.insert(at, text.substr(at, 1 + pick(24))); break;
        default: text.insert(at, bytes[pick(bytes.size())]); break;
      }
    }
    for (Which w : kinds) {
      const std::string result = same_with_both_readers(w, text);
      if (w == kinds[0] &&
          parse_with(w, text, detail::Reader::Fast).find("fast reader") == std::string::npos) {
        ++fast_ok;
      }
      if (::testing::Test::HasFailure()) return;  // one body is enough to debug
      (void)result;
    }
  }
  // The edits must leave plenty of bodies inside the fast subset, or this test
  // would only compare the DOM parser with itself.
  EXPECT_GT(fast_ok, static_cast<std::size_t>(kBodies / 4)) << fast_ok;
}

// Nesting is bounded by the body size only; the fast reader recurses into
// unknown values, so it must hand deep ones to nlohmann's (iterative) parser.
TEST(Dto, DeepNestingDoesNotExhaustTheStack) {
  for (const char* open_close : {"[]", "{}"}) {
    std::string deep;
    for (int i = 0; i < 100000; ++i) deep += open_close[0] == '[' ? "[" : "{\"a\":";
    deep += open_close[0] == '[' ? "" : "null";
    for (int i = 0; i < 100000; ++i) deep += open_close[1];
    std::string text = compact(Which::Health);
    text.insert(1, "\"deep\":" + deep + ",");
    EXPECT_EQ(same_with_both_readers(Which::Health, text).find("error"), std::string::npos);
  }
}

// The Base64 plaintext of a fast-read Encrypt body is decoded from the body
// itself: the request holds the bytes, and nothing else was allocated to hold
// the text (the body's own bytes are the caller's to wipe).
TEST(Dto, FastReaderDecodesPlaintextFromTheBody) {
  json e = encrypt_body();
  e["plaintext"] = testing::b64(Bytes(4300, 0x42));
  const std::string text = e.dump();
  const auto r = parse_encrypt_request(text, detail::Reader::Fast);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->plaintext, SecureBytes(4300, 0x42));
  EXPECT_EQ(text, e.dump());  // the body is read, never written
}

}  // namespace
}  // namespace xks::api
