// config::diff: one table of settings, each with its reload class, how two
// configurations are compared on it, and (for class Restart) how the running
// value is kept. The table is the only place that decides; the daemon applies
// the plan and the documentation's table is checked against reload_rules().
#include "xks/config/reload_plan.hpp"

#include <algorithm>
#include <array>
#include <numeric>

namespace xks::config {

namespace {

using Details = std::vector<std::string>;

std::string text(const std::string& v) { return v; }
std::string text(const std::filesystem::path& v) { return v.string(); }
std::string text(bool v) { return v ? "true" : "false"; }
std::string text(Millis v) { return std::to_string(v.count()); }
std::string text(std::chrono::hours v) { return std::to_string(v.count()); }
std::string text(const std::optional<std::string>& v) { return v ? *v : "unset"; }
std::string text(const std::optional<std::uint64_t>& v) {
  return v ? std::to_string(*v) : "unset";
}
std::string text(IvMode v) { return std::string(to_string(v)); }
std::string text(HsmVendor v) { return std::string(to_string(v)); }
std::string text(PinFormat v) { return std::string(to_string(v)); }
std::string text(TlsConfig::NameMatch v) {
  return v == TlsConfig::NameMatch::Cn ? "cn" : "cn_or_dns_san";
}
std::string text(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
template <class T>
  requires std::is_integral_v<T>
std::string text(T v) {
  return std::to_string(v);
}

// "name: <new value>" when the values differ.
template <class T>
void value(Details& d, std::string_view name, const T& before, const T& after) {
  if (!(before == after)) d.push_back(std::string(name) + ": " + text(after));
}

// The name of one HSM's setting in a log line: hsm.<key> for a single HSM,
// hsm[<i>].<key> in a list.
std::string hsm_setting(const Config& c, std::size_t i, std::string_view key) {
  return (c.hsms.size() == 1 ? std::string("hsm") : "hsm[" + std::to_string(i) + "]") + "." +
         std::string(key);
}

// Calls f(running_hsm, next_hsm, i) for every HSM position both have.
template <class F>
void each_hsm(const Config& a, const Config& b, F f) {
  for (std::size_t i = 0; i < std::min(a.hsms.size(), b.hsms.size()); ++i) f(a.hsms[i], b.hsms[i], i);
}

// An HSM setting compared position by position.
template <class Get>
void hsm_value(Details& d, const Config& a, const Config& b, std::string_view key, Get get) {
  each_hsm(a, b, [&](const HsmConfig& x, const HsmConfig& y, std::size_t i) {
    value(d, hsm_setting(b, i, key), get(x), get(y));
  });
}

// Calls f(running_store, next_store) for every key store both have (by uri_path).
template <class F>
void each_keystore(const Config& a, const Config& b, F f) {
  for (const auto& ks : b.keystores) {
    if (const auto* old = a.find_keystore(ks.uri_path)) f(*old, ks);
  }
}

// Quota rates and bursts are whole numbers in the file.
std::string whole(double v) { return std::to_string(static_cast<long long>(v)); }

unsigned total_sessions(const Config& c) {
  return std::accumulate(c.hsms.begin(), c.hsms.end(), 0U,
                         [](unsigned n, const HsmConfig& h) { return n + h.sessions; });
}

bool same_credential(const Credential& a, const Credential& b) {
  return a.secret == b.secret && a.secret_source.describe() == b.secret_source.describe() &&
         a.not_after == b.not_after;
}

bool same_usage(const std::optional<KeyEntry::Usage>& a, const std::optional<KeyEntry::Usage>& b) {
  if (a.has_value() != b.has_value()) return false;
  return !a || (a->encrypt == b->encrypt && a->decrypt == b->decrypt);
}

using Compare = void (*)(const Config& running, const Config& next, Details& out);
using Keep = void (*)(const Config& running, Config& next);

struct Rule {
  std::string_view setting;
  ReloadClass cls;
  Compare compare;
  Keep keep;  // class Restart: puts the running value back into `next`
};

constexpr auto kLive = ReloadClass::Live;
constexpr auto kHsm = ReloadClass::NewHsmSessions;
constexpr auto kRestart = ReloadClass::Restart;

// A server.limits entry: live, compared as a number.
#define XKS_LIMIT(key, field)                                                       \
  Rule {                                                                            \
    "server.limits." key, kLive,                                                    \
        [](const Config& a, const Config& b, Details& d) {                          \
          value(d, "server.limits." key, a.server.limits.field, b.server.limits.field); \
        },                                                                          \
        nullptr                                                                     \
  }

const Rule kRules[] = {
    // ------------------------------------------------------------------ server
    {"server.listen", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       if (a.server.listen_host != b.server.listen_host ||
           a.server.listen_port != b.server.listen_port) {
         d.push_back("server.listen: " + b.server.listen_host + ":" +
                     std::to_string(b.server.listen_port));
       }
     },
     [](const Config& a, Config& b) {
       b.server.listen_host = a.server.listen_host;
       b.server.listen_port = a.server.listen_port;
     }},
    {"server.threads", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.threads", a.server.threads, b.server.threads);
     },
     [](const Config& a, Config& b) { b.server.threads = a.server.threads; }},
    {"server.user", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.user", a.server.user, b.server.user);
     },
     [](const Config& a, Config& b) { b.server.user = a.server.user; }},
    {"server.group", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.group", a.server.group, b.server.group);
     },
     [](const Config& a, Config& b) { b.server.group = a.server.group; }},
    {"server.allow_root", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.allow_root", a.server.allow_root, b.server.allow_root);
     },
     [](const Config& a, Config& b) { b.server.allow_root = a.server.allow_root; }},
    {"server.allow_core_dumps", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.allow_core_dumps", a.server.allow_core_dumps, b.server.allow_core_dumps);
     },
     [](const Config& a, Config& b) { b.server.allow_core_dumps = a.server.allow_core_dumps; }},
    {"server.fleet_size", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.fleet_size", a.server.fleet_size, b.server.fleet_size);
     },
     nullptr},
    {"server.ping_path", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.ping_path", a.server.ping_path, b.server.ping_path);
     },
     nullptr},
    {"server.request_deadline_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.request_deadline_ms", a.server.request_deadline, b.server.request_deadline);
     },
     nullptr},
    {"server.shutdown_delay_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "server.shutdown_delay_ms", a.server.shutdown_delay, b.server.shutdown_delay);
     },
     nullptr},
    XKS_LIMIT("max_body_bytes", max_body_bytes),
    XKS_LIMIT("max_header_bytes", max_header_bytes),
    XKS_LIMIT("max_header_count", max_header_count),
    XKS_LIMIT("max_connections", max_connections),
    XKS_LIMIT("max_requests_per_connection", max_requests_per_connection),
    XKS_LIMIT("handshake_timeout_ms", handshake_timeout),
    XKS_LIMIT("header_timeout_ms", header_timeout),
    XKS_LIMIT("body_timeout_ms", body_timeout),
    XKS_LIMIT("idle_timeout_ms", idle_timeout),
    XKS_LIMIT("write_timeout_ms", write_timeout),
    XKS_LIMIT("unauthenticated_idle_timeout_ms", unauthenticated_idle_timeout),
    XKS_LIMIT("max_unauthenticated_per_source", max_unauthenticated_per_source),
    XKS_LIMIT("hsm_queue_capacity", hsm_queue_capacity),
    // --------------------------------------------------------------------- tls
    {"tls.enabled", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.enabled", a.tls.enabled, b.tls.enabled);
     },
     // Without the other half of the switch the rest of the section means
     // nothing: the running TLS settings stay as they are.
     [](const Config& a, Config& b) { b.tls = a.tls; }},
    {"tls.certificate", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.certificate", a.tls.certificate, b.tls.certificate);
     },
     nullptr},
    {"tls.private_key", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.private_key", a.tls.private_key, b.tls.private_key);
     },
     nullptr},
    {"tls.client_ca", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.client_ca", a.tls.client_ca, b.tls.client_ca);
     },
     nullptr},
    {"tls.client_names", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.client_names", a.tls.client_names, b.tls.client_names);
     },
     nullptr},
    {"tls.client_names_match", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.client_names_match", a.tls.client_names_match, b.tls.client_names_match);
     },
     nullptr},
    {"tls.session_tickets", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.session_tickets", a.tls.session_tickets, b.tls.session_tickets);
     },
     nullptr},
    {"tls.ticket_key_rotation_hours", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "tls.ticket_key_rotation_hours", a.tls.ticket_key_rotation,
             b.tls.ticket_key_rotation);
     },
     nullptr},
    // --------------------------------------------------------------------- hsm
    {"hsm", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       if (a.hsms.size() != b.hsms.size()) {
         d.push_back("hsm: " + std::to_string(b.hsms.size()) + " HSMs (were " +
                     std::to_string(a.hsms.size()) + ")");
       }
     },
     nullptr},
    {"hsm.name", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "name", [](const HsmConfig& h) { return h.name; });
     },
     nullptr},
    {"hsm.module", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "module", [](const HsmConfig& h) { return h.module; });
     },
     nullptr},
    {"hsm.token_label", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "token_label", [](const HsmConfig& h) { return h.token_label; });
     },
     nullptr},
    {"hsm.token_serial", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "token_serial", [](const HsmConfig& h) { return h.token_serial; });
     },
     nullptr},
    {"hsm.slot_id", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "slot_id", [](const HsmConfig& h) { return h.slot_id; });
     },
     nullptr},
    {"hsm.pin", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       // The source is named, the value never is.
       each_hsm(a, b, [&](const HsmConfig& x, const HsmConfig& y, std::size_t i) {
         if (x.pin_source.describe() != y.pin_source.describe()) {
           d.push_back(hsm_setting(b, i, "pin") + ": " + y.pin_source.describe());
         } else if (!(x.pin == y.pin)) {
           d.push_back(hsm_setting(b, i, "pin") + ": changed");
         }
       });
     },
     nullptr},
    {"hsm.sessions", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "sessions", [](const HsmConfig& h) { return h.sessions; });
     },
     nullptr},
    // The HSM worker threads are started once, one per session of the
    // configuration the daemon started with.
    {"hsm.sessions (sum: HSM worker threads)", kRestart,
     [](const Config& a, const Config& b, Details& d) {
       if (total_sessions(a) != total_sessions(b)) {
         d.push_back("HSM worker threads (sum of hsm sessions): " +
                     std::to_string(total_sessions(b)));
       }
     },
     nullptr},
    {"hsm.health_key", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "health_key", [](const HsmConfig& h) { return h.health_key; });
     },
     nullptr},
    {"hsm.vendor", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "vendor", [](const HsmConfig& h) { return h.vendor; });
     },
     nullptr},
    {"hsm.iv", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "iv", [](const HsmConfig& h) { return h.iv; });
     },
     nullptr},
    {"hsm.pin_format", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "pin_format", [](const HsmConfig& h) { return h.pin_format; });
     },
     nullptr},
    {"hsm.auth_failure_codes", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       each_hsm(a, b, [&](const HsmConfig& x, const HsmConfig& y, std::size_t i) {
         if (x.auth_failure_codes != y.auth_failure_codes) {
           d.push_back(hsm_setting(b, i, "auth_failure_codes") + ": changed");
         }
       });
     },
     nullptr},
    {"hsm.init_args", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "init_args", [](const HsmConfig& h) { return h.init_args; });
     },
     nullptr},
    {"hsm.init_os_locking", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       hsm_value(d, a, b, "init_os_locking", [](const HsmConfig& h) { return h.init_os_locking; });
     },
     nullptr},
    {"hsm.environment", kHsm,
     [](const Config& a, const Config& b, Details& d) {
       // Variable names only: a value could be anything the module reads.
       each_hsm(a, b, [&](const HsmConfig& x, const HsmConfig& y, std::size_t i) {
         if (x.environment != y.environment) {
           std::vector<std::string> names;
           for (const auto& [name, v] : y.environment) names.push_back(name);
           d.push_back(hsm_setting(b, i, "environment") + ": " + text(names));
         }
       });
     },
     nullptr},
    // --------------------------------------------------------------- keystores
    {"keystores", kLive,
     [](const Config& a, const Config& b, Details& d) {
       for (const auto& ks : b.keystores) {
         if (a.find_keystore(ks.uri_path) == nullptr) d.push_back("keystore added: " + ks.uri_path);
       }
       for (const auto& ks : a.keystores) {
         if (b.find_keystore(ks.uri_path) == nullptr) {
           d.push_back("keystore removed: " + ks.uri_path);
         }
       }
     },
     nullptr},
    {"keystores.enabled", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.enabled != y.enabled) {
           d.push_back(y.uri_path + (y.enabled ? ": keystore enabled" : ": keystore disabled"));
         }
       });
     },
     nullptr},
    {"keystores.region", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.region != y.region) d.push_back(y.uri_path + ": region " + text(y.region));
       });
     },
     nullptr},
    {"keystores.credentials", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         for (const auto& cred : y.credentials) {
           const auto old = std::find_if(
               x.credentials.begin(), x.credentials.end(),
               [&](const Credential& o) { return o.access_key_id == cred.access_key_id; });
           if (old == x.credentials.end()) {
             d.push_back(y.uri_path + ": credential added: " + cred.access_key_id);
           } else if (!same_credential(*old, cred)) {
             d.push_back(y.uri_path + ": credential changed: " + cred.access_key_id);
           }
         }
         for (const auto& o : x.credentials) {
           const bool kept = std::any_of(
               y.credentials.begin(), y.credentials.end(),
               [&](const Credential& c) { return c.access_key_id == o.access_key_id; });
           if (!kept) d.push_back(y.uri_path + ": credential removed: " + o.access_key_id);
         }
       });
     },
     nullptr},
    {"keystores.keys", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         for (const auto& key : y.keys) {
           const auto prev = std::find_if(x.keys.begin(), x.keys.end(),
                                          [&](const KeyEntry& o) { return o.id == key.id; });
           if (prev == x.keys.end()) {
             d.push_back(y.uri_path + ": key added: " + key.id);
             continue;
           }
           if (prev->enabled != key.enabled) {
             d.push_back(y.uri_path + ": key " + key.id + (key.enabled ? " enabled" : " disabled"));
           }
           if (prev->label != key.label || !same_usage(prev->expect_usage, key.expect_usage)) {
             d.push_back(y.uri_path + ": key changed: " + key.id);
           }
         }
         for (const auto& o : x.keys) {
           const bool kept = std::any_of(y.keys.begin(), y.keys.end(),
                                         [&](const KeyEntry& k) { return k.id == o.id; });
           if (!kept) d.push_back(y.uri_path + ": key removed: " + o.id);
         }
       });
     },
     nullptr},
    {"keystores.quota", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.quota_rate != y.quota_rate || x.quota_burst != y.quota_burst) {
           d.push_back(y.uri_path + (y.quota_rate > 0
                                         ? ": quota rate " + whole(y.quota_rate) +
                                               " burst " + whole(y.quota_burst)
                                         : ": quota off"));
         }
       });
     },
     nullptr},
    {"keystores.policy", kLive,
     [](const Config& a, const Config& b, Details& d) {
       each_keystore(a, b, [&](const KeyStore& x, const KeyStore& y) {
         if (x.policy_file != y.policy_file) {
           d.push_back(y.uri_path + ": policy " +
                       (y.policy_file.empty() ? std::string("off") : y.policy_file.string()));
         }
       });
     },
     nullptr},
    // ------------------------------------------------------------------ health
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
    // ----------------------------------------------------------------- metrics
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
    // ----------------------------------------------------------------- logging
    {"logging.level", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "logging.level", a.logging.level, b.logging.level);
     },
     nullptr},
    {"logging.format", kLive,
     [](const Config& a, const Config& b, Details& d) {
       if (a.logging.format != b.logging.format) d.push_back("logging.format");
     },
     nullptr},
    {"logging.file", kLive,
     [](const Config& a, const Config& b, Details& d) {
       if (a.logging.file != b.logging.file) {
         d.push_back("logging.file: " +
                     (b.logging.file ? b.logging.file->path.string() : std::string("stdout")));
       }
     },
     nullptr},
    {"logging.flush_interval_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "logging.flush_interval_ms", a.logging.flush_interval, b.logging.flush_interval);
     },
     nullptr},
};

#undef XKS_LIMIT

constexpr std::size_t kRuleCount = std::size(kRules);

const std::array<ReloadRule, kRuleCount>& public_rules() {
  static const auto rules = [] {
    std::array<ReloadRule, kRuleCount> out{};
    for (std::size_t i = 0; i < kRuleCount; ++i) out[i] = {kRules[i].setting, kRules[i].cls};
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
  return std::any_of(changes.begin(), changes.end(), [](const SettingChange& c) {
    return c.cls == ReloadClass::NewHsmSessions;
  });
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
  std::array<Details, kRuleCount> found;
  // What waits for a restart is judged against the file as written; then the
  // running values go back in, and everything else is judged against that.
  for (std::size_t i = 0; i < kRuleCount; ++i) {
    if (kRules[i].cls != ReloadClass::Restart) continue;
    kRules[i].compare(running, next, found[i]);
    if (!found[i].empty() && kRules[i].keep != nullptr) kRules[i].keep(running, plan.config);
  }
  for (std::size_t i = 0; i < kRuleCount; ++i) {
    if (kRules[i].cls != ReloadClass::Restart) kRules[i].compare(running, plan.config, found[i]);
  }
  for (std::size_t i = 0; i < kRuleCount; ++i) {
    if (!found[i].empty()) {
      plan.changes.push_back({kRules[i].setting, kRules[i].cls, std::move(found[i])});
    }
  }
  return plan;
}

}  // namespace xks::config
