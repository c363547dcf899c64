// Each section's entry in the startup log's description of the configuration
// (describe_redacted), defined in sections/<section>.cpp next to its parse and
// reload rules. Secrets appear only as where they come from.
#pragma once

#include <chrono>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "xks/config/config.hpp"

namespace xks::config::detail {

nlohmann::json describe_server(const ServerConfig& server);
nlohmann::json describe_tls(const TlsConfig& tls);
nlohmann::json describe_hsms(const std::vector<HsmConfig>& hsms);
nlohmann::json describe_keystores(const std::vector<KeyStore>& keystores);
nlohmann::json describe_health(const HealthConfig& health);
nlohmann::json describe_reload(const ReloadConfig& reload);
nlohmann::json describe_metrics(const MetricsConfig& metrics);
nlohmann::json describe_logging(const LoggingConfig& logging);

// "<redacted: file /etc/x>": a secret's source, never its value.
std::string redacted(const SecretSource& source);
std::string rfc3339(std::chrono::system_clock::time_point t);
inline nlohmann::json millis(Millis m) { return m.count(); }

}  // namespace xks::config::detail
