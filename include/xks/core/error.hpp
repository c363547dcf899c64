// The one error type of the request path, and the XKS error table.
// Spec: "Error codes" section of the XKS Proxy API specification.
#pragma once

#include <string>
#include <string_view>

namespace xks {

// Spelled exactly as the spec's errorName values.
enum class ErrorName {
  ValidationException,
  InvalidStateException,
  InvalidCiphertextException,
  InvalidKeyUsageException,
  AuthenticationFailedException,
  AccessDeniedException,
  KeyNotFoundException,
  InvalidUriPathException,
  ThrottlingException,
  UnsupportedOperationException,
  DependencyTimeoutException,
  InternalException,
};

inline constexpr ErrorName kAllErrorNames[] = {
    ErrorName::ValidationException,           ErrorName::InvalidStateException,
    ErrorName::InvalidCiphertextException,    ErrorName::InvalidKeyUsageException,
    ErrorName::AuthenticationFailedException, ErrorName::AccessDeniedException,
    ErrorName::KeyNotFoundException,          ErrorName::InvalidUriPathException,
    ErrorName::ThrottlingException,           ErrorName::UnsupportedOperationException,
    ErrorName::DependencyTimeoutException,    ErrorName::InternalException,
};

// The errorName string of the spec, e.g. "ValidationException".
std::string_view to_string(ErrorName name) noexcept;

// The HTTP status the spec assigns to an errorName (the only such table).
unsigned http_status(ErrorName name) noexcept;

// A failure on the request path.
//  - message: safe for the client (becomes errorMessage): says what was wrong and
//    never carries secrets or plaintext. Sanitized again when serialized.
//  - detail: for the log only (e.g. the CKR_* code, the HSM key label).
//  - cause: what made the error, where the errorName alone does not say it
//    (metrics count ThrottlingException by it); never shown to the client.
struct Error {
  enum class Cause {
    None,
    QueueFull,    // the HSM work queue was full
    SessionWait,  // no HSM session became free within the lease timeout
    Quota,        // the key store's request quota was spent
  };

  ErrorName name = ErrorName::InternalException;
  std::string message;
  std::string detail;
  Cause cause = Cause::None;
};

inline Error make_error(ErrorName name, std::string message, std::string detail = {},
                        Error::Cause cause = Error::Cause::None) {
  return Error{name, std::move(message), std::move(detail), cause};
}

// Makes an errorMessage the spec accepts: printable ASCII (0x20-0x7e) only, other
// bytes replaced by '?', truncated to at most 511 characters.
std::string sanitize_error_message(std::string_view message);

}  // namespace xks
