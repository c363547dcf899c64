// The metrics section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

void Loader::parse_metrics(const YAML::Node& n, MetricsConfig& out) const {
  const Section s(*this, n, "metrics", {"enabled", "listen"});
  out.enabled = true;
  if (s.has("enabled")) out.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("listen")) {
    ServerConfig tmp;
    parse_listen(s.get("listen"), s.path("listen"), tmp);
    out.listen_host = tmp.listen_host;
    out.listen_port = tmp.listen_port;
  }
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_metrics(const MetricsConfig& metrics) {
  return {{"enabled", metrics.enabled},
          {"listen", metrics.listen_host + ":" + std::to_string(metrics.listen_port)}};
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
    {"metrics.enabled", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "metrics.enabled", a.metrics.enabled, b.metrics.enabled);
     },
     [](const Config& a, Config& b) { b.metrics.enabled = a.metrics.enabled; }},
    {"metrics.listen", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       if (a.metrics.listen_host != b.metrics.listen_host ||
           a.metrics.listen_port != b.metrics.listen_port) {
         d.push_back("metrics.listen: " + b.metrics.listen_host + ":" +
                     std::to_string(b.metrics.listen_port));
       }
     },
     [](const Config& a, Config& b) {
       b.metrics.listen_host = a.metrics.listen_host;
       b.metrics.listen_port = a.metrics.listen_port;
     }},
};
}  // namespace

std::span<const Rule> metrics_rules() { return kRules; }

}  // namespace xks::config::detail
