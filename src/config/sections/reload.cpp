// The reload section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

void Loader::parse_reload(const YAML::Node& n, ReloadConfig& out) const {
  const Section s(*this, n, "reload", {"watch", "debounce_ms"});
  if (s.has("watch")) out.watch = bool_value(s.get("watch"), s.path("watch"));
  opt_millis(s, "debounce_ms", out.debounce, 10, 60'000,
             "a change is applied this long after the last of a burst of file events; a "
             "Kubernetes volume update is one burst of a few milliseconds");
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_reload(const ReloadConfig& reload) {
  return {{"watch", reload.watch}, {"debounce_ms", millis(reload.debounce)}};
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
    {"reload.watch", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "reload.watch", a.reload.watch, b.reload.watch);
     },
     nullptr},
    {"reload.debounce_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "reload.debounce_ms", a.reload.debounce, b.reload.debounce);
     },
     nullptr},
};
}  // namespace

std::span<const Rule> reload_rules() { return kRules; }

}  // namespace xks::config::detail
