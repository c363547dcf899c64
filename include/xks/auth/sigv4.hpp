// AWS Signature Version 4 for the XKS proxy API: verification of what KMS sends,
// and signing (for xksctl, benchmarks and tests).
// Spec: XKS Proxy API, "Authentication" and Appendix A; AWS General Reference,
// "Signature Version 4 signing process".
#pragma once

#include <boost/beast/http/fields.hpp>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"

namespace xks::auth {

inline constexpr std::string_view kAlgorithm = "AWS4-HMAC-SHA256";
inline constexpr std::string_view kXksService = "kms-xks-proxy";

// One HTTP request as the verifier sees it. Nothing is copied; the referenced
// data must outlive the verify() call.
struct RequestView {
  std::string_view method;
  std::string_view target;  // path as received, may include ?query
  const boost::beast::http::fields& headers;
  std::string_view body;
};

// What the key store knows of an access key id: its secret, nothing, or that
// it was configured until `not_after`, which has passed. Converts from a
// secret pointer (nullptr: unknown).
struct SecretLookupResult {
  enum class State { Unknown, Found, Expired };

  SecretLookupResult(
      const SecureString* found_secret = nullptr) noexcept  // NOLINT(google-explicit-constructor)
      : state(found_secret != nullptr ? State::Found : State::Unknown), secret(found_secret) {}
  static SecretLookupResult expired(std::chrono::system_clock::time_point when) noexcept {
    SecretLookupResult r;
    r.state = State::Expired;
    r.not_after = when;
    return r;
  }

  State state;
  const SecureString* secret;                         // Found only
  std::chrono::system_clock::time_point not_after{};  // Expired only
};

// Looks up an access key id. Called at most once per verify(), from the
// verifying thread; the secret need only stay valid until the lookup's caller
// returns.
using SecretLookup = std::function<SecretLookupResult(std::string_view access_key_id)>;

struct Verified {
  std::string access_key_id;
  std::string region;  // from the credential scope: the region KMS called from
};

struct SigV4Options {
  std::string service{kXksService};
  // Spec, Appendix A Task 4: reject requests more than 5 minutes off, either way.
  std::chrono::seconds max_skew{300};
};

class SigV4Verifier {
 public:
  explicit SigV4Verifier(SigV4Options options = {});
  ~SigV4Verifier();
  SigV4Verifier(SigV4Verifier&&) noexcept;
  SigV4Verifier& operator=(SigV4Verifier&&) noexcept;
  SigV4Verifier(const SigV4Verifier&) = delete;
  SigV4Verifier& operator=(const SigV4Verifier&) = delete;

  // Verifies the request's Authorization header against the secret lookup
  // returns for its access key id. Every failure is AuthenticationFailedException
  // with a message that names what was wrong (never a secret, key or the
  // expected signature): an unknown access key id, or an expired one (checked
  // once the date is, before the signature). Thread-safe: one verifier serves
  // all I/O threads.
  Result<Verified> verify(const RequestView& request, const SecretLookup& lookup,
                          std::chrono::system_clock::time_point now) const;

  const SigV4Options& options() const noexcept;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

struct SignInput {
  std::string_view method, host, target, body, region, access_key_id;
  std::string_view secret;
  std::string_view service = kXksService;
  std::chrono::system_clock::time_point now;
  // Signed in addition to host and x-amz-date (and sent by the caller).
  // Names are lower-cased; a name given twice is signed as one header with
  // its values joined by ',' in the given order, as a repeated header is.
  std::vector<std::pair<std::string, std::string>> extra_signed_headers;
};

// Header values to send: "Authorization" and "X-Amz-Date" (plus "Host" =
// input.host and the extra headers, which the caller sends itself).
struct SignedHeaders {
  std::string authorization, amz_date;
};

// Signs as the AWS SDKs do. Not on the request path: throws std::runtime_error
// if OpenSSL fails.
SignedHeaders sign(const SignInput& input);

// "yyyymmddThhmmssZ" (UTC) for the second containing tp.
std::string format_amz_date(std::chrono::system_clock::time_point tp);

}  // namespace xks::auth
