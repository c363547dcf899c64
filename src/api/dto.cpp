// Decisions where the spec leaves room (each is also covered by a unit test):
//  - ARNs longer than 2048 characters are accepted: the spec says the proxy MUST
//    support up to 2048 and "there is no expectation for the XKS Proxy to validate
//    any information included in the requestMetadata"; the HTTP body limit bounds
//    them anyway. Rejecting would only break KMS if IAM ever raised the limit.
//  - awsPrincipalArn / kmsKeyArn, when required, must be non-empty strings, as
//    must kmsOperation (its content is never validated). kmsRequestId must be a
//    string and is otherwise opaque: the spec says the proxy MUST NOT validate
//    it, so any string value, the empty one included, is accepted.
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
//
// How a body is read (measured: the JSON layer was a tenth of the proxy's CPU per
// request, most of it nlohmann's lexer copying every character of the Base64
// fields into its token buffer). Both readers below fill the same Fields: for
// each field this proxy knows, its JSON type and, for a string, a view of its
// text. One validation (build_*) turns Fields into a request, so every
// errorName and errorMessage comes from one place whichever reader ran.
//  - FastScanner accepts a strict subset of JSON: an object whose strings are
//    printable ASCII without escapes, values that are such strings, objects,
//    arrays, true, false or null, nested at most kMaxFastDepth deep, and no known
//    key twice: every body KMS sends (identifiers, ARNs and Base64 are ASCII,
//    and requestMetadata holds only strings). Its string views point into the
//    body itself, so nothing is copied before validation, and the Base64
//    plaintext of an Encrypt request is decoded straight from the body into
//    wiped storage (no other copy of it exists).
//  - Anything else (escapes, non-ASCII, numbers, a duplicated known key, deeper
//    nesting, invalid JSON) is read again by nlohmann's DOM parser exactly as
//    before, which then decides validity, duplicates (the last one wins) and
//    types. A body in the subset is valid JSON and means the same to both
//    readers, which the unit tests check differentially.
// (nlohmann's SAX interface would only have saved the tree: a profile of the DOM
// parse of a 4300-byte Encrypt body put the lexer at 83% of it, the tree at ~5%.)
#include "xks/api/dto.hpp"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <cstring>
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

// ---------------------------------------------------------------------------
// The fields of a body, as either reader found them.

// JSON types, named in messages as nlohmann's type_name() names them.
enum class Type : std::uint8_t { Absent, Null, Boolean, Number, String, Array, Object, Other };

std::string_view type_name(Type t) noexcept {
  switch (t) {
    case Type::Absent:
    case Type::Null: return "null";
    case Type::Boolean: return "boolean";
    case Type::Number: return "number";
    case Type::String: return "string";
    case Type::Array: return "array";
    case Type::Object: return "object";
    case Type::Other: break;
  }
  return "binary";
}

struct Value {
  Type type = Type::Absent;
  std::string_view text;  // the string's value when type == String

  // Null counts as absent for optional fields: a serializer that writes nulls for
  // unset members means "not there", and accepting it costs nothing.
  bool present() const noexcept { return type != Type::Absent && type != Type::Null; }
};

std::string got(Type t) { return std::string(" (got ") + std::string(type_name(t)) + ")"; }

// Fields of the body's top level, then of requestMetadata (Appendix B).
enum Top : std::size_t {
  kRequestMetadata,
  kEncryptionAlgorithm,
  kPlaintext,
  kAad,
  kCdivAlgorithm,
  kCiphertext,
  kIv,
  kTag,
  kCiphertextMetadata,
  kTopCount
};
constexpr std::array<std::string_view, kTopCount> kTopNames = {
    "requestMetadata",
    "encryptionAlgorithm",
    "plaintext",
    "additionalAuthenticatedData",
    "ciphertextDataIntegrityValueAlgorithm",
    "ciphertext",
    "initializationVector",
    "authenticationTag",
    "ciphertextMetadata"};

enum Md : std::size_t {
  kRequestId,
  kOperation,
  kPrincipalArn,
  kKeyArn,
  kViaService,
  kSourceVpc,
  kSourceVpce,
  kMdCount
};
constexpr std::array<std::string_view, kMdCount> kMdNames = {
    "kmsRequestId",  "kmsOperation", "awsPrincipalArn", "kmsKeyArn",
    "kmsViaService", "awsSourceVpc", "awsSourceVpce"};
constexpr std::array<std::string_view, kMdCount> kMdPaths = {
    "requestMetadata.kmsRequestId",    "requestMetadata.kmsOperation",
    "requestMetadata.awsPrincipalArn", "requestMetadata.kmsKeyArn",
    "requestMetadata.kmsViaService",   "requestMetadata.awsSourceVpc",
    "requestMetadata.awsSourceVpce"};

struct Fields {
  std::array<Value, kTopCount> top;
  std::array<Value, kMdCount> md;
};

template <std::size_t N>
std::size_t slot_of(const std::array<std::string_view, N>& names, std::string_view key) noexcept {
  for (std::size_t i = 0; i < N; ++i) {
    if (names[i] == key) return i;
  }
  return N;
}

// ---------------------------------------------------------------------------
// The fast reader (see the top of this file for the subset it accepts).

class FastScanner {
 public:
  explicit FastScanner(std::string_view body) noexcept
      : p_(body.data()), end_(body.data() + body.size()) {}

  // False: the body is not in the subset (maybe not even JSON); use the DOM
  // parser. `out` is then partly filled and must be discarded.
  bool scan(Fields& out) noexcept {
    skip_ws();
    if (!eat('{')) return false;
    if (!members(out.top, kTopNames, &out)) return false;
    skip_ws();
    return p_ == end_;
  }

 private:
  static constexpr int kMaxFastDepth = 16;

  // Members of an object whose '{' was just read. With `fields`, this is the
  // top level, and a requestMetadata object is read into fields->md.
  template <std::size_t N>
  bool members(std::array<Value, N>& slots, const std::array<std::string_view, N>& names,
               Fields* fields) noexcept {
    skip_ws();
    if (eat('}')) return true;
    for (;;) {
      skip_ws();
      std::string_view key;
      if (!eat('"') || !string(key)) return false;
      skip_ws();
      if (!eat(':')) return false;
      skip_ws();
      const std::size_t slot = slot_of(names, key);
      Value v;
      if (slot < N) {
        // A known key twice: nlohmann keeps the last one; let it decide.
        if (slots[slot].type != Type::Absent) return false;
        if (fields != nullptr && slot == kRequestMetadata && p_ != end_ && *p_ == '{') {
          ++p_;
          if (!members(fields->md, kMdNames, nullptr)) return false;
          v.type = Type::Object;
        } else if (!value(v, 1)) {
          return false;
        }
        slots[slot] = v;
      } else if (!value(v, 1)) {
        return false;
      }
      skip_ws();
      if (eat(',')) continue;
      return eat('}');
    }
  }

  bool value(Value& v, int depth) noexcept {
    if (p_ == end_) return false;
    switch (*p_) {
      case '"':
        ++p_;
        v.type = Type::String;
        return string(v.text);
      case '{':
        ++p_;
        v.type = Type::Object;
        return skip_container('}', depth + 1);
      case '[':
        ++p_;
        v.type = Type::Array;
        return skip_container(']', depth + 1);
      case 't': v.type = Type::Boolean; return literal("true");
      case 'f': v.type = Type::Boolean; return literal("false");
      case 'n': v.type = Type::Null; return literal("null");
      default: return false;  // numbers, and anything that is not JSON
    }
  }

  // The rest of an object or array nobody reads (an unknown field's value).
  bool skip_container(char close, int depth) noexcept {
    if (depth > kMaxFastDepth) return false;
    skip_ws();
    if (eat(close)) return true;
    for (;;) {
      skip_ws();
      if (close == '}') {
        std::string_view key;
        if (!eat('"') || !string(key)) return false;
        skip_ws();
        if (!eat(':')) return false;
        skip_ws();
      }
      Value ignored;
      if (!value(ignored, depth)) return false;
      skip_ws();
      if (eat(',')) continue;
      return eat(close);
    }
  }

  // True if any byte of the 8 in `x` is '"', '\\', below 0x20 or above 0x7e
  // (word-at-a-time tests from "Bit Twiddling Hacks"; exact for "any byte").
  static bool special_byte_in(std::uint64_t x) noexcept {
    constexpr std::uint64_t kOnes = 0x0101010101010101u, kHigh = 0x8080808080808080u;
    const auto has_zero = [](std::uint64_t v) { return (v - kOnes) & ~v & kHigh; };
    const std::uint64_t quote = has_zero(x ^ (kOnes * '"'));
    const std::uint64_t backslash = has_zero(x ^ (kOnes * '\\'));
    const std::uint64_t control = (x - kOnes * 0x20) & ~x & kHigh;
    const std::uint64_t high = ((x + kOnes * (127 - 0x7e)) | x) & kHigh;
    return (quote | backslash | control | high) != 0;
  }

  // The rest of a string whose '"' was just read: printable ASCII, no escapes.
  // Base64 fields are most of a body, so skip 8 ordinary bytes at a time.
  bool string(std::string_view& out) noexcept {
    const char* const start = p_;
    while (end_ - p_ >= 8) {
      std::uint64_t x = 0;
      std::memcpy(&x, p_, sizeof x);
      if (special_byte_in(x)) break;
      p_ += 8;
    }
    while (p_ != end_) {
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        out = std::string_view(start, static_cast<std::size_t>(p_ - start));
        ++p_;
        return true;
      }
      if (c < 0x20 || c > 0x7e || c == '\\') return false;
      ++p_;
    }
    return false;
  }

  bool literal(std::string_view word) noexcept {
    if (static_cast<std::size_t>(end_ - p_) < word.size() ||
        std::string_view(p_, word.size()) != word) {
      return false;
    }
    p_ += word.size();
    return true;
  }

  void skip_ws() noexcept {  // JSON's four whitespace characters, as nlohmann's lexer
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }

  bool eat(char c) noexcept {
    if (p_ == end_ || *p_ != c) return false;
    ++p_;
    return true;
  }

  const char* p_;
  const char* const end_;
};

// ---------------------------------------------------------------------------
// The DOM reader: everything outside the fast subset, as before.

Type type_of(const Json& j) noexcept {
  switch (j.type()) {
    case Json::value_t::null: return Type::Null;
    case Json::value_t::boolean: return Type::Boolean;
    case Json::value_t::number_integer:
    case Json::value_t::number_unsigned:
    case Json::value_t::number_float: return Type::Number;
    case Json::value_t::string: return Type::String;
    case Json::value_t::array: return Type::Array;
    case Json::value_t::object: return Type::Object;
    case Json::value_t::binary:
    case Json::value_t::discarded: break;
  }
  return Type::Other;  // not produced by parsing JSON text
}

template <std::size_t N>
void fill(const Json& object, const std::array<std::string_view, N>& names,
          std::array<Value, N>& out) {
  for (std::size_t i = 0; i < N; ++i) {
    const auto it = object.find(names[i]);
    if (it == object.end()) continue;
    const Json& v = *it;
    out[i].type = type_of(v);
    if (v.is_string()) out[i].text = v.get_ref<const Json::string_t&>();
  }
}

std::optional<Error> load(std::string_view body, Json& doc, Fields& out) {
  doc = Json::parse(body.begin(), body.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded()) return validation("the request body is not valid JSON");
  if (!doc.is_object()) {
    return validation("the request body must be a JSON object" + got(type_of(doc)));
  }
  fill(doc, kTopNames, out.top);
  const auto md = doc.find(kTopNames[kRequestMetadata]);
  if (md != doc.end() && md->is_object()) fill(*md, kMdNames, out.md);
  return std::nullopt;
}

// The document holds a copy of the Base64 plaintext; wipe it however the parse
// ends. (nlohmann's lexer also keeps a scratch buffer we cannot reach; the body
// limit bounds what can linger there. Bodies KMS sends never come this way.)
class WipePlaintext {
 public:
  explicit WipePlaintext(Json& doc) noexcept : doc_(doc) {}
  ~WipePlaintext() {
    if (!doc_.is_object()) return;
    const auto it = doc_.find(kTopNames[kPlaintext]);
    if (it != doc_.end() && it->is_string()) {
      auto& s = it->get_ref<Json::string_t&>();
      secure_wipe(s.data(), s.size());
    }
  }
  WipePlaintext(const WipePlaintext&) = delete;
  WipePlaintext& operator=(const WipePlaintext&) = delete;

 private:
  Json& doc_;
};

// Reads `body` with the fast reader if it can, else with the DOM reader, and
// hands the fields to `build`, which turns them into a request or an error.
template <class Build>
auto read_and_build(std::string_view body, detail::Reader reader, Build&& build)
    -> decltype(build(std::declval<const Fields&>())) {
  if (reader != detail::Reader::Dom) {
    Fields fields;
    if (FastScanner(body).scan(fields)) return build(fields);
    if (reader == detail::Reader::Fast) {
      return make_error(ErrorName::InternalException,
                        "the body is outside the fast reader's subset");
    }
  }
  Fields fields;
  Json doc;
  const WipePlaintext wipe(doc);
  if (auto e = load(body, doc, fields)) return std::move(*e);
  return build(fields);
}

// ---------------------------------------------------------------------------
// Validation, shared by both readers.

std::optional<Error> required_string(const Value& v, std::string_view path, std::string& out) {
  if (!v.present()) return validation(std::string(path) + " is required");
  if (v.type != Type::String) {
    return validation(std::string(path) + " must be a string" + got(v.type));
  }
  if (v.text.empty()) return validation(std::string(path) + " must not be empty");
  out.assign(v.text);
  return std::nullopt;
}

// A required string whose value is opaque: any string, even empty, is accepted.
std::optional<Error> required_opaque_string(const Value& v, std::string_view path,
                                            std::string& out) {
  if (!v.present()) return validation(std::string(path) + " is required");
  if (v.type != Type::String) {
    return validation(std::string(path) + " must be a string" + got(v.type));
  }
  out.assign(v.text);
  return std::nullopt;
}

std::optional<Error> optional_string(const Value& v, std::string_view path,
                                     std::optional<std::string>& out) {
  if (!v.present()) return std::nullopt;
  if (v.type != Type::String) {
    return validation(std::string(path) + " must be a string" + got(v.type));
  }
  out.emplace(v.text);
  return std::nullopt;
}

std::optional<Error> parse_metadata(const Fields& f, Kind kind, RequestMetadata& out) {
  const Value& md = f.top[kRequestMetadata];
  if (!md.present()) return validation("requestMetadata is required");
  if (md.type != Type::Object) {
    return validation("requestMetadata must be a JSON object" + got(md.type));
  }

  if (auto e = required_opaque_string(f.md[kRequestId], kMdPaths[kRequestId], out.kms_request_id)) {
    return e;
  }
  if (auto e = required_string(f.md[kOperation], kMdPaths[kOperation], out.kms_operation)) {
    return e;
  }
  if (kind != Kind::Health) {
    std::string principal;
    if (auto e = required_string(f.md[kPrincipalArn], kMdPaths[kPrincipalArn], principal)) {
      return e;
    }
    out.aws_principal_arn = std::move(principal);
  } else if (auto e = optional_string(f.md[kPrincipalArn], kMdPaths[kPrincipalArn],
                                      out.aws_principal_arn)) {
    return e;
  }
  if (kind == Kind::Encrypt || kind == Kind::Decrypt) {
    std::string key_arn;
    if (auto e = required_string(f.md[kKeyArn], kMdPaths[kKeyArn], key_arn)) return e;
    out.kms_key_arn = std::move(key_arn);
  } else if (auto e = optional_string(f.md[kKeyArn], kMdPaths[kKeyArn], out.kms_key_arn)) {
    return e;
  }
  if (auto e = optional_string(f.md[kViaService], kMdPaths[kViaService], out.kms_via_service)) {
    return e;
  }
  if (auto e = optional_string(f.md[kSourceVpc], kMdPaths[kSourceVpc], out.aws_source_vpc)) {
    return e;
  }
  return optional_string(f.md[kSourceVpce], kMdPaths[kSourceVpce], out.aws_source_vpce);
}

constexpr std::size_t encoded_size(std::size_t decoded) noexcept { return 4 * ((decoded + 2) / 3); }

struct BinarySpec {
  Top field;
  std::size_t max_bytes;
  ErrorName too_big;  // Unsupported (our limit) or Validation (the spec's limit)
};

// Decodes a Base64 field into `out`; `present` says whether it was there at all.
std::optional<Error> binary_field(const Fields& f, const BinarySpec& spec, bool required,
                                  SecureBytes& out, bool& present) {
  present = false;
  const Value& v = f.top[spec.field];
  const std::string_view key = kTopNames[spec.field];
  if (!v.present()) {
    if (required) return validation(std::string(key) + " is required");
    return std::nullopt;
  }
  if (v.type != Type::String) {
    return validation(std::string(key) + " must be a Base64 string" + got(v.type));
  }
  const auto too_big = [&] {
    return make_error(spec.too_big, std::string(key) + " is larger than the " +
                                        std::to_string(spec.max_bytes) +
                                        " bytes this proxy supports");
  };
  // Checked before decoding so an oversized field costs no decode work.
  if (v.text.size() > encoded_size(spec.max_bytes)) return too_big();
  auto decoded = crypto::base64_decode(v.text);
  if (!decoded) {
    return validation(std::string(key) +
                      " is not valid standard Base64 (RFC 4648 section 4, with padding)");
  }
  if (decoded->size() > spec.max_bytes) return too_big();
  out = std::move(*decoded);
  present = true;
  return std::nullopt;
}

std::optional<Error> binary_field(const Fields& f, const BinarySpec& spec, bool required,
                                  Bytes& out, bool& present) {
  SecureBytes tmp;
  if (auto e = binary_field(f, spec, required, tmp, present)) return e;
  out.assign(tmp.begin(), tmp.end());
  return std::nullopt;
}

std::optional<Error> optional_binary(const Fields& f, const BinarySpec& spec,
                                     std::optional<Bytes>& out) {
  Bytes value;
  bool present = false;
  if (auto e = binary_field(f, spec, false, value, present)) return e;
  if (present) out = std::move(value);
  return std::nullopt;
}

std::optional<Error> check_algorithm(const Fields& f) {
  const Value& v = f.top[kEncryptionAlgorithm];
  if (!v.present()) return validation("encryptionAlgorithm is required");
  if (v.type != Type::String) {
    return validation("encryptionAlgorithm must be a string" + got(v.type));
  }
  if (v.text.empty()) return validation("encryptionAlgorithm must not be empty");
  if (v.text != "AES_GCM") {
    return unsupported("encryptionAlgorithm is not supported; XKS API v1 defines only AES_GCM");
  }
  return std::nullopt;
}

constexpr BinarySpec kPlaintextSpec{kPlaintext, kMaxPlaintextBytes,
                                    ErrorName::UnsupportedOperationException};
constexpr BinarySpec kCiphertextSpec{kCiphertext, kMaxCiphertextBytes,
                                     ErrorName::UnsupportedOperationException};
constexpr BinarySpec kAadSpec{kAad, kMaxAadBytes, ErrorName::UnsupportedOperationException};
constexpr BinarySpec kMetadataSpec{kCiphertextMetadata, kMaxCiphertextMetadataBytes,
                                   ErrorName::ValidationException};
// An IV or tag too long to be one cannot verify: InvalidCiphertextException.
constexpr BinarySpec kIvSpec{kIv, 16, ErrorName::InvalidCiphertextException};
constexpr BinarySpec kTagSpec{kTag, kTagBytes, ErrorName::InvalidCiphertextException};

Result<HealthRequest> build_health(const Fields& f) {
  HealthRequest r;
  if (auto e = parse_metadata(f, Kind::Health, r.metadata)) return std::move(*e);
  return r;
}

Result<KeyMetadataRequest> build_key_metadata(const Fields& f) {
  KeyMetadataRequest r;
  if (auto e = parse_metadata(f, Kind::KeyMetadata, r.metadata)) return std::move(*e);
  return r;
}

Result<EncryptRequest> build_encrypt(const Fields& f) {
  EncryptRequest r;
  if (auto e = parse_metadata(f, Kind::Encrypt, r.metadata)) return std::move(*e);
  if (auto e = check_algorithm(f)) return std::move(*e);
  bool present = false;
  if (auto e = binary_field(f, kPlaintextSpec, true, r.plaintext, present)) return std::move(*e);
  if (auto e = optional_binary(f, kAadSpec, r.aad)) return std::move(*e);
  std::optional<std::string> cdiv_algorithm;
  if (auto e = optional_string(f.top[kCdivAlgorithm], kTopNames[kCdivAlgorithm], cdiv_algorithm)) {
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
}

Result<DecryptRequest> build_decrypt(const Fields& f) {
  DecryptRequest r;
  if (auto e = parse_metadata(f, Kind::Decrypt, r.metadata)) return std::move(*e);
  if (auto e = check_algorithm(f)) return std::move(*e);
  bool present = false;
  if (auto e = binary_field(f, kCiphertextSpec, true, r.ciphertext, present)) return std::move(*e);
  // An IV or tag of the wrong size, or none, is a ciphertext that cannot verify:
  // the spec's InvalidCiphertextException, not a malformed request.
  const auto not_verifiable = [](std::string message) {
    return make_error(ErrorName::InvalidCiphertextException, std::move(message));
  };
  if (auto e = binary_field(f, kIvSpec, false, r.iv, present)) return std::move(*e);
  if (!present) return not_verifiable("initializationVector is required");
  if (r.iv.size() != 12 && r.iv.size() != 16) {
    return not_verifiable("initializationVector must be 12 or 16 bytes (got " +
                          std::to_string(r.iv.size()) + ")");
  }
  if (auto e = binary_field(f, kTagSpec, false, r.tag, present)) return std::move(*e);
  if (!present) return not_verifiable("authenticationTag is required");
  if (r.tag.size() != kTagBytes) {
    return not_verifiable("authenticationTag must be 16 bytes (got " +
                          std::to_string(r.tag.size()) + ")");
  }
  if (auto e = optional_binary(f, kAadSpec, r.aad)) return std::move(*e);
  if (auto e = optional_binary(f, kMetadataSpec, r.ciphertext_metadata)) return std::move(*e);
  return r;
}

}  // namespace

Result<HealthRequest> parse_health_request(std::string_view body, detail::Reader reader) try {
  return read_and_build(body, reader, build_health);
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<KeyMetadataRequest> parse_key_metadata_request(std::string_view body,
                                                      detail::Reader reader) try {
  return read_and_build(body, reader, build_key_metadata);
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<EncryptRequest> parse_encrypt_request(std::string_view body, detail::Reader reader) try {
  return read_and_build(body, reader, build_encrypt);
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<DecryptRequest> parse_decrypt_request(std::string_view body, detail::Reader reader) try {
  return read_and_build(body, reader, build_decrypt);
} catch (const std::exception& e) {
  return internal_parse_failure(e);
}

Result<HealthRequest> parse_health_request(std::string_view body) {
  return parse_health_request(body, detail::Reader::Auto);
}
Result<KeyMetadataRequest> parse_key_metadata_request(std::string_view body) {
  return parse_key_metadata_request(body, detail::Reader::Auto);
}
Result<EncryptRequest> parse_encrypt_request(std::string_view body) {
  return parse_encrypt_request(body, detail::Reader::Auto);
}
Result<DecryptRequest> parse_decrypt_request(std::string_view body) {
  return parse_decrypt_request(body, detail::Reader::Auto);
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
  std::size_t estimate =
      160 + response.proxy_vendor.size() + response.proxy_model.size() + response.ekm_vendor.size();
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
