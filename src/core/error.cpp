#include "xks/core/error.hpp"

namespace xks {

std::string_view to_string(ErrorName name) noexcept {
  switch (name) {
    case ErrorName::ValidationException: return "ValidationException";
    case ErrorName::InvalidStateException: return "InvalidStateException";
    case ErrorName::InvalidCiphertextException: return "InvalidCiphertextException";
    case ErrorName::InvalidKeyUsageException: return "InvalidKeyUsageException";
    case ErrorName::AuthenticationFailedException: return "AuthenticationFailedException";
    case ErrorName::AccessDeniedException: return "AccessDeniedException";
    case ErrorName::KeyNotFoundException: return "KeyNotFoundException";
    case ErrorName::InvalidUriPathException: return "InvalidUriPathException";
    case ErrorName::ThrottlingException: return "ThrottlingException";
    case ErrorName::UnsupportedOperationException: return "UnsupportedOperationException";
    case ErrorName::DependencyTimeoutException: return "DependencyTimeoutException";
    case ErrorName::InternalException: return "InternalException";
  }
  return "InternalException";
}

unsigned http_status(ErrorName name) noexcept {
  switch (name) {
    case ErrorName::ValidationException:
    case ErrorName::InvalidStateException:
    case ErrorName::InvalidCiphertextException:
    case ErrorName::InvalidKeyUsageException: return 400;
    case ErrorName::AuthenticationFailedException: return 401;
    case ErrorName::AccessDeniedException: return 403;
    case ErrorName::KeyNotFoundException:
    case ErrorName::InvalidUriPathException: return 404;
    case ErrorName::ThrottlingException: return 429;
    case ErrorName::UnsupportedOperationException: return 501;
    case ErrorName::DependencyTimeoutException: return 503;
    case ErrorName::InternalException: return 500;
  }
  return 500;
}

std::string sanitize_error_message(std::string_view message) {
  constexpr std::size_t kMaxLength = 511;  // spec: "less than 512 characters"
  std::string out;
  out.reserve(message.size() < kMaxLength ? message.size() : kMaxLength);
  for (char c : message) {
    if (out.size() == kMaxLength) break;
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u <= 0x7e ? c : '?');
  }
  return out;
}

}  // namespace xks
