// config::diff: one table of settings, each with its reload class, how two
// configurations are compared on it, and (for class Restart) how the running
// value is kept. The table is the only place that decides; the daemon applies
// the plan and the documentation's table is checked against reload_rules().
#include "xks/config/reload_plan.hpp"

#include "reload_rules.hpp"

#include <algorithm>

namespace xks::config {

namespace {

using detail::Rule;

// Every section's rules, in the order of the documentation's table.
const std::vector<Rule>& all_rules() {
  static const std::vector<Rule> rules = [] {
    std::vector<Rule> out;
    for (const auto section :
         {detail::server_rules(), detail::tls_rules(), detail::hsm_rules(),
          detail::keystores_rules(), detail::health_rules(), detail::reload_rules(),
          detail::metrics_rules(), detail::logging_rules()}) {
      out.insert(out.end(), section.begin(), section.end());
    }
    return out;
  }();
  return rules;
}

const std::vector<ReloadRule>& public_rules() {
  static const std::vector<ReloadRule> rules = [] {
    std::vector<ReloadRule> out;
    for (const auto& r : all_rules()) out.push_back({r.setting, r.cls});
    return out;
  }();
  return rules;
}

}  // namespace

std::string_view to_string(ReloadClass cls) noexcept {
  switch (cls) {
    case ReloadClass::Live: return "live";
    case ReloadClass::NewHsmSessions: return "new HSM sessions";
    case ReloadClass::Restart: return "restart";
  }
  return "unknown";
}

std::span<const ReloadRule> reload_rules() noexcept { return public_rules(); }

bool ReloadPlan::needs_new_hsm_sessions() const noexcept {
  return std::any_of(changes.begin(), changes.end(),
                     [](const SettingChange& c) { return c.cls == ReloadClass::NewHsmSessions; });
}

std::vector<std::string_view> ReloadPlan::restart_settings() const {
  std::vector<std::string_view> out;
  for (const auto& c : changes) {
    if (c.cls == ReloadClass::Restart) out.push_back(c.setting);
  }
  return out;
}

std::vector<std::string> ReloadPlan::describe() const {
  std::vector<std::string> out;
  for (const auto& c : changes) out.insert(out.end(), c.details.begin(), c.details.end());
  return out;
}

ReloadPlan diff(const Config& running, const Config& next) {
  ReloadPlan plan;
  plan.config = next;
  const auto& rules = all_rules();
  std::vector<detail::Details> found(rules.size());
  // What waits for a restart is judged against the file as written; then the
  // running values go back in, and everything else is judged against that.
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].cls != ReloadClass::Restart) continue;
    rules[i].compare(running, next, found[i]);
    if (!found[i].empty() && rules[i].keep != nullptr) rules[i].keep(running, plan.config);
  }
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (rules[i].cls != ReloadClass::Restart) rules[i].compare(running, plan.config, found[i]);
  }
  for (std::size_t i = 0; i < rules.size(); ++i) {
    if (!found[i].empty()) {
      plan.changes.push_back({rules[i].setting, rules[i].cls, std::move(found[i])});
    }
  }
  return plan;
}

}  // namespace xks::config
