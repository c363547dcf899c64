// The server section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

void Loader::parse_listen(const YAML::Node& n, const std::string& path, ServerConfig& out) const {
  const std::string v = string_value(n, path);
  const std::string fix =
      "write host:port with an IP address, e.g. 0.0.0.0:443, 127.0.0.1:8443 or [::]:443";
  std::string host;
  std::string port;
  bool v6 = false;
  if (!v.empty() && v.front() == '[') {
    const auto close = v.find(']');
    if (close == std::string::npos || close + 1 >= v.size() || v[close + 1] != ':') {
      fail(path, quote(v) + " is not [IPv6]:port", fix);
    }
    host = v.substr(1, close - 1);
    port = v.substr(close + 2);
    v6 = true;
  } else {
    const auto colon = v.rfind(':');
    if (colon == std::string::npos) fail(path, quote(v) + " has no :port", fix);
    host = v.substr(0, colon);
    port = v.substr(colon + 1);
    if (host.find(':') != std::string::npos) {
      fail(path, quote(v) + " looks like an IPv6 address without brackets",
           "write IPv6 addresses in brackets, e.g. [::]:443 (IPv4: 0.0.0.0:443)");
    }
  }
  unsigned char buf[sizeof(in6_addr)];
  if (host.empty() || ::inet_pton(v6 ? AF_INET6 : AF_INET, host.c_str(), buf) != 1) {
    fail(path, quote(host) + " is not an IP" + std::string(v6 ? "v6" : "v4") + " address",
         fix + " (host names are not resolved: bind to an address)");
  }
  std::uint16_t p = 0;
  const char* const end = port.data() + port.size();
  const auto [ptr, ec] = std::from_chars(port.data(), end, p);
  if (port.empty() || port.size() > 5 || ptr != end || ec != std::errc{}) {
    fail(path, quote(port) + " is not a port number 0..65535",
         fix + "; KMS always connects to port 443 (port 0 picks a free port, for tests)");
  }
  out.listen_host = host;
  out.listen_port = p;
}

void Loader::parse_limits(const YAML::Node& n, const std::string& path, Limits& out) const {
  const Section s(*this, n, path,
                  {"max_body_bytes", "max_header_bytes", "max_header_count", "max_connections",
                   "hsm_queue_capacity", "max_requests_per_connection", "handshake_timeout_ms",
                   "header_timeout_ms", "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms",
                   "unauthenticated_idle_timeout_ms", "max_unauthenticated_per_source"});
  opt_uint(s, "max_body_bytes", out.max_body_bytes, 24 * 1024, 1024 * 1024,
           "a maximal KMS Encrypt request (4300-byte plaintext, 8 KiB AAD, 2048-char ARNs) is "
           "about 22 KiB of JSON, and anything much larger is only memory an attacker can use");
  opt_uint(s, "max_header_bytes", out.max_header_bytes, 4 * 1024, 64 * 1024,
           "KMS sends a few hundred bytes of headers; 16 KiB is plenty");
  opt_uint(s, "max_header_count", out.max_header_count, 8, 1000,
           "KMS sends fewer than a dozen header fields; many more is an attack on the parser");
  opt_uint(s, "hsm_queue_capacity", out.hsm_queue_capacity, 1, 1'000'000,
           "requests waiting for an HSM worker beyond this are answered 429 at once rather than "
           "queued past KMS's deadline");
  opt_uint(
      s, "max_connections", out.max_connections, 1, 1'000'000,
      "each connection costs a socket and a TLS state; keep it under the file-descriptor limit");
  opt_uint(s, "max_requests_per_connection", out.max_requests_per_connection, 0,
           std::numeric_limits<unsigned>::max(), "0 means unlimited");
  opt_millis(s, "handshake_timeout_ms", out.handshake_timeout, 100, 60'000,
             "a TLS handshake from KMS takes milliseconds; a long one is a slow-loris client");
  opt_millis(s, "header_timeout_ms", out.header_timeout, 100, 300'000,
             "bounds how long a silent client can hold a connection before sending headers");
  opt_millis(s, "body_timeout_ms", out.body_timeout, 100, 300'000,
             "bounds how long a client can take to send its body");
  opt_millis(s, "idle_timeout_ms", out.idle_timeout, 1'000, 3'600'000,
             "keep-alive connections from KMS are reused; idle ones are closed after this");
  opt_millis(s, "write_timeout_ms", out.write_timeout, 100, 300'000,
             "bounds how long a client that does not read its response can hold a connection");
  opt_millis(s, "unauthenticated_idle_timeout_ms", out.unauthenticated_idle_timeout, 100, 300'000,
             "a connection that has not yet sent a SigV4-verified request is closed after this "
             "much idle time; KMS signs its first request within milliseconds");
  opt_uint(s, "max_unauthenticated_per_source", out.max_unauthenticated_per_source, 0, 1'000'000,
           "0 turns the cap off, which is required behind an NLB without client IP preservation "
           "(every connection then comes from the NLB's own addresses)");
}

void Loader::parse_server(const YAML::Node& n, ServerConfig& out) const {
  const Section s(
      *this, n, "server",
      {"listen", "threads", "fleet_size", "ping_path", "request_deadline_ms", "shutdown_delay_ms",
       "limits", "user", "group", "allow_root", "allow_core_dumps"});
  if (s.has("listen")) parse_listen(s.get("listen"), s.path("listen"), out);
  opt_uint(s, "threads", out.threads, 0, 256,
           "0 uses one I/O thread per core; HSM calls run on their own pool, so more I/O threads "
           "than cores do not help");
  opt_uint(s, "fleet_size", out.fleet_size, 1, 100'000,
           "it is reported to KMS as xksProxyFleetSize, which must be at least 1");
  if (s.has("ping_path")) {
    const std::string p = string_value(s.get("ping_path"), s.path("ping_path"));
    const std::string fix =
        "use a path such as /ping (letters, digits, / - _ . ~), at most 128 characters";
    if (p.empty() || p.front() != '/')
      fail(s.path("ping_path"), quote(p) + " does not start with /", fix);
    if (p.size() > kMaxUriPathChars || !all_of_chars(p, is_ping_char) ||
        p.find("//") != std::string::npos) {
      fail(s.path("ping_path"), quote(p) + " is not a plain URL path", fix);
    }
    out.ping_path = p;
  }
  opt_millis(s, "request_deadline_ms", out.request_deadline, 10, 250,
             "KMS abandons every call after 250 ms, so an answer must leave before that; 200 "
             "leaves room for the network");
  opt_millis(s, "shutdown_delay_ms", out.shutdown_delay, 0, 15'000,
             "the delay, the 10 s drain and the HSM's 2 s grace must end within systemd's "
             "TimeoutStopSec=30");
  if (s.has("limits")) parse_limits(s.get("limits"), s.path("limits"), out.limits);
  // Names are checked for shape only: whether they exist is a fact of the host
  // the daemon starts on (checked when it drops privileges), not of the file.
  const auto account = [&](std::string_view key, std::string& dst, const char* example) {
    if (!s.has(key)) return;
    const std::string v = string_value(s.get(key), s.path(key));
    if (v.empty() || v.size() > kMaxAccountNameChars || v.front() == '-' ||
        !all_of_chars(v, is_account_char)) {
      fail(s.path(key), quote(v) + " is not a " + std::string(key) + " name or numeric id",
           std::string("use a system account such as ") + example +
               " (letters, digits, . _ -, not starting with -, at most 32 characters)");
    }
    dst = v;
  };
  account("user", out.user, "xks-proxy");
  account("group", out.group, "xks-proxy");
  if (!out.group.empty() && out.user.empty()) {
    fail(s.path("group"), "is set without server.user",
         "set server.user as well (the group alone would leave the proxy running as root), or "
         "delete server.group");
  }
  if (out.user == "root" || out.user == "0") {
    fail(s.path("user"), quote(out.user) + " is the superuser, which is no privilege drop",
         "name an unprivileged system account such as xks-proxy, or delete server.user and set "
         "server.allow_root: true if running as root is really intended");
  }
  if (s.has("allow_root")) out.allow_root = bool_value(s.get("allow_root"), s.path("allow_root"));
  if (s.has("allow_core_dumps")) {
    out.allow_core_dumps = bool_value(s.get("allow_core_dumps"), s.path("allow_core_dumps"));
  }
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_server(const ServerConfig& s) {
  return {{"listen", (s.listen_host.find(':') != std::string::npos ? "[" + s.listen_host + "]"
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
}

// ------------------------------------------------------------ reload rules

// A server.limits entry: live, compared as a number.
#define XKS_LIMIT(key, field)                                                           \
  Rule {                                                                                \
    "server.limits." key, kLive,                                                        \
        [](const Config& a, const Config& b, Details& d) {                              \
          value(d, "server.limits." key, a.server.limits.field, b.server.limits.field); \
        },                                                                              \
        nullptr                                                                         \
  }

namespace {
const Rule kRules[] = {
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
};
}  // namespace

#undef XKS_LIMIT

std::span<const Rule> server_rules() { return kRules; }

}  // namespace xks::config::detail
