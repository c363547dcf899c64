#include "xks/auth/sigv4.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <map>
#include <stdexcept>

#include "signing_key.hpp"
#include "xks/auth/canonical.hpp"
#include "xks/crypto/digest.hpp"
#include "xks/crypto/hex.hpp"

namespace xks::auth {
namespace {

namespace http = boost::beast::http;
using std::chrono::system_clock;

constexpr std::size_t kMaxAccessKeyIdLength = 128;
constexpr std::size_t kMaxRegionLength = 64;
constexpr std::size_t kMaxServiceLength = 64;
constexpr std::size_t kMaxSignedHeaders = 64;
constexpr std::size_t kMaxHeaderNameLength = 128;

Error fail(std::string message) {
  return make_error(ErrorName::AuthenticationFailedException, std::move(message));
}

bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
bool is_lower_alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || is_digit(c); }
bool is_alnum(char c) noexcept { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

template <class Pred>
bool all_of(std::string_view s, Pred pred) {
  return std::all_of(s.begin(), s.end(), pred);
}

// RFC 9110 token characters, lower case only: SigV4 lists header names in lower case.
bool is_lower_token_char(char c) noexcept {
  if (is_lower_alnum(c)) return true;
  constexpr std::string_view kSpecials = "!#$%&'*+-.^_`|~";
  return kSpecials.find(c) != std::string_view::npos;
}

std::string_view trim(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// The three parts of "AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...".
struct Authorization {
  std::string_view access_key_id;
  std::string_view scope;  // date/region/service/aws4_request, verbatim
  std::string_view date, region, service;
  std::string_view signed_headers;  // verbatim: it is part of the canonical request
  std::vector<std::string_view> header_names;
  std::array<std::uint8_t, crypto::kSha256Size> signature{};
};

Result<void> parse_credential(std::string_view value, Authorization& out,
                              std::string_view expected_service) {
  std::array<std::string_view, 5> parts;
  std::size_t n = 0;
  std::size_t pos = 0;
  while (true) {
    const std::size_t slash = value.find('/', pos);
    if (n == parts.size()) return fail("malformed Credential: expected AKID/yyyymmdd/region/service/aws4_request");
    parts[n++] = value.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
    if (slash == std::string_view::npos) break;
    pos = slash + 1;
  }
  if (n != parts.size()) {
    return fail("malformed Credential: expected AKID/yyyymmdd/region/service/aws4_request");
  }
  const auto [akid, date, region, service, terminator] = parts;
  if (akid.empty() || akid.size() > kMaxAccessKeyIdLength || !all_of(akid, is_alnum)) {
    return fail("malformed Credential: the access key id is empty, too long or not alphanumeric");
  }
  if (date.size() != 8 || !all_of(date, is_digit)) {
    return fail("malformed Credential: the scope date is not yyyymmdd");
  }
  if (region.empty() || region.size() > kMaxRegionLength ||
      !all_of(region, [](char c) { return is_lower_alnum(c) || c == '-'; })) {
    return fail("malformed Credential: the region is empty or not of a-z 0-9 -");
  }
  if (service != expected_service) {
    if (!service.empty() && service.size() <= kMaxServiceLength &&
        all_of(service, [](char c) { return is_alnum(c) || c == '-' || c == '_'; })) {
      return fail("wrong service in the credential scope: \"" + std::string(service) +
                  "\", expected \"" + std::string(expected_service) + "\"");
    }
    return fail("wrong service in the credential scope, expected \"" +
                std::string(expected_service) + "\"");
  }
  if (terminator != "aws4_request") {
    return fail("malformed Credential: the scope does not end with aws4_request");
  }
  out.access_key_id = akid;
  out.date = date;
  out.region = region;
  out.service = service;
  out.scope = value.substr(akid.size() + 1);
  return {};
}

Result<void> parse_signed_headers(std::string_view value, Authorization& out) {
  if (value.empty()) return fail("malformed SignedHeaders: empty");
  std::size_t pos = 0;
  while (pos <= value.size()) {
    const std::size_t semi = std::min(value.find(';', pos), value.size());
    const std::string_view name = value.substr(pos, semi - pos);
    pos = semi + 1;
    if (name.empty() || name.size() > kMaxHeaderNameLength || !all_of(name, is_lower_token_char)) {
      return fail("malformed SignedHeaders: header names must be lower-case tokens separated by ';'");
    }
    if (std::find(out.header_names.begin(), out.header_names.end(), name) != out.header_names.end()) {
      return fail("malformed SignedHeaders: \"" + std::string(name) + "\" is listed twice");
    }
    if (out.header_names.size() == kMaxSignedHeaders) {
      return fail("malformed SignedHeaders: more than 64 headers");
    }
    if (name == "authorization") {
      return fail("malformed SignedHeaders: the Authorization header cannot sign itself");
    }
    out.header_names.push_back(name);
  }
  const auto listed = [&](std::string_view n) {
    return std::find(out.header_names.begin(), out.header_names.end(), n) != out.header_names.end();
  };
  if (!listed("host")) return fail("SignedHeaders must include host");
  if (!listed("x-amz-date")) return fail("SignedHeaders must include x-amz-date");
  out.signed_headers = value;
  return {};
}

Result<Authorization> parse_authorization(std::string_view header, std::string_view service) {
  if (header.substr(0, kAlgorithm.size()) != kAlgorithm || header.size() == kAlgorithm.size() ||
      header[kAlgorithm.size()] != ' ') {
    return fail("the Authorization header is not AWS4-HMAC-SHA256 (SigV4)");
  }
  std::string_view rest = header.substr(kAlgorithm.size());
  Authorization out;
  bool have_credential = false, have_signed_headers = false, have_signature = false;
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    const std::size_t comma = std::min(rest.find(',', pos), rest.size());
    const std::string_view part = trim(rest.substr(pos, comma - pos));
    pos = comma + 1;
    const std::size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return fail("malformed Authorization header: expected Credential=..., SignedHeaders=..., Signature=...");
    }
    const std::string_view name = part.substr(0, eq);
    const std::string_view value = part.substr(eq + 1);
    const auto once = [&](bool& seen) -> Result<void> {
      if (seen) return fail("malformed Authorization header: " + std::string(name) + " appears twice");
      seen = true;
      return {};
    };
    if (name == "Credential") {
      if (auto r = once(have_credential); !r) return std::move(r).error();
      if (auto r = parse_credential(value, out, service); !r) return std::move(r).error();
    } else if (name == "SignedHeaders") {
      if (auto r = once(have_signed_headers); !r) return std::move(r).error();
      if (auto r = parse_signed_headers(value, out); !r) return std::move(r).error();
    } else if (name == "Signature") {
      if (auto r = once(have_signature); !r) return std::move(r).error();
      if (!crypto::hex_decode_into(value, out.signature)) {
        return fail("malformed Signature: expected 64 hex digits");
      }
    } else if (!name.empty() && name.size() <= 32 && all_of(name, is_alnum)) {
      return fail("malformed Authorization header: unknown part \"" + std::string(name) + "\"");
    } else {
      return fail("malformed Authorization header: unknown part");
    }
  }
  if (!have_credential) return fail("malformed Authorization header: Credential is missing");
  if (!have_signed_headers) return fail("malformed Authorization header: SignedHeaders is missing");
  if (!have_signature) return fail("malformed Authorization header: Signature is missing");
  return out;
}

// The value of a header that must appear at most once; nullopt-like state via flags.
enum class Single { Absent, One, Many };
Single single_header(const http::fields& headers, std::string_view name, std::string_view& value) {
  const auto range = headers.equal_range(name);
  if (range.first == range.second) return Single::Absent;
  if (std::next(range.first) != range.second) return Single::Many;
  value = range.first->value();
  return Single::One;
}

// "yyyymmddThhmmssZ" -> time point; false if malformed or not a real date.
// Seconds, not system_clock's nanoseconds: years 0000-9999 overflow the latter.
bool parse_amz_date(std::string_view s, std::chrono::sys_seconds& out) {
  if (s.size() != 16 || s[8] != 'T' || s[15] != 'Z') return false;
  const auto num = [&](std::size_t at, std::size_t len, int& v) {
    v = 0;
    for (std::size_t i = at; i < at + len; ++i) {
      if (!is_digit(s[i])) return false;
      v = v * 10 + (s[i] - '0');
    }
    return true;
  };
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, se = 0;
  if (!num(0, 4, y) || !num(4, 2, mo) || !num(6, 2, d) || !num(9, 2, h) || !num(11, 2, mi) ||
      !num(13, 2, se)) {
    return false;
  }
  using namespace std::chrono;
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 59) return false;
  out = sys_days{ymd} + hours{h} + minutes{mi} + seconds{se};
  return true;
}

std::string describe_window(std::chrono::seconds skew) {
  if (skew.count() % 60 == 0) return std::to_string(skew.count() / 60) + "-minute";
  return std::to_string(skew.count()) + "-second";
}

// The parts of the canonical request after the method, URI and query.
std::string build_canonical_request(std::string_view method, std::string_view target,
                                    std::string_view canonical_headers,
                                    std::string_view signed_headers,
                                    std::string_view payload_hash) {
  const std::size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  std::string creq;
  creq.reserve(method.size() + target.size() + canonical_headers.size() + signed_headers.size() + 96);
  creq.append(method).push_back('\n');
  creq.append(canonical_uri(path)).push_back('\n');
  creq.append(canonical_query(query)).push_back('\n');
  creq.append(canonical_headers).push_back('\n');
  creq.append(signed_headers).push_back('\n');
  creq.append(payload_hash);
  return creq;
}

std::string build_string_to_sign(std::string_view amz_date, std::string_view scope,
                                 std::string_view canonical_request_hash) {
  std::string sts;
  sts.reserve(kAlgorithm.size() + amz_date.size() + scope.size() + canonical_request_hash.size() + 3);
  sts.append(kAlgorithm).push_back('\n');
  sts.append(amz_date).push_back('\n');
  sts.append(scope).push_back('\n');
  sts.append(canonical_request_hash);
  return sts;
}

}  // namespace

struct SigV4Verifier::Impl {
  explicit Impl(SigV4Options o) : options(std::move(o)) {}
  SigV4Options options;
  mutable detail::SigningKeyCache keys;
};

SigV4Verifier::SigV4Verifier(SigV4Options options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
SigV4Verifier::~SigV4Verifier() = default;
SigV4Verifier::SigV4Verifier(SigV4Verifier&&) noexcept = default;
SigV4Verifier& SigV4Verifier::operator=(SigV4Verifier&&) noexcept = default;

const SigV4Options& SigV4Verifier::options() const noexcept { return impl_->options; }

Result<Verified> SigV4Verifier::verify(const RequestView& request, const SecretLookup& lookup,
                                       system_clock::time_point now) const {
  const SigV4Options& opt = impl_->options;

  std::string_view auth_header;
  switch (single_header(request.headers, "authorization", auth_header)) {
    case Single::Absent: return fail("missing Authorization header (SigV4 required)");
    case Single::Many: return fail("more than one Authorization header");
    case Single::One: break;
  }
  auto parsed = parse_authorization(auth_header, opt.service);
  if (!parsed) return std::move(parsed).error();
  const Authorization& auth = *parsed;

  std::string_view amz_date;
  switch (single_header(request.headers, "x-amz-date", amz_date)) {
    case Single::Absent: return fail("signed header \"x-amz-date\" is missing from the request");
    case Single::Many: return fail("more than one X-Amz-Date header");
    case Single::One: break;
  }
  std::chrono::sys_seconds signed_at;
  if (!parse_amz_date(amz_date, signed_at)) {
    return fail("malformed X-Amz-Date: expected yyyymmddThhmmssZ (UTC)");
  }
  if (amz_date.substr(0, 8) != auth.date) {
    return fail("the date of X-Amz-Date (" + std::string(amz_date.substr(0, 8)) +
                ") differs from the credential scope date (" + std::string(auth.date) + ")");
  }
  const auto offset = std::chrono::floor<std::chrono::seconds>(now) - signed_at;
  if (offset > opt.max_skew || -offset > opt.max_skew) {
    const bool past = offset.count() > 0;
    return fail("request date outside the " + describe_window(opt.max_skew) +
                " window: X-Amz-Date " + std::string(amz_date) + " is " +
                std::to_string(past ? offset.count() : -offset.count()) + " s " +
                (past ? "behind" : "ahead of") + " the proxy clock (check NTP on both sides)");
  }

  const SecureString* secret = lookup ? lookup(auth.access_key_id) : nullptr;
  if (secret == nullptr) {
    return fail("unknown access key id \"" + std::string(auth.access_key_id) +
                "\" (not configured for this key store)");
  }

  const std::string payload_hash = hex_sha256(request.body);
  if (payload_hash.empty()) return make_error(ErrorName::InternalException, "SHA-256 failed");
  std::string_view content_sha;
  switch (single_header(request.headers, "x-amz-content-sha256", content_sha)) {
    case Single::Absent: break;
    case Single::Many: return fail("more than one X-Amz-Content-Sha256 header");
    case Single::One: {
      std::array<std::uint8_t, crypto::kSha256Size> claimed{};
      std::array<std::uint8_t, crypto::kSha256Size> actual{};
      if (!crypto::hex_decode_into(trim(content_sha), claimed) ||
          !crypto::hex_decode_into(payload_hash, actual) || claimed != actual) {
        return fail("X-Amz-Content-Sha256 does not match the SHA-256 of the request body");
      }
      break;
    }
  }

  std::string canonical_headers;
  for (const std::string_view name : auth.header_names) {
    const auto range = request.headers.equal_range(name);
    if (range.first == range.second) {
      return fail("signed header \"" + std::string(name) + "\" is missing from the request");
    }
    canonical_headers.append(name).push_back(':');
    for (auto it = range.first; it != range.second; ++it) {
      if (it != range.first) canonical_headers.push_back(',');
      canonical_header_value_append(canonical_headers, it->value());
    }
    canonical_headers.push_back('\n');
  }

  std::string_view target = request.target.empty() ? std::string_view{"/"} : request.target;
  if (target.front() != '/') return fail("the request target is not an absolute path");

  const std::string creq = build_canonical_request(request.method, target, canonical_headers,
                                                   auth.signed_headers, payload_hash);
  const std::string sts = build_string_to_sign(amz_date, auth.scope, hex_sha256(creq));

  auto key = impl_->keys.get(secret->view(), auth.date, auth.region, auth.service);
  if (!key) return make_error(ErrorName::InternalException, "HMAC-SHA-256 failed");
  auto expected = crypto::hmac_sha256(*key, as_bytes(sts));
  secure_wipe(key->data(), key->size());
  if (!expected) return make_error(ErrorName::InternalException, "HMAC-SHA-256 failed");
  const bool match =
      CRYPTO_memcmp(expected->data(), auth.signature.data(), auth.signature.size()) == 0;
  // The right signature for a request the client got wrong is still worth
  // nothing to leave on the stack.
  secure_wipe(expected->data(), expected->size());
  if (!match) {
    return fail("signature does not match: check the secret access key of \"" +
                std::string(auth.access_key_id) +
                "\", and that the Host, path, body and signed headers reach the proxy unchanged");
  }
  return Verified{std::string(auth.access_key_id), std::string(auth.region)};
}

std::string format_amz_date(system_clock::time_point tp) {
  using namespace std::chrono;
  const auto secs = floor<seconds>(tp);
  const auto days = floor<std::chrono::days>(secs);
  const year_month_day ymd{days};
  const hh_mm_ss hms{secs - days};
  // Digits by hand rather than snprintf: GCC 12 at -O2 cannot bound %02d by the
  // ranges of hh_mm_ss and fails -Werror=format-truncation. A system_clock
  // time point (int64 nanoseconds) is always within the years 1677-2262.
  std::string out(16, '0');
  const auto put = [&out](std::size_t at, std::size_t width, long long value) {
    for (std::size_t i = at + width; i > at; --i) {
      out[i - 1] = static_cast<char>('0' + value % 10);
      value /= 10;
    }
  };
  put(0, 4, static_cast<int>(ymd.year()));
  put(4, 2, static_cast<unsigned>(ymd.month()));
  put(6, 2, static_cast<unsigned>(ymd.day()));
  out[8] = 'T';
  put(9, 2, hms.hours().count());
  put(11, 2, hms.minutes().count());
  put(13, 2, hms.seconds().count());
  out[15] = 'Z';
  return out;
}

SignedHeaders sign(const SignInput& input) {
  SignedHeaders out;
  out.amz_date = format_amz_date(input.now);
  const std::string_view date = std::string_view(out.amz_date).substr(0, 8);

  // Lower-cased name -> values in order; std::map sorts the names as SigV4 requires.
  std::map<std::string, std::vector<std::string_view>> headers;
  headers["host"].push_back(input.host);
  headers["x-amz-date"].push_back(out.amz_date);
  for (const auto& [name, value] : input.extra_signed_headers) {
    std::string lower(name);
    std::transform(lower.begin(), lower.end(), lower.begin(), [](char c) {
      return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
    });
    headers[lower].push_back(value);
  }
  std::string canonical_headers, signed_headers;
  for (const auto& [name, values] : headers) {
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers.append(name);
    canonical_headers.append(name).push_back(':');
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i != 0) canonical_headers.push_back(',');
      canonical_header_value_append(canonical_headers, values[i]);
    }
    canonical_headers.push_back('\n');
  }

  std::string scope;
  scope.append(date).append("/").append(input.region).append("/").append(input.service).append("/aws4_request");
  const std::string creq = build_canonical_request(
      input.method, input.target.empty() ? std::string_view{"/"} : input.target, canonical_headers,
      signed_headers, hex_sha256(input.body));
  const std::string sts = build_string_to_sign(out.amz_date, scope, hex_sha256(creq));
  auto key = detail::derive_signing_key(input.secret, date, input.region, input.service);
  if (!key) throw std::runtime_error("SigV4 signing: HMAC-SHA-256 failed");
  const auto signature = crypto::hmac_sha256(*key, as_bytes(sts));
  secure_wipe(key->data(), key->size());
  if (!signature) throw std::runtime_error("SigV4 signing: HMAC-SHA-256 failed");

  out.authorization.append(kAlgorithm).append(" Credential=").append(input.access_key_id);
  out.authorization.append("/").append(scope).append(", SignedHeaders=").append(signed_headers);
  out.authorization.append(", Signature=");
  crypto::hex_encode_append(out.authorization, *signature);
  return out;
}

}  // namespace xks::auth
