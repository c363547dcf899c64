#include "xks/hsm/events.hpp"

namespace xks::hsm {

std::string_view to_string(HsmEvent::Kind kind) noexcept {
  switch (kind) {
    case HsmEvent::Kind::DeviceError: return "device_error";
    case HsmEvent::Kind::MarkedFailed: return "marked_failed";
    case HsmEvent::Kind::ReinitAttempt: return "reinit_attempt";
    case HsmEvent::Kind::ReinitFailed: return "reinit_failed";
    case HsmEvent::Kind::Recovered: return "recovered";
    case HsmEvent::Kind::KeyNotFound: return "key_not_found";
    case HsmEvent::Kind::OpenDeferred: return "open_deferred";
    case HsmEvent::Kind::Opened: return "opened";
  }
  return "unknown";
}

}  // namespace xks::hsm
