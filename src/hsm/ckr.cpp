#include "xks/hsm/ckr.hpp"

#include <cstdio>
#include <string>

#include "xks/hsm/ckr_names.hpp"

namespace xks::hsm {

std::string_view ckr_name(CK_RV rv) noexcept {
  if (const std::string_view name = ckr_table_name(rv); !name.empty()) return name;
  if ((rv & CKR_VENDOR_DEFINED) != 0) return "CKR_VENDOR_DEFINED";
  return "CKR_UNKNOWN";
}

std::string_view to_string(CkrClass c) noexcept {
  switch (c) {
    case CkrClass::Ok: return "ok";
    case CkrClass::Data: return "data";
    case CkrClass::Session: return "session";
    case CkrClass::Device: return "device";
    case CkrClass::Pin: return "pin";
    case CkrClass::Other: return "other";
  }
  return "other";
}

CkrClass ckr_class(CK_RV rv) noexcept {
  switch (rv) {
    case CKR_OK: return CkrClass::Ok;

    // About the request: the data, the ciphertext, the key object or its usage.
    // A key handle that went stale is Data too: the backend looks the label up
    // again, and another HSM would not know the key any better.
    case CKR_DATA_INVALID:
    case CKR_DATA_LEN_RANGE:
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE:
    case CKR_KEY_HANDLE_INVALID:
    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_SIZE_RANGE:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_INDIGESTIBLE:
    case CKR_KEY_CHANGED:
    case CKR_KEY_NEEDED:
    case CKR_KEY_NOT_NEEDED:
    case CKR_ATTRIBUTE_SENSITIVE:
    case CKR_ATTRIBUTE_TYPE_INVALID:
    case CKR_SIGNATURE_INVALID:
    case CKR_SIGNATURE_LEN_RANGE:
    case CKR_BUFFER_TOO_SMALL: return CkrClass::Data;

    // The session is dead or in a state we cannot trust (an operation left
    // active by an interrupted call): a fresh session cures these.
    case CKR_SESSION_HANDLE_INVALID:
    case CKR_SESSION_CLOSED:
    case CKR_USER_NOT_LOGGED_IN:
    case CKR_OPERATION_ACTIVE:
    case CKR_OPERATION_NOT_INITIALIZED: return CkrClass::Session;

    // The token, slot, device or library: a fresh session on this HSM will not help.
    case CKR_GENERAL_ERROR:
    case CKR_FUNCTION_FAILED:
    case CKR_HOST_MEMORY:
    case CKR_DEVICE_ERROR:
    case CKR_DEVICE_MEMORY:
    case CKR_DEVICE_REMOVED:
    case CKR_TOKEN_NOT_PRESENT:
    case CKR_TOKEN_NOT_RECOGNIZED:
    case CKR_SLOT_ID_INVALID:
    case CKR_CRYPTOKI_NOT_INITIALIZED:
    case CKR_FUNCTION_CANCELED:
    case CKR_CANCEL:
    case CKR_SESSION_COUNT:
    case CKR_FIPS_SELF_TEST_FAILED:
    case CKR_LIBRARY_LOAD_FAILED:
    case CKR_RANDOM_NO_RNG: return CkrClass::Device;

    // Retrying these locks the user out (CloudHSM: five wrong logins).
    case CKR_PIN_INCORRECT:
    case CKR_PIN_INVALID:
    case CKR_PIN_LEN_RANGE:
    case CKR_PIN_EXPIRED:
    case CKR_PIN_LOCKED:
    case CKR_USER_PIN_NOT_INITIALIZED: return CkrClass::Pin;

    default: return CkrClass::Other;
  }
}

ErrorName ckr_error_name(CK_RV rv) noexcept {
  switch (rv) {
    case CKR_ENCRYPTED_DATA_INVALID:
    case CKR_ENCRYPTED_DATA_LEN_RANGE: return ErrorName::InvalidCiphertextException;

    case CKR_KEY_FUNCTION_NOT_PERMITTED:
    case CKR_KEY_TYPE_INCONSISTENT:
    case CKR_KEY_SIZE_RANGE:
    case CKR_KEY_INDIGESTIBLE: return ErrorName::InvalidKeyUsageException;

    case CKR_OBJECT_HANDLE_INVALID:
    case CKR_KEY_HANDLE_INVALID: return ErrorName::KeyNotFoundException;

    // Input the token will not take (e.g. a plaintext over its size limit).
    case CKR_DATA_INVALID: return ErrorName::ValidationException;
    case CKR_DATA_LEN_RANGE:
      return ErrorName::UnsupportedOperationException;  // spec: "value beyond supported size"

    // The HSM gave up on the call: KMS may retry, as for a timeout.
    case CKR_FUNCTION_CANCELED:
    case CKR_CANCEL: return ErrorName::DependencyTimeoutException;

    default:
      // Device, session, login, PIN, mechanism and everything unknown: a key
      // manager failure (500). The log detail names the CKR code.
      return ErrorName::InternalException;
  }
}

namespace {

std::string_view public_message(ErrorName name) {
  switch (name) {
    case ErrorName::InvalidCiphertextException:
      return "The ciphertext, IV, authentication tag, AAD or metadata do not verify";
    case ErrorName::InvalidKeyUsageException:
      return "The HSM key does not permit this operation (check its attributes)";
    case ErrorName::KeyNotFoundException: return "The HSM key no longer exists";
    case ErrorName::ValidationException: return "The HSM rejected the input";
    case ErrorName::UnsupportedOperationException:
      return "The input is larger than the HSM supports";
    case ErrorName::DependencyTimeoutException: return "The HSM cancelled the operation";
    default: return "The HSM failed the operation";
  }
}

}  // namespace

Error ckr_to_error(CK_RV rv, std::string_view context) {
  const ErrorName name = ckr_error_name(rv);
  char code[32];
  std::snprintf(code, sizeof code, " (0x%lx)", rv);
  std::string message{public_message(name)};
  if (!context.empty()) message.append(": ").append(context);
  // The context is in the message; the detail adds only what the client must not see,
  // so "message; detail" (log lines, health details) says each thing once.
  std::string detail{ckr_name(rv)};
  detail.append(code).append(", class ").append(to_string(ckr_class(rv)));
  return make_error(name, std::move(message), std::move(detail));
}

}  // namespace xks::hsm
