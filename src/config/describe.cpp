// describe_redacted() and config_warnings(): what the daemon logs about its
// configuration at startup. Neither ever touches a secret's value.
#include <sys/stat.h>

#include <ctime>
#include <nlohmann/json.hpp>
#include <thread>

#include <cstdio>

#include "sections/sections.hpp"
#include "xks/config/config.hpp"

namespace xks::config {

namespace {

using nlohmann::json;
using SysClock = std::chrono::system_clock;
using detail::rfc3339;

constexpr auto kExpiryNotice = std::chrono::hours(24 * 14);

}  // namespace

std::string detail::redacted(const SecretSource& s) {
  return "<redacted: " + s.describe() +
         (s.allow_insecure_permissions ? ", insecure permissions allowed" : "") + ">";
}

std::string detail::rfc3339(SysClock::time_point t) {
  const std::time_t tt = SysClock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&tt, &tm);
  char buf[32];
  const std::size_t n = std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return std::string(buf, n);
}

std::string describe_redacted(const Config& c) {
  json j;
  j["source"] = c.source.string();
  j["server"] = detail::describe_server(c.server);
  j["tls"] = detail::describe_tls(c.tls);
  j["hsm"] = detail::describe_hsms(c.hsms);
  j["keystores"] = detail::describe_keystores(c.keystores);
  j["metrics"] = detail::describe_metrics(c.metrics);
  j["health"] = detail::describe_health(c.health);
  j["reload"] = detail::describe_reload(c.reload);
  j["logging"] = detail::describe_logging(c.logging);
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
      out.emplace_back("hsm " + h.name + " has " + std::to_string(h.sessions) + " sessions for " +
                       std::to_string(threads) +
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
        out.emplace_back(
            "credential " + cr.access_key_id + " of " + ks.uri_path + " expires at " +
            rfc3339(*cr.not_after) +
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
