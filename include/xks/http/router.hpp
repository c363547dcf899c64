// Turns an HTTP request-target into {key store, XKS API, externalKeyId}.
// Spec: "API operations" (URI forms, externalKeyId alphabet and length, 256-char
// URI limit) and "Error codes" (InvalidUriPathException, 404).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "xks/core/result.hpp"

namespace xks::http {

enum class Api { GetHealthStatus, GetKeyMetadata, Encrypt, Decrypt };

// The spec's operation name, e.g. "GetKeyMetadata" (for logs and metrics).
std::string_view to_string(Api api) noexcept;

inline constexpr std::size_t kMaxUriChars = 256;    // spec: whole URI <= 256
inline constexpr std::size_t kMaxKeyIdChars = 128;  // spec: externalKeyId 1-128

struct Route {
  std::size_t keystore = 0;  // index into the uri_paths given to the Router
  Api api = Api::GetHealthStatus;
  std::string key_id;  // empty for GetHealthStatus
};

// Immutable after construction; safe to share between I/O threads.
//
// The target is matched as received, without normalization: a query string,
// fragment, percent-encoding, empty segment, "." or ".." segment, trailing slash
// or a character outside A-Za-z0-9 / - _ . is rejected rather than interpreted,
// because KMS never sends one and SigV4 signed the URI exactly as sent. An
// externalKeyId of "." or ".." is rejected for the same reason (it is a dot
// segment every HTTP intermediary would rewrite).
class Router {
 public:
  // uri_paths[i] is the XksProxyUriPath of key store i, e.g. "/tenant-a/kms/xks/v1"
  // (validated by the config loader: starts with '/', no trailing slash).
  explicit Router(std::vector<std::string> uri_paths);

  // InvalidUriPathException (404) with a message saying what is wrong with the
  // path; it never lists the configured prefixes.
  Result<Route> route(std::string_view target) const;

  // True when the target names one of the four APIs of a configured key store
  // (used to answer 405 to a GET on an API URI). Does not allocate.
  bool is_api_uri(std::string_view target) const noexcept;

 private:
  std::vector<std::string> uri_paths_;
};

}  // namespace xks::http
