#include "xks/http/router.hpp"

#include <utility>

namespace xks::http {
namespace {

// Why a target was rejected; the message is built only on the error path so that
// routing a good request allocates nothing but the key id.
enum class Problem {
  None,
  NotAbsolute,
  TooLong,
  Query,
  Fragment,
  PercentEncoded,
  BadCharacter,
  EmptySegment,
  TrailingSlash,
  DotSegment,
  UnknownPrefix,
  MissingApi,
  UnknownPath,
  MissingOperation,
  ExtraSegments,
  EmptyKeyId,
  KeyIdTooLong,
  UnknownOperation,
};

struct Parsed {
  Problem problem = Problem::None;
  std::size_t keystore = 0;
  Api api = Api::GetHealthStatus;
  std::string_view key_id;
  std::string_view detail;  // the offending part of the target, for the message
  std::size_t position = 0;
};

constexpr std::string_view kHealth = "/health";
constexpr std::string_view kKeys = "/keys/";

constexpr bool is_alnum(char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

// XksProxyUriPath allows A-Za-z0-9 / - _ and externalKeyId adds '.'; nothing
// else can appear in a valid API target.
constexpr bool is_path_char(char c) noexcept {
  return is_alnum(c) || c == '/' || c == '-' || c == '_' || c == '.';
}

Parsed fail(Problem p, std::string_view detail = {}, std::size_t position = 0) noexcept {
  Parsed r;
  r.problem = p;
  r.detail = detail;
  r.position = position;
  return r;
}

// Rejects everything a normalizing intermediary would rewrite, in one pass.
Parsed check_shape(std::string_view t) noexcept {
  if (t.empty() || t.front() != '/') return fail(Problem::NotAbsolute);
  if (t.size() > kMaxUriChars) return fail(Problem::TooLong, {}, t.size());
  std::size_t segment_start = 1;
  for (std::size_t i = 0; i < t.size(); ++i) {
    const char c = t[i];
    if (c == '?') return fail(Problem::Query, {}, i);
    if (c == '#') return fail(Problem::Fragment, {}, i);
    if (c == '%') return fail(Problem::PercentEncoded, {}, i);
    if (!is_path_char(c)) return fail(Problem::BadCharacter, {}, i);
    if (c == '/' && i != 0) {
      const std::string_view seg = t.substr(segment_start, i - segment_start);
      if (seg.empty()) return fail(Problem::EmptySegment, {}, i);
      if (seg == "." || seg == "..") return fail(Problem::DotSegment, seg, segment_start);
      segment_start = i + 1;
    }
  }
  const std::string_view last = t.substr(segment_start);
  if (last.empty()) return fail(Problem::TrailingSlash, {}, t.size() - 1);
  if (last == "." || last == "..") return fail(Problem::DotSegment, last, segment_start);
  return {};
}

// The part of an unroutable target that looks like its key store prefix, so the
// message can name it: everything before "/keys/" or "/health".
std::string_view guess_prefix(std::string_view t) noexcept {
  if (const auto k = t.rfind(kKeys); k != std::string_view::npos) return t.substr(0, k);
  if (t.size() >= kHealth.size() && t.substr(t.size() - kHealth.size()) == kHealth) {
    return t.substr(0, t.size() - kHealth.size());
  }
  return t;
}

Parsed parse(const std::vector<std::string>& uri_paths, std::string_view t) noexcept {
  Parsed r = check_shape(t);
  if (r.problem != Problem::None) return r;

  // Longest configured prefix followed by '/': prefixes may nest (one key store
  // at "/a/kms/xks/v1", another at "/a/kms/xks/v1/b/kms/xks/v1").
  std::size_t best = uri_paths.size();
  std::size_t best_len = 0;
  for (std::size_t i = 0; i < uri_paths.size(); ++i) {
    const std::string_view p = uri_paths[i];
    if (t.size() > p.size() && t.substr(0, p.size()) == p && t[p.size()] == '/' &&
        (best == uri_paths.size() || p.size() > best_len)) {
      best = i;
      best_len = p.size();
    }
  }
  if (best == uri_paths.size()) {
    for (const auto& p : uri_paths) {
      if (t == p) return fail(Problem::MissingApi);
    }
    return fail(Problem::UnknownPrefix, guess_prefix(t));
  }
  r.keystore = best;

  const std::string_view rest = t.substr(best_len);
  if (rest == kHealth) {
    r.api = Api::GetHealthStatus;
    return r;
  }
  if (rest.substr(0, kKeys.size()) != kKeys) return fail(Problem::UnknownPath, rest);

  const std::string_view tail = rest.substr(kKeys.size());  // "<id>/<op>"
  const auto slash = tail.find('/');
  if (slash == std::string_view::npos) return fail(Problem::MissingOperation, {});
  const std::string_view id = tail.substr(0, slash);
  const std::string_view op = tail.substr(slash + 1);
  if (id.empty()) return fail(Problem::EmptyKeyId);
  if (id.size() > kMaxKeyIdChars) return fail(Problem::KeyIdTooLong, {}, id.size());
  if (op.find('/') != std::string_view::npos) return fail(Problem::ExtraSegments, op);
  // check_shape already restricted id to A-Za-z0-9 - _ . (no '/' by construction).
  if (op == "metadata") {
    r.api = Api::GetKeyMetadata;
  } else if (op == "encrypt") {
    r.api = Api::Encrypt;
  } else if (op == "decrypt") {
    r.api = Api::Decrypt;
  } else {
    return fail(Problem::UnknownOperation, op);
  }
  r.key_id = id;
  return r;
}

// The client's own target is echoed in a few messages: it is not secret, the
// segments were already restricted to URI-safe characters, and KMS logs the
// message in the caller's own account. Long parts are cut to keep messages short.
std::string quoted(std::string_view s) {
  constexpr std::size_t kMaxQuoted = 64;
  std::string out = "'";
  if (s.size() > kMaxQuoted) {
    out.append(s.substr(0, kMaxQuoted));
    out.append("...");
  } else {
    out.append(s);
  }
  out.push_back('\'');
  return out;
}

std::string message(const Parsed& p) {
  switch (p.problem) {
    case Problem::None: break;
    case Problem::NotAbsolute:
      return "the request target must be an absolute path starting with '/'";
    case Problem::TooLong:
      return "the URI path is " + std::to_string(p.position) +
             " characters long; the XKS API allows at most " + std::to_string(kMaxUriChars);
    case Problem::Query:
      return "the URI must not contain a query string ('?' at position " +
             std::to_string(p.position) + ")";
    case Problem::Fragment:
      return "the URI must not contain a fragment ('#' at position " + std::to_string(p.position) +
             ")";
    case Problem::PercentEncoded:
      return "the URI must not contain percent-encoded characters ('%' at position " +
             std::to_string(p.position) + ")";
    case Problem::BadCharacter:
      return "the URI contains a character outside A-Z a-z 0-9 / - _ . at position " +
             std::to_string(p.position);
    case Problem::EmptySegment:
      return "the URI contains an empty path segment ('//' at position " +
             std::to_string(p.position - 1) + ")";
    case Problem::TrailingSlash: return "the URI must not end with '/'";
    case Problem::DotSegment:
      return "the URI must not contain '.' or '..' path segments (at position " +
             std::to_string(p.position) + ")";
    case Problem::UnknownPrefix:
      return "no key store is configured at path prefix " + quoted(p.detail) +
             "; check XksProxyUriPath of the external key store";
    case Problem::MissingApi:
      return "the URI stops at the key store prefix; expected /health or "
             "/keys/<externalKeyId>/{metadata,encrypt,decrypt} after it";
    case Problem::UnknownPath:
      return "unknown API path " + quoted(p.detail) +
             " after the key store prefix; expected /health or "
             "/keys/<externalKeyId>/{metadata,encrypt,decrypt}";
    case Problem::MissingOperation:
      return "the URI names a key but no operation; expected "
             "/keys/<externalKeyId>/{metadata,encrypt,decrypt}";
    case Problem::ExtraSegments:
      return "unexpected path segments after the key id: " + quoted(p.detail) +
             "; expected one of metadata, encrypt, decrypt";
    case Problem::EmptyKeyId: return "the externalKeyId in the URI is empty";
    case Problem::KeyIdTooLong:
      return "the externalKeyId in the URI is " + std::to_string(p.position) +
             " characters long; at most " + std::to_string(kMaxKeyIdChars) + " are allowed";
    case Problem::UnknownOperation:
      return "unknown operation " + quoted(p.detail) +
             " after the key id; expected one of metadata, encrypt, decrypt";
  }
  return "invalid URI path";
}

}  // namespace

std::string_view to_string(Api api) noexcept {
  switch (api) {
    case Api::GetHealthStatus: return "GetHealthStatus";
    case Api::GetKeyMetadata: return "GetKeyMetadata";
    case Api::Encrypt: return "Encrypt";
    case Api::Decrypt: return "Decrypt";
  }
  return "Unknown";
}

Router::Router(std::vector<std::string> uri_paths) : uri_paths_(std::move(uri_paths)) {}

Result<Route> Router::route(std::string_view target) const {
  const Parsed p = parse(uri_paths_, target);
  if (p.problem != Problem::None) {
    return make_error(ErrorName::InvalidUriPathException, message(p));
  }
  return Route{p.keystore, p.api, std::string(p.key_id)};
}

bool Router::is_api_uri(std::string_view target) const noexcept {
  return parse(uri_paths_, target).problem == Problem::None;
}

}  // namespace xks::http
