#include "xks/hsm/key_backend.hpp"

namespace xks::hsm {

std::vector<std::string> KeyAttributes::key_usage() const {
  // Spec, GetKeyMetadata: at most 10 upper-case strings; we can produce 7.
  std::vector<std::string> out;
  if (encrypt) out.emplace_back("ENCRYPT");
  if (decrypt) out.emplace_back("DECRYPT");
  if (wrap) out.emplace_back("WRAP");
  if (unwrap) out.emplace_back("UNWRAP");
  if (sign) out.emplace_back("SIGN");
  if (verify) out.emplace_back("VERIFY");
  if (derive) out.emplace_back("DERIVE");
  return out;
}

std::string_view to_string(HealthStatus s) noexcept {
  switch (s) {
    case HealthStatus::Active: return "ACTIVE";
    case HealthStatus::Degraded: return "DEGRADED";
    case HealthStatus::Unavailable: return "UNAVAILABLE";
  }
  return "UNAVAILABLE";
}

}  // namespace xks::hsm
