// PKCS#11 return codes (CKR_*): their names, the one table mapping them to XKS
// errorNames, and the classes that drive recovery.
#pragma once

#include <p11-kit/pkcs11.h>

#include <string_view>

#include "xks/core/error.hpp"

namespace xks::hsm {

// How the backend reacts to a failure. Only Session and Device failures say
// anything about the health of the HSM; Data failures are about the request
// (bad tag, key not usable) and must never trigger a retry on another HSM.
enum class CkrClass {
  Ok,       // CKR_OK
  Data,     // the request, key or ciphertext: answer the client, HSM is fine
  Session,  // this session (or its login state) is unusable: discard it, retry once
  Device,   // the token, slot or library is failing: the HSM is unhealthy
  Pin,      // the PIN is wrong, locked or expired: never retry a login
  Other,    // everything else (programming or configuration errors)
};

// "CKR_PIN_INCORRECT", ...; "CKR_VENDOR_DEFINED+0x..." style is not used:
// vendor codes and unknown codes give "CKR_VENDOR_DEFINED" / "CKR_UNKNOWN".
std::string_view ckr_name(CK_RV rv) noexcept;

std::string_view to_string(CkrClass c) noexcept;
CkrClass ckr_class(CK_RV rv) noexcept;

// The errorName a CKR code becomes, independent of the operation. The backend
// additionally turns C_Decrypt's hsm.auth_failure_codes into
// InvalidCiphertextException, because only there do they mean "tag did not verify".
ErrorName ckr_error_name(CK_RV rv) noexcept;

// An Error for a failed PKCS#11 call. `context` names what was being done
// (e.g. "C_Encrypt with key 'k1'"); the message says what failed and where
// ("The HSM failed the operation: C_Encrypt with key 'k1'"), the log-only detail
// only the CKR name, code and class. A caller that replaces the message keeps the
// context by moving it into the detail.
Error ckr_to_error(CK_RV rv, std::string_view context);

}  // namespace xks::hsm
