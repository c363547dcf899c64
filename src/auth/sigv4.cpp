#include "xks/auth/sigv4.hpp"
#include "xks/core/ascii.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <array>
#include <cstdint>
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

// Character classes as function objects, not functions: all_of() below then
// inlines them instead of calling through a pointer for every character.
constexpr auto is_digit = [](char c) noexcept { return core::is_digit(c); };
constexpr auto is_lower_alnum = [](char c) noexcept { return core::is_lower_alnum(c); };
constexpr auto is_alnum = [](char c) noexcept { return core::is_alnum(c); };

// RFC 9110 token characters, lower case only: SigV4 lists header names in lower case.
constexpr auto is_lower_token_char = [](char c) noexcept {
  if (is_lower_alnum(c)) return true;
  switch (c) {
    case '!':
    case '#':
    case '$':
    case '%':
    case '&':
    case '\'':
    case '*':
    case '+':
    case '-':
    case '.':
    case '^':
    case '_':
    case '`':
    case '|':
    case '~': return true;
    default: return false;
  }
};

template <class Pred>
bool all_of(std::string_view s, Pred pred) {
  for (const char c : s) {
    if (!pred(c)) return false;
  }
  return true;
}

// SHA-256 values in hex, written in place: crypto::hex_encode_append grows
// the string a character at a time, which showed as a tenth of verify() in a
// profile.
void append_hex(std::string& out, const crypto::Sha256& bytes) {
  constexpr const char* kDigits = core::kHexLower;
  const std::size_t at = out.size();
  out.resize(at + 2 * bytes.size());
  // Through a local pointer: a char store may alias the string's own data
  // pointer, which out[i] would then reload for every digit.
  char* p = out.data() + at;
  for (const std::uint8_t b : bytes) {
    *p++ = kDigits[b >> 4];    // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
    *p++ = kDigits[b & 0x0f];  // NOLINT(cppcoreguidelines-pro-bounds-pointer-arithmetic)
  }
}

constexpr std::array<std::int8_t, 256> kHexValue = [] {
  std::array<std::int8_t, 256> t{};
  t.fill(-1);
  for (int c = 0; c < 10; ++c) t[static_cast<std::size_t>('0' + c)] = static_cast<std::int8_t>(c);
  for (int c = 0; c < 6; ++c) {
    t[static_cast<std::size_t>('a' + c)] = static_cast<std::int8_t>(10 + c);
    t[static_cast<std::size_t>('A' + c)] = static_cast<std::int8_t>(10 + c);
  }
  return t;
}();

// Exactly 64 hex digits of either case into out, as crypto::hex_decode_into
// does, by table.
bool decode_hex(std::string_view text, crypto::Sha256& out) noexcept {
  if (text.size() != 2 * out.size()) return false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = kHexValue[static_cast<unsigned char>(text[2 * i])];
    const int lo = kHexValue[static_cast<unsigned char>(text[2 * i + 1])];
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return true;
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
  crypto::Sha256 signature{};
};

// Calls f on each ';'-separated name of a SignedHeaders value, in order, until
// f returns false; returns whether it ran to the end. Names are not copied.
template <class F>
bool for_each_name(std::string_view signed_headers, F f) {
  std::size_t pos = 0;
  while (pos <= signed_headers.size()) {
    const std::size_t semi = std::min(signed_headers.find(';', pos), signed_headers.size());
    if (!f(signed_headers.substr(pos, semi - pos))) return false;
    pos = semi + 1;
  }
  return true;
}

Result<void> parse_credential(std::string_view value, Authorization& out,
                              std::string_view expected_service) {
  std::array<std::string_view, 5> parts;
  std::size_t n = 0;
  std::size_t pos = 0;
  while (true) {
    const std::size_t slash = value.find('/', pos);
    if (n == parts.size())
      return fail("malformed Credential: expected AKID/yyyymmdd/region/service/aws4_request");
    parts[n++] =
        value.substr(pos, slash == std::string_view::npos ? std::string_view::npos : slash - pos);
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
  // The names are split again where they are used: a fixed array here keeps
  // the parse free of allocation.
  std::array<std::string_view, kMaxSignedHeaders> names;
  std::size_t count = 0;
  Result<void> result;
  for_each_name(value, [&](std::string_view name) {
    const auto end = names.begin() + static_cast<std::ptrdiff_t>(count);
    if (name.empty() || name.size() > kMaxHeaderNameLength || !all_of(name, is_lower_token_char)) {
      result =
          fail("malformed SignedHeaders: header names must be lower-case tokens separated by ';'");
    } else if (std::find(names.begin(), end, name) != end) {
      result = fail("malformed SignedHeaders: \"" + std::string(name) + "\" is listed twice");
    } else if (count == kMaxSignedHeaders) {
      result = fail("malformed SignedHeaders: more than 64 headers");
    } else if (name == "authorization") {
      result = fail("malformed SignedHeaders: the Authorization header cannot sign itself");
    } else {
      names[count++] = name;
      return true;
    }
    return false;
  });
  if (!result) return result;
  const auto listed = [&](std::string_view n) {
    const auto end = names.begin() + static_cast<std::ptrdiff_t>(count);
    return std::find(names.begin(), end, n) != end;
  };
  if (!listed("host")) return fail("SignedHeaders must include host");
  if (!listed("x-amz-date")) return fail("SignedHeaders must include x-amz-date");
  out.signed_headers = value;
  return {};
}

Result<void> parse_authorization(std::string_view header, std::string_view service,
                                 Authorization& out) {
  if (header.substr(0, kAlgorithm.size()) != kAlgorithm || header.size() == kAlgorithm.size() ||
      header[kAlgorithm.size()] != ' ') {
    return fail("the Authorization header is not AWS4-HMAC-SHA256 (SigV4)");
  }
  std::string_view rest = header.substr(kAlgorithm.size());
  bool have_credential = false, have_signed_headers = false, have_signature = false;
  std::size_t pos = 0;
  while (pos <= rest.size()) {
    const std::size_t comma = std::min(rest.find(',', pos), rest.size());
    const std::string_view part = trim(rest.substr(pos, comma - pos));
    pos = comma + 1;
    const std::size_t eq = part.find('=');
    if (eq == std::string_view::npos) {
      return fail(
          "malformed Authorization header: expected Credential=..., SignedHeaders=..., "
          "Signature=...");
    }
    const std::string_view name = part.substr(0, eq);
    const std::string_view value = part.substr(eq + 1);
    const auto once = [&](bool& seen) -> Result<void> {
      if (seen)
        return fail("malformed Authorization header: " + std::string(name) + " appears twice");
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
      if (!decode_hex(value, out.signature)) {
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
  return {};
}

// A header that must appear at most once: absent, once (with its value), or more.
enum class Single { Absent, One, Many };
struct SingleHeader {
  Single state = Single::Absent;
  std::string_view value;

  void saw(std::string_view v) noexcept {
    state = state == Single::Absent ? Single::One : Single::Many;
    value = v;
  }
};

// ASCII case-insensitive equality with a lower-case name, as Beast compares
// field names.
bool equals_lower(std::string_view name, std::string_view lower) noexcept {
  if (name.size() != lower.size()) return false;
  for (std::size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    if (c != lower[i]) return false;
  }
  return true;
}

// The three headers verify() needs at most once of, found in one pass over
// the fields rather than one tree search each.
struct SingleHeaders {
  SingleHeader authorization, amz_date, content_sha256;
};

SingleHeaders find_single_headers(const http::fields& headers) {
  SingleHeaders out;
  for (const auto& f : headers) {
    const std::string_view name(f.name_string().data(), f.name_string().size());
    // Their lengths differ, so at most one comparison per field.
    switch (name.size()) {
      case 13:
        if (equals_lower(name, "authorization")) out.authorization.saw(f.value());
        break;
      case 10:
        if (equals_lower(name, "x-amz-date")) out.amz_date.saw(f.value());
        break;
      case 20:
        if (equals_lower(name, "x-amz-content-sha256")) out.content_sha256.saw(f.value());
        break;
      default: break;
    }
  }
  return out;
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
  const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)},
                           day{static_cast<unsigned>(d)}};
  if (!ymd.ok() || h > 23 || mi > 59 || se > 59) return false;
  out = sys_days{ymd} + hours{h} + minutes{mi} + seconds{se};
  return true;
}

std::string describe_window(std::chrono::seconds skew) {
  if (skew.count() % 60 == 0) return std::to_string(skew.count() / 60) + "-minute";
  return std::to_string(skew.count()) + "-second";
}

// The canonical request is built in three steps so that the verifier can
// append the canonical headers straight from the request in between:
// "METHOD\nURI\nQUERY\n" + "name:value\n"... + "\nSIGNED_HEADERS\nPAYLOAD_HASH".
void append_canonical_request_head(std::string& out, std::string_view method,
                                   std::string_view target) {
  const std::size_t q = target.find('?');
  const std::string_view path = target.substr(0, q);
  const std::string_view query =
      q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
  out.append(method).push_back('\n');
  canonical_uri_append(out, path);
  out.push_back('\n');
  if (!query.empty()) out.append(canonical_query(query));
  out.push_back('\n');
}

void append_canonical_header(std::string& out, std::string_view name) {
  out.append(name).push_back(':');
}

void append_canonical_request_tail(std::string& out, std::string_view signed_headers,
                                   const crypto::Sha256& payload_hash) {
  out.push_back('\n');
  out.append(signed_headers).push_back('\n');
  append_hex(out, payload_hash);
}

void append_string_to_sign(std::string& out, std::string_view amz_date, std::string_view scope,
                           const crypto::Sha256& canonical_request_hash) {
  out.append(kAlgorithm).push_back('\n');
  out.append(amz_date).push_back('\n');
  out.append(scope).push_back('\n');
  append_hex(out, canonical_request_hash);
}

// What verify() reuses from call to call on one thread, so that a
// verification allocates next to nothing: a digest context, the buffer for
// the canonical request and then the string to sign (neither holds a
// secret), and the prepared signing keys.
struct Workspace {
  detail::MdCtx md{EVP_MD_CTX_new()};
  std::string text;
  detail::SigningKeyCache keys;
};

Workspace& workspace() {
  thread_local Workspace ws;
  return ws;
}

// Lends the workspace's text buffer for one verification. A buffer that grew
// past kMaxKept (headers near the configured limit) is given back at the end,
// however the verification ends, so one odd request does not pin memory on
// every I/O thread.
class TextLease {
 public:
  static constexpr std::size_t kMaxKept = 64 * 1024;
  explicit TextLease(std::string& text) noexcept : text_(text) { text_.clear(); }
  ~TextLease() {
    if (text_.capacity() > kMaxKept) std::string{}.swap(text_);
  }
  TextLease(const TextLease&) = delete;
  TextLease& operator=(const TextLease&) = delete;
  std::string& get() noexcept { return text_; }

 private:
  std::string& text_;
};

}  // namespace

struct SigV4Verifier::Impl {
  explicit Impl(SigV4Options o) : options(std::move(o)) {}
  SigV4Options options;
  // The signing keys are cached per thread (see Workspace), not here.
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

  const SingleHeaders singles = find_single_headers(request.headers);
  const std::string_view auth_header = singles.authorization.value;
  switch (singles.authorization.state) {
    case Single::Absent: return fail("missing Authorization header (SigV4 required)");
    case Single::Many: return fail("more than one Authorization header");
    case Single::One: break;
  }
  Authorization auth;
  if (auto r = parse_authorization(auth_header, opt.service, auth); !r) return std::move(r).error();

  const std::string_view amz_date = singles.amz_date.value;
  switch (singles.amz_date.state) {
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

  const SecretLookupResult found = lookup ? lookup(auth.access_key_id) : SecretLookupResult{};
  switch (found.state) {
    case SecretLookupResult::State::Found: break;
    case SecretLookupResult::State::Unknown:
      return fail("unknown access key id \"" + std::string(auth.access_key_id) +
                  "\" (not configured for this key store)");
    case SecretLookupResult::State::Expired:
      return make_error(ErrorName::AuthenticationFailedException,
                        "access key id \"" + std::string(auth.access_key_id) +
                            "\" has expired (its not_after has passed)",
                        "keystores[].credentials[].not_after " + format_amz_date(found.not_after));
  }
  const SecureString* secret = found.secret;

  Workspace& ws = workspace();
  if (!ws.md) ws.md.reset(EVP_MD_CTX_new());  // failed when the thread started; try again
  EVP_MD_CTX* md = ws.md.get();
  crypto::Sha256 payload_hash{};
  if (md == nullptr || !detail::sha256(md, request.body, payload_hash)) {
    return make_error(ErrorName::InternalException, "SHA-256 failed");
  }
  switch (singles.content_sha256.state) {
    case Single::Absent: break;
    case Single::Many: return fail("more than one X-Amz-Content-Sha256 header");
    case Single::One: {
      crypto::Sha256 claimed{};
      if (!decode_hex(trim(singles.content_sha256.value), claimed) || claimed != payload_hash) {
        return fail("X-Amz-Content-Sha256 does not match the SHA-256 of the request body");
      }
      break;
    }
  }

  const std::string_view target = request.target.empty() ? std::string_view{"/"} : request.target;
  TextLease lease(ws.text);
  std::string& text = lease.get();
  append_canonical_request_head(text, request.method, target);
  std::string_view missing;
  const bool all_present = for_each_name(auth.signed_headers, [&](std::string_view name) {
    if (name == "x-amz-date") {  // known to be there exactly once, and already found
      append_canonical_header(text, name);
      canonical_header_value_append(text, amz_date);
      text.push_back('\n');
      return true;
    }
    const auto range = request.headers.equal_range(name);
    if (range.first == range.second) {
      missing = name;
      return false;
    }
    append_canonical_header(text, name);
    for (auto it = range.first; it != range.second; ++it) {
      if (it != range.first) text.push_back(',');
      canonical_header_value_append(text, it->value());
    }
    text.push_back('\n');
    return true;
  });
  if (!all_present) {
    return fail("signed header \"" + std::string(missing) + "\" is missing from the request");
  }
  if (target.front() != '/') return fail("the request target is not an absolute path");
  append_canonical_request_tail(text, auth.signed_headers, payload_hash);

  crypto::Sha256 creq_hash{};
  if (!detail::sha256(md, text, creq_hash)) {
    return make_error(ErrorName::InternalException, "SHA-256 failed");
  }
  text.clear();
  append_string_to_sign(text, amz_date, auth.scope, creq_hash);

  const detail::HmacSha256Key* key =
      ws.keys.get(md, secret->view(), auth.date, auth.region, auth.service);
  crypto::Sha256 expected{};
  if (key == nullptr || !key->mac(md, text, expected)) {
    return make_error(ErrorName::InternalException, "HMAC-SHA-256 failed");
  }
  const bool match =
      CRYPTO_memcmp(expected.data(), auth.signature.data(), auth.signature.size()) == 0;
  // The right signature for a request the client got wrong is still worth
  // nothing to leave on the stack.
  secure_wipe(expected.data(), expected.size());
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
  const auto body_hash = crypto::sha256(as_bytes(input.body));
  if (!body_hash) throw std::runtime_error("SigV4 signing: SHA-256 failed");
  std::string creq, signed_headers;
  append_canonical_request_head(creq, input.method,
                                input.target.empty() ? std::string_view{"/"} : input.target);
  for (const auto& [name, values] : headers) {
    if (!signed_headers.empty()) signed_headers.push_back(';');
    signed_headers.append(name);
    append_canonical_header(creq, name);
    for (std::size_t i = 0; i < values.size(); ++i) {
      if (i != 0) creq.push_back(',');
      canonical_header_value_append(creq, values[i]);
    }
    creq.push_back('\n');
  }
  append_canonical_request_tail(creq, signed_headers, *body_hash);

  std::string scope;
  scope.append(date)
      .append("/")
      .append(input.region)
      .append("/")
      .append(input.service)
      .append("/aws4_request");
  const auto creq_hash = crypto::sha256(as_bytes(creq));
  if (!creq_hash) throw std::runtime_error("SigV4 signing: SHA-256 failed");
  std::string sts;
  append_string_to_sign(sts, out.amz_date, scope, *creq_hash);
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
