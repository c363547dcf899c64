// What the hsm module tells the composition root about HSM failures and
// recoveries, so that the app can log them and count them in metrics. The hsm
// module does not log by itself (it does not depend on obs).
#pragma once

#include <p11-kit/pkcs11.h>

#include <chrono>
#include <functional>
#include <string>
#include <string_view>

namespace xks::hsm {

struct HsmEvent {
  enum class Kind {
    DeviceError,    // a call failed with a device-class CKR (one line per failure)
    MarkedFailed,   // repeated device errors: the HSM is taken out, calls fail fast
    ReinitAttempt,  // a re-initialization (sessions, maybe C_Finalize/C_Initialize) starts
    ReinitFailed,   // ... and failed; retry_in says when the next one is due
    Recovered,      // ... and succeeded: the HSM serves again
    KeyNotFound,    // C_FindObjects found no key with the label (vanished or never there)
    OpenDeferred,   // startup: the HSM did not open (device/network), retried in the background
    Opened,         // a deferred HSM opened
  };
  Kind kind = Kind::DeviceError;
  std::string hsm;     // configured HSM name
  std::string detail;  // log-friendly: CKR names, labels, token; never a PIN or key material
  CK_RV rv = CKR_OK;   // the PKCS#11 code involved, CKR_OK when none
  std::chrono::milliseconds retry_in{0};  // ReinitFailed, MarkedFailed, OpenDeferred
};

// "device_error", "marked_failed", ... (snake_case, for log event names and metric labels).
std::string_view to_string(HsmEvent::Kind kind) noexcept;

// Called on whatever thread saw the event (an HSM worker, the health task). Must be
// cheap and must not call back into the backend.
using HsmEventHook = std::function<void(const HsmEvent&)>;

}  // namespace xks::hsm
