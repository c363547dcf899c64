// What a configuration reload (SIGHUP) does with each setting: applied at once,
// applied with new HSM sessions (the HSM engine is rebuilt: new C_Initialize,
// new sessions, new login), or kept at its running value until a restart.
// docs/operations.md ("Reload") holds the same table; a unit test compares the
// two.
#pragma once

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xks/config/config.hpp"

namespace xks::config {

enum class ReloadClass { Live, NewHsmSessions, Restart };
// "live", "new HSM sessions", "restart": the words of the documentation's table.
std::string_view to_string(ReloadClass cls) noexcept;

struct ReloadRule {
  std::string_view setting;  // "server.limits.max_connections", "hsm.pin", ...
  ReloadClass cls;
};

// Every setting a reload compares, each with its class, in the order of the
// documentation's table.
std::span<const ReloadRule> reload_rules() noexcept;

struct SettingChange {
  std::string_view setting;  // a reload_rules() entry
  ReloadClass cls;
  // What changed, for the log: names and values, never a secret.
  std::vector<std::string> details;
};

struct ReloadPlan {
  std::vector<SettingChange> changes;  // the settings that differ, in rule order
  // The configuration to run: the new one, with every setting of class Restart
  // at its running value (a change of tls.enabled keeps the whole tls section).
  Config config;

  bool needs_new_hsm_sessions() const noexcept;
  // The changed settings that wait for a restart.
  std::vector<std::string_view> restart_settings() const;
  // Every change's details, in order: the `changes` field of the log line.
  std::vector<std::string> describe() const;
};

// Compares the running configuration with the one just loaded. Pure: reads
// nothing but its arguments.
ReloadPlan diff(const Config& running, const Config& next);

}  // namespace xks::config
