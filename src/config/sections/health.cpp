// The health section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

void Loader::parse_health(const YAML::Node& n, HealthConfig& out) const {
  const Section s(*this, n, "health", {"interval_ms", "degraded_latency_ms", "max_age_ms"});
  opt_millis(
      s, "interval_ms", out.interval, 100, 60'000,
      "the background deep check runs this often; KMS accepts a cached result up to 60 s old");
  opt_millis(s, "degraded_latency_ms", out.degraded_latency, 1, 250,
             "a probe slower than this reports DEGRADED; above 250 ms KMS would already time out");
  opt_millis(s, "max_age_ms", out.max_age, 1'000, 60'000,
             "the XKS spec forbids answering health from a result older than 60 s");
  if (out.max_age <= out.interval) {
    fail(s.path("max_age_ms"),
         std::to_string(out.max_age.count()) + " is not above health.interval_ms " +
             std::to_string(out.interval.count()) +
             ", so every cached result would expire before the next check",
         "make max_age_ms larger than interval_ms (e.g. interval 10000, max_age 60000)");
  }
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_health(const HealthConfig& health) {
  return {{"interval_ms", millis(health.interval)},
          {"degraded_latency_ms", millis(health.degraded_latency)},
          {"max_age_ms", millis(health.max_age)}};
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
    {"health.interval_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "health.interval_ms", a.health.interval, b.health.interval);
     },
     nullptr},
    {"health.degraded_latency_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "health.degraded_latency_ms", a.health.degraded_latency, b.health.degraded_latency);
     },
     nullptr},
    {"health.max_age_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "health.max_age_ms", a.health.max_age, b.health.max_age);
     },
     nullptr},
};
}  // namespace

std::span<const Rule> health_rules() { return kRules; }

}  // namespace xks::config::detail
