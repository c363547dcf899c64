// Decisions where the spec leaves room (each is also covered by a unit test):
//  - ARNs longer than 2048 characters are accepted: the spec says the proxy MUST
//    support up to 2048 and "there is no expectation for the XKS Proxy to validate
//    any information included in the requestMetadata"; the HTTP body limit bounds
//    them anyway. Rejecting would only break KMS if IAM ever raised the limit.
//  - awsPrincipalArn / kmsKeyArn, when required, must be non-empty strings, as
//    must kmsRequestId and kmsOperation (their content is never validated).
//  - GetHealthStatus without kmsRequestId/kmsOperation is a ValidationException
//    even though the spec's table does not list it for health: a body without
//    them did not come from KMS, and there is no better-fitting error.
//  - encryptionAlgorithm / ciphertextDataIntegrityValueAlgorithm with another
//    value: UnsupportedOperationException (501), the spec's error for "the
//    specified cryptographic operation is not implemented"; a missing or
//    non-string encryptionAlgorithm is a ValidationException.
//  - Sizes above our maxima (but allowed by the spec): UnsupportedOperation-
//    Exception, the spec's error for "a parameter value exceeded the maximum size
//    currently supported". Sizes the spec forbids (IV not 12/16 bytes, tag not 16,
//    ciphertextMetadata > 20): ValidationException.
//  - An empty Base64 string for an optional binary field is present-but-empty;
//    framing and CDIV treat it exactly like an absent field.
#include "xks/api/dto.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <charconv>
#include <exception>
#include <utility>

#include "xks/api/json_writer.hpp"
#include "xks/crypto/base64.hpp"

namespace xks::api {
namespace {

using Json = nlohmann::json;

enum class Kind { Health, KeyMetadata, Encrypt, Decrypt };

Error validation(std::string message) {
  return make_error(ErrorName::ValidationException, std::move(message));
}

Error unsupported(std::string message) {
  return make_error(ErrorName::UnsupportedOperationException, std::move(message));
}

// bad_alloc or a library surprise: never let an exception leave the request path.
Error internal_parse_failure(const std::exception& e) {
  return make_error(ErrorName::InternalException, "the request body could not be processed",
                    std::string("exception while parsing a request: ") + e.what());
}

std::string got(const Json& value) { return std::string(" (got ") + value.type_name() + ")"; }

std::optional<Error> load(std::string_view body, Json& doc) {
  doc = Json::parse(body.begin(), body.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return validation("the request body is not valid JSON");
  if (!doc.is_object()) return validation("the request body must be a JSON object" + got(doc));
  return std::nullopt;
}

// Null counts as absent for optional fields: a serializer that writes nulls for
// unset members means "not there", and accepting it costs nothing.
const Json* find(const Json& object, const char* key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return nullptr;
  return &*it;
}

std::optional<Error> required_string(const Json& object, const char* key, std::string_view path,
                                     std::string& out) {
  const Json* v = find(object, key);
  if (v == nullptr) return validation(std::string(path) + " is required");
  if (!v->is_string()) return validation(std::string(path) + " must be a string" + got(*v));
  const auto& s = v->get_ref<const Json::string_t&>();
  if (s.empty()) return validation(std::string(path) + " must not be empty");
  out = s;
  return std::nullopt;
}

std::optional<Error> optional_string(const Json& object, const char* key, std::string_view path,
                                     std::optional<std::string>& out) {
  const Json* v = find(object, key);
  if (v == nullptr) return std::nullopt;
  if (!v->is_string()) return validation(std::string(path) + " must be a string" + got(*v));
  out = v->get_ref<const Json::string_t&>();
  return std::nullopt;
}

std::optional<Error> parse_metadata(const Json& doc, Kind kind, RequestMetadata& out) {
  const Json* md = find(doc, "requestMetadata");
  if (md == nullptr) return validation("requestMetadata is required");
  if (!md->is_object()) return validation("requestMetadata must be a JSON object" + got(*md));

  if (auto e = required_string(*md, "kmsRequestId", "requestMetadata.kmsRequestId",
                               out.kms_request_id)) {
    return e;
  }
  if (auto e = required_string(*md, "kmsOperation", "requestMetadata.kmsOperation",
                               out.kms_operation)) {
    return e;
  }
  if (kind != Kind::Health) {
    std::string principal;
    if (auto e = required_string(*md, "awsPrincipalArn", "requestMetadata.awsPrincipalArn",
                                 principal)) {
      return e;
    }
    out.aws_principal_arn = std::move(principal);
  } else if (auto e = optional_string(*md, "awsPrincipalArn", "requestMetadata.awsPrincipalArn",
                                      out.aws_principal_arn)) {
    return e;
  }
  if (kind == Kind::Encrypt || kind == Kind::Decrypt) {
    std::string key_arn;
    if (auto e = required_string(*md, "kmsKeyArn", "requestMetadata.kmsKeyArn", key_arn)) {
      return e;
    }
    out.kms_key_arn = std::move(key_arn);
  } else if (auto e = optional_string(*md, "kmsKeyArn", "requestMetadata.kmsKeyArn",
                                      out.kms_key_arn)) {
    return e;
  }
  if (auto e = optional_string(*md, "kmsViaService", "requestMetadata.kmsViaService",
                               out.kms_via_service)) {
    return e;
  }
  if (auto e = optional_string(*md, "awsSourceVpc", "requestMetadata.awsSourceVpc",
                               out.aws_source_vpc)) {
    return e;
  }
  return optional_string(*md, "awsSourceVpce", "requestMetadata.awsSourceVpce",
                         out.aws_source_vpce);
}

constexpr std::size_t encoded_size(std::size_t decoded) noexcept {
  return 4 * ((decoded + 2) / 3);
}

struct BinarySpec {
  const char* key;
  std::size_t max_bytes;
  ErrorName too_big;  // Unsupported (our limit) or Validation (the spec's limit)
};

// Decodes a Base64 field into `out`; `present` says whether it was there at all.
std::optional<Error> binary_field(const Json& doc, const BinarySpec& spec, bool required,
                                  SecureBytes& out, bool& present) {
  present = false;
  const Json* v = find(doc, spec.key);
  if (v == nullptr) {
    if (required) return validation(std::string(spec.key) + " is required");
    return std::nullopt;
  }
  if (!v->is_string()) {
    return validation(std::string(spec.key) + " must be a Base64 string" + got(*v));
  }
  const auto& text = v->get_ref<const Json::string_t&>();
  const auto too_big = [&] {
    return make_error(spec.too_big, std::string(spec.key) + " is larger than the " +
                                        std::to_string(spec.max_bytes) +
                                        " bytes this proxy supports");
  };
  // Checked before decoding so an oversized field costs no decode work.
  if (text.size() > encoded_size(spec.max_bytes)) return too_big();
  auto decoded = crypto::base64_decode(text);
  if (!decoded) {
    return validation(std::string(spec.key) +
                      " is not valid standard Base64 (RFC 4648 section 4, with padding)");
  }
  if (decoded->size() > spec.max_bytes) return too_big();
  out = std::move(*decoded);
  present = true;
  return std::nullopt;
}

std::optional<Error> binary_field(const Json& doc, const BinarySpec& spec, bool required,
                                  Bytes& out, bool& present) {
  SecureBytes tmp;
  if (auto e = binary_field(doc, spec, required, tmp, present)) return e;
  out.assign(tmp.begin(), tmp.end());
  return std::nullopt;
}

std::optional<Error> optional_binary(const Json& doc, const BinarySpec& spec,
                                     std::optional<Bytes>& out) {
  Bytes value;
  bool present = false;
  if (auto e = binary_field(doc, spec, false, value, present)) return e;
  if (present) out = std::move(value);
  return std::nullopt;
}

std::optional<Error> check_algorithm(const Json& doc) {
  std::string algorithm;
  if (auto e = required_string(doc, "encryptionAlgorithm", "encryptionAlgorithm", algorithm)) {
    return e;
  }
  if (algorithm != "AES_GCM") {
    return unsupported("encryptionAlgorithm is not supported; XKS API v1 defines only AES_GCM");
  }
  return std::nullopt;
}

// The JSON document holds a copy of the Base64 plaintext; wipe it however the
// parse ends. (nlohmann's lexer also keeps a scratch buffer we cannot reach; the
// body limit bounds what can linger there.)
class WipeStringField {
 public:
  WipeStringField(Json& doc, const char* key) : doc_(doc), key_(key) {}
  ~WipeStringField() {
    const auto it = doc_.find(key_);
    if (it != doc_.end() && it->is_string()) {
      auto& s = it->get_ref<Json::string_t&>();
      secure_wipe(s.data(), s.size());
    }
  }
  WipeStringField(const WipeStringField&) = delete;
  WipeStringField& operator=(const WipeStringField&) = delete;

 private:
  Json& doc_;
  const char* key_;
};

constexpr BinarySpec kPlaintext{"plaintext", kMaxPlaintextBytes,
                                ErrorName::UnsupportedOperationException};
constexpr BinarySpec kCiphertext{"ciphertext", kMaxCiphertextBytes,
                                 ErrorName::UnsupportedOperationException};
constexpr BinarySpec kAad{"additionalAuthenticatedData", kMaxAadBytes,
                          ErrorName::UnsupportedOperationException};
constexpr BinarySpec kMetadata{"ciphertextMetadata", kMaxCiphertextMetadataBytes,
                               ErrorName::ValidationException};
constexpr BinarySpec kIv{"initializationVector", 16, ErrorName::ValidationException};
constexpr BinarySpec kTag{"authenticationTag", kTagBytes, ErrorName::ValidationException};

}  // namespace

Result<HealthRequest> parse_health_request(std::string_view body) try {
  Json doc;
  if (auto e = load(body, doc)) return std::move(*e);
  HealthRequest r;
  if (auto e = parse_metadata(doc, Kind::Health, r.metadata)) return std::move(*e);
  return r;
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<KeyMetadataRequest> parse_key_metadata_request(std::string_view body) try {
  Json doc;
  if (auto e = load(body, doc)) return std::move(*e);
  KeyMetadataRequest r;
  if (auto e = parse_metadata(doc, Kind::KeyMetadata, r.metadata)) return std::move(*e);
  return r;
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<EncryptRequest> parse_encrypt_request(std::string_view body) try {
  Json doc;
  if (auto e = load(body, doc)) return std::move(*e);
  const WipeStringField wipe(doc, kPlaintext.key);
  EncryptRequest r;
  if (auto e = parse_metadata(doc, Kind::Encrypt, r.metadata)) return std::move(*e);
  if (auto e = check_algorithm(doc)) return std::move(*e);
  bool present = false;
  if (auto e = binary_field(doc, kPlaintext, true, r.plaintext, present)) return std::move(*e);
  if (auto e = optional_binary(doc, kAad, r.aad)) return std::move(*e);
  std::optional<std::string> cdiv_algorithm;
  if (auto e = optional_string(doc, "ciphertextDataIntegrityValueAlgorithm",
                               "ciphertextDataIntegrityValueAlgorithm", cdiv_algorithm)) {
    return std::move(*e);
  }
  if (cdiv_algorithm) {
    if (*cdiv_algorithm != "SHA_256") {
      return unsupported(
          "ciphertextDataIntegrityValueAlgorithm is not supported; XKS API v1 defines only "
          "SHA_256");
    }
    r.want_cdiv = true;
  }
  return r;
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<DecryptRequest> parse_decrypt_request(std::string_view body) try {
  Json doc;
  if (auto e = load(body, doc)) return std::move(*e);
  DecryptRequest r;
  if (auto e = parse_metadata(doc, Kind::Decrypt, r.metadata)) return std::move(*e);
  if (auto e = check_algorithm(doc)) return std::move(*e);
  bool present = false;
  if (auto e = binary_field(doc, kCiphertext, true, r.ciphertext, present)) return std::move(*e);
  if (auto e = binary_field(doc, kIv, true, r.iv, present)) return std::move(*e);
  if (r.iv.size() != 12 && r.iv.size() != 16) {
    return validation("initializationVector must be 12 or 16 bytes (got " +
                      std::to_string(r.iv.size()) + ")");
  }
  if (auto e = binary_field(doc, kTag, true, r.tag, present)) return std::move(*e);
  if (r.tag.size() != kTagBytes) {
    return validation("authenticationTag must be 16 bytes (got " + std::to_string(r.tag.size()) +
                      ")");
  }
  if (auto e = optional_binary(doc, kAad, r.aad)) return std::move(*e);
  if (auto e = optional_binary(doc, kMetadata, r.ciphertext_metadata)) return std::move(*e);
  return r;
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

// ---------------------------------------------------------------------------
// Responses: each fixed-schema body is written straight into one string. The
// bytes are exactly those of the nlohmann::json objects this replaced (members
// in std::map order, i.e. sorted by name, except the Encrypt response, which was
// always written by hand), which the unit tests check against that code.

namespace {

void append_base64_field(std::string& out, std::string_view name, ByteView value) {
  out.push_back('"');
  out.append(name);
  out.append("\":\"");
  const std::size_t at = out.size();
  out.resize(at + base64_encoded_size(value.size()));
  base64_encode_to(value, out.data() + at);
  out.push_back('"');
}

void append_unsigned(std::string& out, unsigned value) {
  char digits[16];
  const auto r = std::to_chars(digits, digits + sizeof digits, value);
  out.append(digits, static_cast<std::size_t>(r.ptr - digits));
}

}  // namespace

std::string serialize(const KeyMetadataResponse& response) {
  std::string out;
  out.reserve(64 + response.key_spec.size() + 12 * response.key_usage.size());
  out.append("{\"keySpec\":");
  append_json_string(out, response.key_spec);
  out.append(response.enabled ? ",\"keyStatus\":\"ENABLED\",\"keyUsage\":["
                              : ",\"keyStatus\":\"DISABLED\",\"keyUsage\":[");
  for (std::size_t i = 0; i < response.key_usage.size() && i < kMaxKeyUsages; ++i) {
    if (i != 0) out.push_back(',');
    append_json_string(out, response.key_usage[i]);
  }
  out.append("]}");
  return out;
}

std::string serialize(const EncryptResponse& response) {
  // Base64 needs no JSON escaping. Sized up front: one allocation.
  constexpr std::size_t kFixed = sizeof "{'ciphertext':'','initializationVector':'',"
                                        "'authenticationTag':'',"
                                        "'ciphertextMetadata':'',"
                                        "'ciphertextDataIntegrityValue':''}";
  std::string out;
  out.reserve(kFixed + base64_encoded_size(response.ciphertext.size()) +
              base64_encoded_size(response.iv.size()) + base64_encoded_size(response.tag.size()) +
              base64_encoded_size(response.ciphertext_metadata.size()) +
              (response.cdiv ? response.cdiv->size() : 0));
  out.push_back('{');
  append_base64_field(out, "ciphertext", response.ciphertext);
  out.push_back(',');
  append_base64_field(out, "initializationVector", response.iv);
  out.push_back(',');
  append_base64_field(out, "authenticationTag", response.tag);
  if (!response.ciphertext_metadata.empty()) {
    out.push_back(',');
    append_base64_field(out, "ciphertextMetadata", response.ciphertext_metadata);
  }
  if (response.cdiv) {
    out.append(",\"ciphertextDataIntegrityValue\":\"");
    out.append(*response.cdiv);
    out.push_back('"');
  }
  out.push_back('}');
  return out;
}

std::string serialize(const DecryptResponse& response) {
  constexpr std::string_view kHead = "{\"plaintext\":\"";
  constexpr std::string_view kTail = "\"}";
  // Allocated once at its final size and the Base64 written in place: the only
  // copy of the encoded plaintext is the one the caller wipes after sending.
  // (Never below 16 characters, so never in the small-string buffer.)
  std::string out(kHead.size() + base64_encoded_size(response.plaintext.size()) + kTail.size(),
                  '\0');
  char* p = out.data();
  p = std::copy(kHead.begin(), kHead.end(), p);
  p = base64_encode_to(response.plaintext, p);
  std::copy(kTail.begin(), kTail.end(), p);
  return out;
}

std::string serialize(const HealthResponse& response) {
  std::string out;
  std::size_t estimate = 160 + response.proxy_vendor.size() + response.proxy_model.size() +
                         response.ekm_vendor.size();
  for (const auto& e : response.ekm_fleet) estimate += 56 + e.id.size() + e.model.size();
  out.reserve(estimate);
  out.append("{\"ekmFleetDetails\":[");
  for (std::size_t i = 0; i < response.ekm_fleet.size() && i < kMaxEkmFleetEntries; ++i) {
    const auto& e = response.ekm_fleet[i];
    out.append(i == 0 ? "{\"healthStatus\":" : ",{\"healthStatus\":");
    append_json_string(out, hsm::to_string(e.status));
    out.append(",\"id\":");
    append_json_string(out, e.id);
    out.append(",\"model\":");
    append_json_string(out, e.model);
    out.push_back('}');
  }
  out.append("],\"ekmVendor\":");
  append_json_string(out, response.ekm_vendor);
  out.append(",\"xksProxyFleetSize\":");
  append_unsigned(out, response.fleet_size);
  out.append(",\"xksProxyModel\":");
  append_json_string(out, response.proxy_model);
  out.append(",\"xksProxyVendor\":");
  append_json_string(out, response.proxy_vendor);
  out.push_back('}');
  return out;
}

std::string error_body(const Error& error) {
  const std::string message = sanitize_error_message(error.message);
  const std::string_view name = to_string(error.name);
  std::string out;
  out.reserve(36 + message.size() + name.size());
  out.append("{\"errorMessage\":");
  append_json_string(out, message);
  out.append(",\"errorName\":");
  append_json_string(out, name);
  out.push_back('}');
  return out;
}

}  // namespace xks::api
