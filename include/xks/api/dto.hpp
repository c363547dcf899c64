// Request and response bodies of the four XKS APIs: JSON in, typed structs out,
// and back. Spec: "API operations" (fields, sizes), Appendix B (requestMetadata),
// "Error codes" (error body).
//
// Parsing rules (see docs in dto.cpp for the reasoning of each choice):
//  - Every message names the field and what is wrong; none echoes a value (a
//    value may be plaintext or a secret).
//  - Unknown fields and unknown kmsOperation values are accepted (spec: KMS adds
//    both over time). JSON null in an optional field counts as absent.
//  - Wrong JSON type, missing required field, invalid Base64, a value the spec
//    forbids (IV not 12/16 bytes, tag not 16, metadata > 20) -> ValidationException.
//  - A value the spec allows but this proxy does not implement (another
//    encryptionAlgorithm or CDIV algorithm, a size above our maximum) ->
//    UnsupportedOperationException (501), as the spec's error table prescribes.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"
#include "xks/crypto/aad.hpp"
#include "xks/hsm/key_backend.hpp"

namespace xks::api {

// Sizes, in decoded bytes. The spec's minimums are 4300 (plaintext, ciphertext)
// and 8192 (AAD); ours are larger so that a KMS change does not break us, but
// bounded so one request cannot hold an HSM session for long. Note the HTTP body
// limit (Limits::max_body_bytes, 64 KiB by default) is checked first by the server.
inline constexpr std::size_t kMaxPlaintextBytes = 32 * 1024;
inline constexpr std::size_t kMaxCiphertextBytes = kMaxPlaintextBytes;
inline constexpr std::size_t kMaxAadBytes = crypto::kMaxAadBytes;  // u16 framing
inline constexpr std::size_t kMaxCiphertextMetadataBytes = crypto::kMaxMetadataBytes;
inline constexpr std::size_t kTagBytes = 16;
inline constexpr std::size_t kMaxKeyUsages = 10;
inline constexpr std::size_t kMaxEkmFleetEntries = 10;

// Appendix B. Only the fields this proxy reads; the rest are ignored.
struct RequestMetadata {
  std::string kms_request_id;
  std::string kms_operation;
  std::optional<std::string> aws_principal_arn;  // required for all but health
  std::optional<std::string> kms_key_arn;        // required for encrypt/decrypt
  std::optional<std::string> kms_via_service;
  std::optional<std::string> aws_source_vpc;
  std::optional<std::string> aws_source_vpce;
};

struct HealthRequest {
  RequestMetadata metadata;
};

struct KeyMetadataRequest {
  RequestMetadata metadata;
};

struct EncryptRequest {
  RequestMetadata metadata;
  SecureBytes plaintext;     // 0..kMaxPlaintextBytes
  std::optional<Bytes> aad;  // additionalAuthenticatedData
  bool want_cdiv = false;    // ciphertextDataIntegrityValueAlgorithm == SHA_256
};

struct DecryptRequest {
  RequestMetadata metadata;
  Bytes ciphertext;  // 0..kMaxCiphertextBytes
  Bytes iv;          // 12 or 16 bytes (the spec's two sizes)
  Bytes tag;         // 16 bytes
  std::optional<Bytes> aad;
  std::optional<Bytes> ciphertext_metadata;  // <= 20 bytes
};

// Parse a request body (the bytes as received). Never throws.
// A body as KMS sends it is read in place (dto.cpp): the Base64 plaintext of an
// Encrypt request is decoded from `body` straight into wiped storage. Any other
// body goes through nlohmann's parser, whose copy of the plaintext is wiped too.
// The caller owns (and should wipe) `body` itself.
Result<HealthRequest> parse_health_request(std::string_view body);
Result<KeyMetadataRequest> parse_key_metadata_request(std::string_view body);
Result<EncryptRequest> parse_encrypt_request(std::string_view body);
Result<DecryptRequest> parse_decrypt_request(std::string_view body);

namespace detail {
// Which reader parses a body. Production code calls the overloads above (Auto).
//  - Auto: the fast in-place reader when the body is in its subset of JSON (every
//    body KMS sends), else nlohmann's DOM parser.
//  - Dom: always the DOM parser. Results and errors must equal Auto's for every
//    body; Dom exists so that tests and fuzzers can check exactly that.
//  - Fast: the fast reader only, for tests that a body takes the in-place path;
//    a body outside its subset is an InternalException naming this.
enum class Reader { Auto, Dom, Fast };
}  // namespace detail
Result<HealthRequest> parse_health_request(std::string_view body, detail::Reader reader);
Result<KeyMetadataRequest> parse_key_metadata_request(std::string_view body, detail::Reader reader);
Result<EncryptRequest> parse_encrypt_request(std::string_view body, detail::Reader reader);
Result<DecryptRequest> parse_decrypt_request(std::string_view body, detail::Reader reader);

struct KeyMetadataResponse {
  std::string key_spec = "AES_256";
  std::vector<std::string> key_usage;  // at most kMaxKeyUsages, e.g. ENCRYPT, DECRYPT
  bool enabled = true;                 // keyStatus ENABLED / DISABLED
};

struct EncryptResponse {
  Bytes ciphertext;
  Bytes iv;
  Bytes tag;
  Bytes ciphertext_metadata;        // omitted from the JSON when empty
  std::optional<std::string> cdiv;  // Base64, present iff requested
};

struct DecryptResponse {
  SecureBytes plaintext;
};

struct EkmFleetEntry {
  std::string id;
  std::string model;
  hsm::HealthStatus status = hsm::HealthStatus::Unavailable;
};

struct HealthResponse {
  unsigned fleet_size = 1;  // xksProxyFleetSize, > 0
  std::string proxy_vendor;
  std::string proxy_model;
  std::string ekm_vendor;
  std::vector<EkmFleetEntry> ekm_fleet;  // 1..kMaxEkmFleetEntries
};

// Response bodies (JSON text), written directly (no JSON tree); strings from the
// HSM are escaped as append_json_string() says. Never throw except std::bad_alloc.
std::string serialize(const KeyMetadataResponse& response);
std::string serialize(const EncryptResponse& response);
std::string serialize(const HealthResponse& response);
// The returned string carries the plaintext (Base64). It is allocated once at its
// final size and the Base64 is written straight into it, so no other copy exists;
// the caller must move it (not copy it) into the HTTP response and
// secure_wipe(s.data(), s.size()) once sent.
std::string serialize(const DecryptResponse& response);

// {"errorName": ..., "errorMessage": sanitize_error_message(error.message)}.
// error.detail is log-only and never appears here.
std::string error_body(const Error& error);

}  // namespace xks::api
