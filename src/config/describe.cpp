// describe_redacted() and config_warnings(): what the daemon logs about its
// configuration at startup. Neither ever touches a secret's value.
#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include <cstdio>

#include "xks/config/config.hpp"
#include "xks/policy/policy.hpp"
#include "xks/hsm/ckr_names.hpp"

namespace xks::config {

namespace {

using nlohmann::json;
using SysClock = std::chrono::system_clock;

constexpr auto kExpiryNotice = std::chrono::hours(24 * 14);

std::string redacted(const SecretSource& s) {
  return "<redacted: " + s.describe() + (s.allow_insecure_permissions ? ", insecure permissions allowed" : "") + ">";
}

std::string rfc3339(SysClock::time_point t) {
  const std::time_t tt = SysClock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

json millis(Millis m) { return m.count(); }

}  // namespace

std::string describe_redacted(const Config& c) {
  json j;
  j["source"] = c.source.string();
  const auto& s = c.server;
  j["server"] = {
      {"listen", (s.listen_host.find(':') != std::string::npos ? "[" + s.listen_host + "]"
                                                                 : s.listen_host) +
                     ":" + std::to_string(s.listen_port)},
      {"threads", s.threads},
      {"fleet_size", s.fleet_size},
      {"ping_path", s.ping_path},
      {"request_deadline_ms", millis(s.request_deadline)},
      {"shutdown_delay_ms", millis(s.shutdown_delay)},
      {"limits",
       {{"max_body_bytes", s.limits.max_body_bytes},
        {"max_header_bytes", s.limits.max_header_bytes},
        {"max_header_count", s.limits.max_header_count},
        {"hsm_queue_capacity", s.limits.hsm_queue_capacity},
        {"max_connections", s.limits.max_connections},
        {"max_requests_per_connection", s.limits.max_requests_per_connection},
        {"handshake_timeout_ms", millis(s.limits.handshake_timeout)},
        {"header_timeout_ms", millis(s.limits.header_timeout)},
        {"body_timeout_ms", millis(s.limits.body_timeout)},
        {"idle_timeout_ms", millis(s.limits.idle_timeout)},
        {"write_timeout_ms", millis(s.limits.write_timeout)},
        {"unauthenticated_idle_timeout_ms", millis(s.limits.unauthenticated_idle_timeout)},
        {"max_unauthenticated_per_source", s.limits.max_unauthenticated_per_source}}},
      {"user", s.user},
      {"group", s.group},
      {"allow_root", s.allow_root},
      {"allow_core_dumps", s.allow_core_dumps}};
  j["tls"] = {{"enabled", c.tls.enabled},
              {"certificate", c.tls.certificate.string()},
              {"private_key", c.tls.private_key.string()},
              {"client_ca", c.tls.client_ca.string()},
              {"client_names", c.tls.client_names},
              {"client_names_from", c.tls.client_names_defaulted ? "keystores[].region" : "config"},
              {"client_names_match", c.tls.client_names_match == config::TlsConfig::NameMatch::Cn
                                         ? "cn"
                                         : "cn_or_dns_san"},
              {"session_tickets", c.tls.session_tickets},
              {"ticket_key_rotation_hours", c.tls.ticket_key_rotation.count()}};
  json hsms = json::array();
  for (const auto& h : c.hsms) {
    json e = {{"name", h.name},
              {"module", h.module.string()},
              {"pin", redacted(h.pin_source)},
              {"sessions", h.sessions},
              {"health_key", h.health_key},
              {"vendor", std::string(to_string(h.vendor))},
              {"iv", std::string(to_string(h.iv))},
              {"pin_format", std::string(to_string(h.pin_format))},
              {"init_os_locking", h.init_os_locking}};
    json codes = json::array();
    for (const unsigned long rv : h.auth_failure_codes) {
      const std::string_view name = hsm::ckr_table_name(rv);
      codes.push_back(name.empty() ? std::to_string(rv) : std::string(name));
    }
    e["auth_failure_codes"] = std::move(codes);
    if (h.init_args) e["init_args"] = *h.init_args;
    // Variable names only: a value could be anything the module reads.
    json env = json::array();
    for (const auto& [name, value] : h.environment) env.push_back(name);
    if (!env.empty()) e["environment"] = std::move(env);
    if (h.token_label) e["token_label"] = *h.token_label;
    if (h.token_serial) e["token_serial"] = *h.token_serial;
    if (h.slot_id) e["slot_id"] = *h.slot_id;
    hsms.push_back(std::move(e));
  }
  j["hsm"] = std::move(hsms);
  json stores = json::array();
  for (const auto& ks : c.keystores) {
    json creds = json::array();
    for (const auto& cr : ks.credentials) {
      json e = {{"access_key_id", cr.access_key_id}, {"secret", redacted(cr.secret_source)}};
      if (cr.not_after) e["not_after"] = rfc3339(*cr.not_after);
      creds.push_back(std::move(e));
    }
    json keys = json::array();
    for (const auto& k : ks.keys) {
      json e = {{"id", k.id}, {"label", k.label}, {"enabled", k.enabled}};
      if (k.expect_usage) {
        json usage = json::array();
        if (k.expect_usage->encrypt) usage.push_back("ENCRYPT");
        if (k.expect_usage->decrypt) usage.push_back("DECRYPT");
        e["expect_usage"] = std::move(usage);
      }
      keys.push_back(std::move(e));
    }
    nlohmann::json store = {{"uri_path", ks.uri_path}, {"credentials", std::move(creds)}, {"keys", std::move(keys)}};
    store["enabled"] = ks.enabled;
    if (ks.region) store["region"] = *ks.region;
    if (ks.quota_rate > 0) store["quota"] = {{"rate", ks.quota_rate}, {"burst", ks.quota_burst}};
    if (ks.policy) {
      store["policy"] = {{"file", ks.policy_file.string()},
                         {"enforce", ks.policy->enforce()},
                         {"statements", ks.policy->statements().size()}};
    }
    stores.push_back(std::move(store));
  }
  j["keystores"] = std::move(stores);
  j["metrics"] = {{"enabled", c.metrics.enabled},
                  {"listen", c.metrics.listen_host + ":" + std::to_string(c.metrics.listen_port)}};
  j["health"] = {{"interval_ms", millis(c.health.interval)},
                 {"degraded_latency_ms", millis(c.health.degraded_latency)},
                 {"max_age_ms", millis(c.health.max_age)}};
  j["logging"] = {{"level", c.logging.level},
                  {"format", c.logging.format == LoggingConfig::Format::Json ? "json" : "text"},
                  {"flush_interval_ms", millis(c.logging.flush_interval)}};
  if (const auto& f = c.logging.file) {
    json file = {{"path", f->path.string()}, {"max_files", f->max_files}};
    if (f->rotate == LogFileConfig::Rotate::Daily) {
      char at[8];
      std::snprintf(at, sizeof at, "%02d:%02d", f->daily_hour, f->daily_minute);
      file["rotate"] = "daily";
      file["daily_at"] = at;
    } else {
      file["rotate"] = "size";
      file["max_size_mb"] = f->max_size_mb;
    }
    j["logging"]["file"] = std::move(file);
  } else {
    j["logging"]["output"] = "stdout";
  }
  // Invalid UTF-8 in a label must not make the startup log line throw.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

std::vector<std::string> config_warnings(const Config& c, SysClock::time_point now) {
  std::vector<std::string> out;
  if (!c.tls.enabled) {
    out.emplace_back(
        "TLS IS DISABLED (tls.enabled: false): requests, credentials' signatures and key ids "
        "travel in clear text, and KMS itself only connects over HTTPS. Use this only for local "
        "tests or behind a load balancer that terminates TLS on the same host.");
  } else {
    if (c.tls.client_ca.empty()) {
      out.emplace_back(
          "tls.client_ca is not set: mutual TLS is off, so any client that holds a credential "
          "can connect; the XKS spec recommends requiring KMS's client certificate");
    }
    struct stat st {};
    if (::stat(c.tls.private_key.c_str(), &st) == 0 && (st.st_mode & 077) != 0) {
      out.emplace_back("tls.private_key " + c.tls.private_key.string() +
                       " is readable or writable by group or others; chmod 600 it");
    }
  }
  if (c.server.request_deadline > Millis(200)) {
    out.emplace_back("server.request_deadline_ms is " +
                     std::to_string(c.server.request_deadline.count()) +
                     " ms: KMS gives up after 250 ms including network round trips, so late "
                     "answers may never arrive; 200 ms or less is safer");
  }
  unsigned threads = c.server.threads;
  if (threads == 0) threads = std::max(1U, std::thread::hardware_concurrency());
  for (const auto& h : c.hsms) {
    if (h.sessions < threads) {
      out.emplace_back("hsm " + h.name + " has " + std::to_string(h.sessions) +
                       " sessions for " + std::to_string(threads) +
                       " I/O threads: bursts will be answered with ThrottlingException sooner; "
                       "raise sessions if the HSM allows it");
    }
  }
  for (const auto& ks : c.keystores) {
    for (const auto& cr : ks.credentials) {
      if (!cr.not_after) continue;
      if (*cr.not_after <= now) {
        out.emplace_back("credential " + cr.access_key_id + " of " + ks.uri_path +
                         " passed its not_after (" + rfc3339(*cr.not_after) +
                         "); rotate it: add a new credential, update KMS, remove this one");
      } else if (*cr.not_after - now <= kExpiryNotice) {
        out.emplace_back("credential " + cr.access_key_id + " of " + ks.uri_path +
                         " expires at " + rfc3339(*cr.not_after) +
                         " (within 14 days); rotate it: add a new credential, update KMS, remove the old one");
      }
    }
  }
  return out;
}

std::vector<std::string> config_warnings(const Config& config) {
  return config_warnings(config, SysClock::now());
}

}  // namespace xks::config
