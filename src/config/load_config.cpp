// load_config(): YAML (or JSON, which is YAML) → validated, secret-resolved
// Config. Every rule stops at the first problem with a ConfigError that names
// the setting and says how to fix it, because the person reading it is an
// operator at startup who cannot read this code. Values from the file are
// quoted in messages; secrets never are (they are never even echoed when they
// are written inline by mistake).
#include <arpa/inet.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <limits>
#include <set>
#include <iterator>

#include "secret_reader.hpp"
#include "xks/config/config.hpp"
#include "xks/policy/policy.hpp"
#include "xks/config/hsm_vendor.hpp"
#include "xks/hsm/ckr_names.hpp"

namespace xks::config {

namespace {

namespace fs = std::filesystem;
using Keys = std::initializer_list<std::string_view>;

constexpr std::size_t kMaxUriPathChars = 128;          // XKS spec: XksProxyUriPath
constexpr std::size_t kMaxKeyIdChars = 128;            // XKS spec: externalKeyId
constexpr std::size_t kMaxTokenLabelChars = 32;        // CK_TOKEN_INFO.label is 32 bytes
constexpr std::size_t kMaxTokenSerialChars = 16;       // CK_TOKEN_INFO.serialNumber is 16 bytes
constexpr std::size_t kMaxHsms = 10;                   // ekmFleetDetails holds 1-10 entries
constexpr std::size_t kMaxPinChars = 255;
constexpr std::string_view kUriSuffix = "/kms/xks/v1";
constexpr std::size_t kShownValueChars = 80;
constexpr std::size_t kMaxAccountNameChars = 32;       // useradd's limit

// ---------------------------------------------------------------- text helpers

// A value from the file, shown in a one-line message: quoted, control
// characters escaped, long values cut so that the message stays readable.
std::string quote(std::string_view v) {
  std::string out = "\"";
  const bool cut = v.size() > kShownValueChars;
  for (const char c : v.substr(0, kShownValueChars)) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (u < 0x20 || u == 0x7f) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[u >> 4U];
      out += kHex[u & 0xfU];
    } else {
      out += c;
    }
  }
  out += cut ? "...\"" : "\"";
  return out;
}

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> prev(b.size() + 1);
  std::vector<std::size_t> cur(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      const std::size_t subst = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0U : 1U);
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, subst});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string join_keys(Keys known) {
  std::string out;
  for (const auto k : known) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

std::string sub(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
std::string at(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

bool all_of_chars(std::string_view s, bool (*ok)(char)) {
  return std::all_of(s.begin(), s.end(), ok);
}
bool is_alnum(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}
bool is_uri_path_char(char c) { return is_alnum(c) || c == '/' || c == '-' || c == '_'; }
bool is_key_id_char(char c) { return is_alnum(c) || c == '.' || c == '-' || c == '_'; }
bool is_akid_char(char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }
bool is_secret_char(char c) { return is_alnum(c) || c == '+' || c == '/' || c == '='; }
bool is_env_char(char c) { return is_alnum(c) || c == '_'; }
// POSIX portable user/group names (plus digits for a numeric id).
bool is_account_char(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; }
bool is_ping_char(char c) {
  return is_alnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~';
}
// An AWS region name: lower-case letters, digits and '-', starting with a
// letter, ending with a digit, with at least two parts (us-east-1,
// us-gov-west-1, cn-north-1).
bool is_aws_region(std::string_view r) {
  if (r.empty() || r.size() > 32 || !(r.front() >= 'a' && r.front() <= 'z') ||
      !(r.back() >= '0' && r.back() <= '9') || r.find('-') == std::string_view::npos ||
      r.find("--") != std::string_view::npos) {
    return false;
  }
  return std::all_of(r.begin(), r.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}
bool is_printable(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u != 0x7f;
}

const char* kind_of(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Map: return "a map";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Scalar: return "a single value";
    case YAML::NodeType::Null: return "empty";
    case YAML::NodeType::Undefined: return "missing";
  }
  return "unknown";
}

// ------------------------------------------------------------------- loader

class Loader {
 public:
  explicit Loader(fs::path file) : file_(std::move(file)) {
    std::error_code ec;
    const fs::path abs = fs::absolute(file_, ec);
    dir_ = (ec ? file_ : abs).parent_path();
  }

  Config load();

 private:
  // A map node whose keys have been checked against the known set.
  class Section {
   public:
    Section(const Loader& l, const YAML::Node& node, std::string path, Keys known)
        : node_(node), path_(std::move(path)) {
      l.check_keys(node_, path_, known);
    }
    bool has(std::string_view key) const { return node_[std::string(key)].IsDefined(); }
    YAML::Node get(std::string_view key) const { return node_[std::string(key)]; }
    std::string path(std::string_view key) const { return sub(path_, key); }
    const std::string& path() const { return path_; }

   private:
    const YAML::Node node_;  // const: operator[] must never insert a key
    std::string path_;
  };

  [[noreturn]] void fail(const std::string& setting, const std::string& problem,
                         const std::string& fix) const {
    throw ConfigError(file_, setting, problem, fix);
  }

  void check_keys(const YAML::Node& node, const std::string& path, Keys known) const;
  void require_value(const YAML::Node& n, const std::string& path) const;

  std::string string_value(const YAML::Node& n, const std::string& path) const;
  std::string nonempty_string(const Section& s, std::string_view key, const std::string& fix) const;
  std::uint64_t uint_value(const YAML::Node& n, const std::string& path, std::uint64_t lo,
                           std::uint64_t hi, const std::string& why) const;
  template <class T>
  void opt_uint(const Section& s, std::string_view key, T& out, std::uint64_t lo, std::uint64_t hi,
                const std::string& why) const {
    static_assert(std::is_unsigned_v<T>);
    if (!s.has(key)) return;
    hi = std::min<std::uint64_t>(hi, std::numeric_limits<T>::max());
    out = static_cast<T>(uint_value(s.get(key), s.path(key), lo, hi, why));
  }
  void opt_millis(const Section& s, std::string_view key, Millis& out, std::uint64_t lo,
                  std::uint64_t hi, const std::string& why) const {
    if (!s.has(key)) return;
    out = Millis(static_cast<Millis::rep>(uint_value(s.get(key), s.path(key), lo, hi, why)));
  }
  bool bool_value(const YAML::Node& n, const std::string& path) const;
  // A handle, not a reference: callers pass temporaries from Section::get.
  YAML::Node sequence(const YAML::Node& n, const std::string& path,
                      const std::string& what) const;

  fs::path resolve(const std::string& p) const;
  void check_readable_file(const fs::path& p, const std::string& setting,
                           const std::string& what, const std::string& fix) const;
  SecretSource secret_source(const YAML::Node& n, const std::string& path) const;

  void parse_server(const YAML::Node& n, ServerConfig& out) const;
  void parse_limits(const YAML::Node& n, const std::string& path, Limits& out) const;
  void parse_listen(const YAML::Node& n, const std::string& path, ServerConfig& out) const;
  void parse_tls(const YAML::Node& n, TlsConfig& out) const;
  HsmConfig parse_hsm(const YAML::Node& n, const std::string& path, std::size_t index) const;
  // hsm.vendor and the settings whose defaults it sets (IV mode, tag-failure
  // codes, PIN format, C_Initialize arguments), and hsm.environment.
  void parse_hsm_behaviour(const Section& s, HsmConfig& h) const;
  KeyStore parse_keystore(const YAML::Node& n, const std::string& path) const;
  Credential parse_credential(const YAML::Node& n, const std::string& path) const;
  KeyEntry parse_key(const YAML::Node& n, const std::string& path) const;
  void parse_health(const YAML::Node& n, HealthConfig& out) const;
  void parse_logging(const YAML::Node& n, LoggingConfig& out) const;
  LogFileConfig parse_log_file(const YAML::Node& n, const std::string& path) const;
  void parse_metrics(const YAML::Node& n, MetricsConfig& out) const;
  void default_client_names(Config& c) const;
  void cross_check(const Config& c) const;

  fs::path file_;
  fs::path dir_;
};

void Loader::check_keys(const YAML::Node& node, const std::string& path, Keys known) const {
  if (!node.IsMap()) {
    fail(path.empty() ? "(top level)" : path,
         std::string("must be a map of settings, but it is ") + kind_of(node),
         "write it as `key: value` lines; known keys: " + join_keys(known));
  }
  std::set<std::string> seen;
  for (const auto& kv : node) {
    if (!kv.first.IsScalar()) {
      fail(path.empty() ? "(top level)" : path, "has a key that is not a plain name",
           "use only these keys: " + join_keys(known));
    }
    const std::string key = kv.first.Scalar();
    if (!seen.insert(key).second) {
      // yaml-cpp keeps duplicate keys and we would silently use the first.
      fail(sub(path, key), "is set twice", "keep one of the two lines");
    }
    if (std::find(known.begin(), known.end(), key) != known.end()) continue;
    std::string_view best;
    std::size_t best_d = std::numeric_limits<std::size_t>::max();
    for (const auto k : known) {
      const std::size_t d = edit_distance(key, k);
      if (d < best_d) {
        best_d = d;
        best = k;
      }
    }
    std::string fix;
    if (!best.empty() && best_d <= std::max<std::size_t>(2, key.size() / 3)) {
      fix = "did you mean \"" + std::string(best) + "\"? ";
    }
    fix += "known keys here: " + join_keys(known);
    fail(sub(path, key), "unknown setting " + quote(key), fix);
  }
}

void Loader::require_value(const YAML::Node& n, const std::string& path) const {
  if (n.IsNull()) fail(path, "has no value", "give it a value or delete the line");
}

std::string Loader::string_value(const YAML::Node& n, const std::string& path) const {
  require_value(n, path);
  if (!n.IsScalar()) {
    fail(path, std::string("must be a single value, but it is ") + kind_of(n),
         "write it as `" + path.substr(path.rfind('.') + 1) + ": <value>`");
  }
  return n.Scalar();
}

std::string Loader::nonempty_string(const Section& s, std::string_view key,
                                    const std::string& fix) const {
  if (!s.has(key)) fail(s.path(key), "is required but missing", fix);
  std::string v = string_value(s.get(key), s.path(key));
  if (v.empty()) fail(s.path(key), "is empty", fix);
  return v;
}

std::uint64_t Loader::uint_value(const YAML::Node& n, const std::string& path, std::uint64_t lo,
                                 std::uint64_t hi, const std::string& why) const {
  const std::string text = string_value(n, path);
  const std::string range = std::to_string(lo) + ".." + std::to_string(hi);
  std::uint64_t v = 0;
  const char* const end = text.data() + text.size();
  const auto [ptr, ec] = std::from_chars(text.data(), end, v);
  if (text.empty() || text.front() == '+' || ptr != end ||
      (ec != std::errc{} && ec != std::errc::result_out_of_range)) {
    fail(path, quote(text) + " is not a whole number", "write a number in " + range + "; " + why);
  }
  if (ec == std::errc::result_out_of_range || v < lo || v > hi) {
    fail(path, text + " is out of range " + range, "set it within " + range + "; " + why);
  }
  return v;
}

bool Loader::bool_value(const YAML::Node& n, const std::string& path) const {
  std::string v = string_value(n, path);
  std::transform(v.begin(), v.end(), v.begin(),
                 [](char c) { return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c); });
  if (v == "true") return true;
  if (v == "false") return false;
  fail(path, quote(n.Scalar()) + " is not a boolean", "write true or false");
}

YAML::Node Loader::sequence(const YAML::Node& n, const std::string& path,
                            const std::string& what) const {
  require_value(n, path);
  if (!n.IsSequence()) {
    fail(path, std::string("must be a list, but it is ") + kind_of(n),
         "write one `- ` entry per " + what);
  }
  if (n.size() == 0) fail(path, "is an empty list", "add at least one " + what);
  return n;
}

fs::path Loader::resolve(const std::string& p) const {
  fs::path path(p);
  if (path.is_relative()) path = dir_ / path;
  return path.lexically_normal();
}

void Loader::check_readable_file(const fs::path& p, const std::string& setting,
                                 const std::string& what, const std::string& fix) const {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) fail(setting, what + " " + p.string() + " does not exist", fix);
    fail(setting,
         what + " " + p.string() + " cannot be read by uid " + std::to_string(::geteuid()) + ": " +
             std::strerror(err),
         "make it readable by the proxy's user, or " + fix);
  }
  struct stat st {};
  const bool regular = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
  ::close(fd);  // opened read-only to probe access: nothing to flush
  if (!regular) fail(setting, what + " " + p.string() + " is not a regular file", fix);
}

SecretSource Loader::secret_source(const YAML::Node& n, const std::string& path) const {
  require_value(n, path);
  if (!n.IsMap()) {
    // Deliberately not echoing the value: it is probably the secret itself.
    fail(path,
         std::string("must be {file: PATH} or {env: VARIABLE}, but it is ") + kind_of(n) +
             " (secrets are never written in the configuration file)",
         "put the secret in a mode-0600 file and write `" + path.substr(path.rfind('.') + 1) +
             ": { file: /etc/xks-proxy/<name> }`, or use { env: VARIABLE }");
  }
  const Section s(*this, n, path, {"file", "env", "allow_insecure_permissions"});
  SecretSource src;
  if (s.has("file") == s.has("env")) {
    fail(path, s.has("file") ? "sets both file and env" : "sets neither file nor env",
         "set exactly one: { file: /etc/xks-proxy/<name> } or { env: VARIABLE }");
  }
  if (s.has("file")) {
    const std::string f = string_value(s.get("file"), s.path("file"));
    if (f.empty()) fail(s.path("file"), "is empty", "write the path of the secret file");
    src.kind = SecretSource::Kind::File;
    src.ref = resolve(f).string();
  } else {
    const std::string e = string_value(s.get("env"), s.path("env"));
    if (e.empty() || !all_of_chars(e, is_env_char) || (e.front() >= '0' && e.front() <= '9')) {
      fail(s.path("env"), quote(e) + " is not an environment variable name",
           "use letters, digits and _ not starting with a digit, e.g. XKS_HSM_PIN");
    }
    src.kind = SecretSource::Kind::Env;
    src.ref = e;
  }
  if (s.has("allow_insecure_permissions")) {
    src.allow_insecure_permissions =
        bool_value(s.get("allow_insecure_permissions"), s.path("allow_insecure_permissions"));
    if (src.kind == SecretSource::Kind::Env) {
      fail(s.path("allow_insecure_permissions"), "applies only to a file secret",
           "delete it (environment variables have no file permissions)");
    }
  }
  return src;
}

// ------------------------------------------------------------------ sections

void Loader::parse_listen(const YAML::Node& n, const std::string& path, ServerConfig& out) const {
  const std::string v = string_value(n, path);
  const std::string fix = "write host:port with an IP address, e.g. 0.0.0.0:443, 127.0.0.1:8443 or [::]:443";
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
                   "hsm_queue_capacity",
                   "max_requests_per_connection", "handshake_timeout_ms", "header_timeout_ms",
                   "body_timeout_ms", "idle_timeout_ms", "write_timeout_ms",
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
  opt_uint(s, "max_connections", out.max_connections, 1, 1'000'000,
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
  const Section s(*this, n, "server",
                  {"listen", "threads", "fleet_size", "ping_path", "request_deadline_ms",
                   "shutdown_delay_ms", "limits", "user", "group", "allow_root",
                   "allow_core_dumps"});
  if (s.has("listen")) parse_listen(s.get("listen"), s.path("listen"), out);
  opt_uint(s, "threads", out.threads, 0, 256,
           "0 uses one I/O thread per core; HSM calls run on their own pool, so more I/O threads "
           "than cores do not help");
  opt_uint(s, "fleet_size", out.fleet_size, 1, 100'000,
           "it is reported to KMS as xksProxyFleetSize, which must be at least 1");
  if (s.has("ping_path")) {
    const std::string p = string_value(s.get("ping_path"), s.path("ping_path"));
    const std::string fix = "use a path such as /ping (letters, digits, / - _ . ~), at most 128 characters";
    if (p.empty() || p.front() != '/') fail(s.path("ping_path"), quote(p) + " does not start with /", fix);
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

void Loader::parse_tls(const YAML::Node& n, TlsConfig& out) const {
  const Section s(*this, n, "tls",
                  {"enabled", "certificate", "private_key", "client_ca", "client_names",
                   "client_names_match", "session_tickets", "ticket_key_rotation_hours"});
  if (s.has("enabled")) out.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("session_tickets")) {
    out.session_tickets = bool_value(s.get("session_tickets"), s.path("session_tickets"));
  }
  unsigned rotation_hours = static_cast<unsigned>(out.ticket_key_rotation.count());
  opt_uint(s, "ticket_key_rotation_hours", rotation_hours, 1, 168,
           "session ticket keys are replaced this often, limiting what a stolen key decrypts");
  out.ticket_key_rotation = std::chrono::hours(rotation_hours);
  const auto path_setting = [&](std::string_view key, fs::path& dst) {
    if (!s.has(key)) return;
    const std::string v = string_value(s.get(key), s.path(key));
    if (v.empty()) fail(s.path(key), "is empty", "write the path of the PEM file or delete the line");
    dst = resolve(v);
  };
  path_setting("certificate", out.certificate);
  path_setting("private_key", out.private_key);
  path_setting("client_ca", out.client_ca);
  if (s.has("client_names")) {
    const YAML::Node names = sequence(s.get("client_names"), s.path("client_names"), "accepted client name");
    for (std::size_t i = 0; i < names.size(); ++i) {
      const std::string p = at(s.path("client_names"), i);
      const std::string v = string_value(names[i], p);
      if (v.empty() || !all_of_chars(v, is_printable)) {
        fail(p, "is empty or has control characters",
             "write the client certificate's CN or DNS name, e.g. cks.kms.eu-west-1.amazonaws.com");
      }
      out.client_names.push_back(v);
    }
  }
  if (s.has("client_names_match")) {
    const std::string v = string_value(s.get("client_names_match"), s.path("client_names_match"));
    if (v == "cn") {
      out.client_names_match = TlsConfig::NameMatch::Cn;
    } else if (v == "cn_or_dns_san") {
      out.client_names_match = TlsConfig::NameMatch::CnOrDnsSan;
    } else {
      fail(s.path("client_names_match"), quote(v) + " is not a way to match client names",
           "use cn (the subject CN, as KMS's certificate carries it) or cn_or_dns_san");
    }
  }
  if (!out.client_names.empty() && out.client_ca.empty()) {
    fail(s.path("client_names"), "is set without tls.client_ca, so no client certificate is asked for",
         "set tls.client_ca to the CA bundle that signs KMS's client certificate (Amazon Trust "
         "Services roots)");
  }
  if (!out.enabled) return;  // files are not needed; config_warnings says so loudly
  const std::string off = " (only for tests: tls.enabled: false)";
  if (out.certificate.empty()) {
    fail(s.path("certificate"), "is required when TLS is enabled",
         "set it to the PEM certificate chain whose name KMS connects to" + off);
  }
  if (out.private_key.empty()) {
    fail(s.path("private_key"), "is required when TLS is enabled",
         "set it to the PEM private key of tls.certificate" + off);
  }
  check_readable_file(out.certificate, s.path("certificate"), "certificate file",
                      "correct the path to the PEM certificate chain (leaf first)");
  check_readable_file(out.private_key, s.path("private_key"), "private key file",
                      "correct the path to the PEM private key");
  if (!out.client_ca.empty()) {
    check_readable_file(out.client_ca, s.path("client_ca"), "client CA file",
                        "correct the path to the PEM CA bundle, or delete client_ca to turn mTLS off");
  }
}

HsmConfig Loader::parse_hsm(const YAML::Node& n, const std::string& path, std::size_t index) const {
  const Section s(*this, n, path,
                  {"name", "module", "vendor", "token_label", "token_serial", "slot_id", "pin",
                   "sessions", "health_key", "iv", "auth_failure_codes", "pin_format", "init_args",
                   "init_os_locking", "environment"});
  HsmConfig h;
  h.name = "hsm" + std::to_string(index + 1);
  if (s.has("name")) {
    h.name = string_value(s.get("name"), s.path("name"));
    if (h.name.empty() || h.name.size() > 64 || !all_of_chars(h.name, is_key_id_char)) {
      fail(s.path("name"), quote(h.name) + " is not 1-64 of A-Z a-z 0-9 . - _",
           "name the HSM for logs and the health report, e.g. hsm1 or cloudhsm-eu-west-1");
    }
  }
  const std::string module = nonempty_string(
      s, "module", "set it to the vendor's PKCS#11 library, e.g. /usr/lib/softhsm/libsofthsm2.so");
  h.module = resolve(module);
  check_readable_file(h.module, s.path("module"), "PKCS#11 module",
                      "install the vendor's PKCS#11 client or correct the path (an absolute path "
                      "is best; relative ones are taken from the configuration file's folder)");

  const int selectors = int{s.has("token_label")} + int{s.has("token_serial")} + int{s.has("slot_id")};
  if (selectors != 1) {
    std::string set;
    for (const char* k : {"token_label", "token_serial", "slot_id"}) {
      if (s.has(k)) set += std::string(set.empty() ? "" : " and ") + k;
    }
    fail(path, selectors == 0 ? "sets neither token_label, token_serial nor slot_id"
                              : "sets both " + set,
         "set exactly one; token_label or token_serial is safer, because slot ids can change "
         "when tokens are added or the HSM client is reconfigured");
  }
  if (s.has("token_label")) {
    const std::string t = string_value(s.get("token_label"), s.path("token_label"));
    if (t.empty() || t.size() > kMaxTokenLabelChars) {
      fail(s.path("token_label"), quote(t) + " is not 1-32 characters",
           "use the label shown by `pkcs11-tool --module <module> --list-token-slots` (PKCS#11 "
           "token labels are at most 32 bytes)");
    }
    h.token_label = t;
  } else if (s.has("token_serial")) {
    const std::string t = string_value(s.get("token_serial"), s.path("token_serial"));
    if (t.empty() || t.size() > kMaxTokenSerialChars) {
      fail(s.path("token_serial"), quote(t) + " is not 1-16 characters",
           "use the serial number shown by `pkcs11-tool --module <module> --list-token-slots` "
           "(PKCS#11 serial numbers are at most 16 bytes)");
    }
    h.token_serial = t;
  } else {
    h.slot_id = uint_value(s.get("slot_id"), s.path("slot_id"), 0,
                           std::numeric_limits<std::uint64_t>::max(),
                           "use a slot id shown by `pkcs11-tool --module <module> --list-slots`");
  }

  if (!s.has("pin")) {
    fail(s.path("pin"), "is required but missing",
         "add `pin: { file: /etc/xks-proxy/hsm.pin }` (mode 0600) or `pin: { env: XKS_HSM_PIN }`");
  }
  h.pin_source = secret_source(s.get("pin"), s.path("pin"));
  h.pin = detail::read_secret(h.pin_source, file_, s.path("pin"));
  if (h.pin.size() > kMaxPinChars) {
    fail(s.path("pin"), "the PIN read from " + h.pin_source.describe() + " is longer than 255 characters",
         "check that " + h.pin_source.describe() + " holds only the PIN on its first line");
  }

  opt_uint(s, "sessions", h.sessions, 1, 1024,
           "each session is a logged-in HSM session and a worker thread; HSMs limit sessions per "
           "client (e.g. CloudHSM ~1000 per HSM)");
  h.health_key = nonempty_string(
      s, "health_key",
      "create a dedicated AES-256 key used only for health checks (e.g. label xks-health) and "
      "set its label here");
  parse_hsm_behaviour(s, h);
  return h;
}

void Loader::parse_hsm_behaviour(const Section& s, HsmConfig& h) const {
  std::string vendors;
  for (const auto& p : vendor_profiles()) vendors += (vendors.empty() ? "" : ", ") + std::string(p.name);
  if (s.has("vendor")) {
    const std::string v = string_value(s.get("vendor"), s.path("vendor"));
    const auto vendor = vendor_from_name(v);
    if (!vendor) {
      fail(s.path("vendor"), quote(v) + " is not a known HSM family",
           "use one of " + vendors + " (generic when yours is not listed)");
    }
    h.vendor = *vendor;
  }
  const VendorProfile& profile = vendor_profile(h.vendor);
  apply_vendor_defaults(h);

  if (s.has("iv")) {
    const std::string v = string_value(s.get("iv"), s.path("iv"));
    if (v == "caller_random") {
      h.iv = IvMode::CallerRandom;
    } else if (v == "hsm_into_zero_buffer") {
      h.iv = IvMode::HsmIntoZeroBuffer;
    } else if (v == "hsm_appended") {
      h.iv = IvMode::HsmAppended;
    } else if (v == "hsm_random" || v == "hsm_generated" || v == "hsm_generated_zero") {
      fail(s.path("iv"), quote(v) + " is an IV mode name of an earlier version",
           std::string("use ") +
               (v == "hsm_random" ? "caller_random (the same behaviour)"
                                  : "hsm_into_zero_buffer (AWS CloudHSM, Entrust nShield) or "
                                    "hsm_appended (Thales Luna)") +
               ", or delete the line to take hsm.vendor's default; see docs/configuration.md");
    } else {
      fail(s.path("iv"), quote(v) + " is not an IV mode",
           "use caller_random (SoftHSM2, NSS and most HSMs), hsm_into_zero_buffer (AWS CloudHSM, "
           "Entrust nShield) or hsm_appended (Thales Luna), or delete the line to take "
           "hsm.vendor's default; see docs/configuration.md");
    }
    for (const auto& refused : profile.refused_iv) {
      if (refused.mode == h.iv) {
        fail(s.path("iv"), std::string(to_string(h.iv)) + " does not work with " +
                               std::string(profile.family) + ": " + std::string(refused.why),
             "set iv: " + std::string(to_string(profile.iv)) +
                 " (or delete the line), or correct hsm.vendor");
      }
    }
  }

  if (s.has("auth_failure_codes")) {
    const YAML::Node list =
        sequence(s.get("auth_failure_codes"), s.path("auth_failure_codes"), "CKR code");
    h.auth_failure_codes.clear();
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string where = at(s.path("auth_failure_codes"), i);
      const std::string name = string_value(list[i], where);
      const auto rv = hsm::ckr_from_name(name);
      if (!rv) {
        fail(where, quote(name) + " is not a PKCS#11 return code name",
             "write the name as in pkcs11.h, e.g. CKR_ENCRYPTED_DATA_INVALID");
      }
      if (*rv == CKR_OK) fail(where, "CKR_OK is success, not a failed tag check", "delete it");
      h.auth_failure_codes.push_back(*rv);
    }
  }

  if (s.has("pin_format")) {
    const std::string v = string_value(s.get("pin_format"), s.path("pin_format"));
    if (v == "plain") {
      h.pin_format = PinFormat::Plain;
    } else if (v == "user_password") {
      h.pin_format = PinFormat::UserPassword;
    } else {
      fail(s.path("pin_format"), quote(v) + " is not a PIN format",
           "use plain (the PIN as written) or user_password (AWS CloudHSM: CU_NAME:PASSWORD)");
    }
  }
  if (h.pin_format == PinFormat::UserPassword) {
    const std::string_view pin = h.pin.view();
    const auto colon = pin.find(':');
    if (colon == std::string_view::npos || colon == 0 || colon + 1 == pin.size()) {
      // Only the shape is described: the PIN itself is never shown.
      fail(s.path("pin"),
           "the PIN read from " + h.pin_source.describe() +
               " is not of the form user:password, as " + std::string(profile.family) +
               " logs in a named crypto user",
           "write CRYPTO_USER_NAME:PASSWORD on the first line of " + h.pin_source.describe() +
               (s.has("pin_format") ? ", or set hsm.pin_format: plain" : ""));
    }
  }

  if (s.has("init_args")) {
    h.init_args = string_value(s.get("init_args"), s.path("init_args"));
  } else if (profile.needs_init_args) {
    fail(s.path("init_args"), "is required for " + std::string(profile.family),
         "set it to the module's C_Initialize string, e.g. init_args: \"configdir='sql:/etc/"
         "xks-proxy/nssdb' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\"");
  }
  if (s.has("init_os_locking")) {
    h.init_os_locking = bool_value(s.get("init_os_locking"), s.path("init_os_locking"));
  }

  if (s.has("environment")) {
    const YAML::Node env = s.get("environment");
    const std::string where = s.path("environment");
    require_value(env, where);
    if (!env.IsMap()) {
      fail(where, std::string("must be a map of VARIABLE: value, but it is ") + kind_of(env),
           "write e.g. `environment: { SOFTHSM2_CONF: /etc/softhsm/softhsm2.conf }`");
    }
    for (const auto& kv : env) {
      const std::string name = kv.first.Scalar();
      const std::string var_path = sub(where, name);
      if (name.empty() || (name.front() >= '0' && name.front() <= '9') ||
          !all_of_chars(name, is_env_char)) {
        fail(var_path, quote(name) + " is not an environment variable name",
             "use letters, digits and _, not starting with a digit");
      }
      const std::string value = string_value(kv.second, var_path);
      // A relative value that names something next to the configuration is a
      // path: take it from the configuration's folder, as every other path.
      std::error_code ec;
      std::string effective = value;
      if (!value.empty() && fs::path(value).is_relative() && fs::exists(dir_ / value, ec)) {
        effective = resolve(value).string();
      }
      h.environment.emplace_back(name, std::move(effective));
    }
  }
}

Credential Loader::parse_credential(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"access_key_id", "secret", "not_after"});
  Credential c;
  c.access_key_id = nonempty_string(
      s, "access_key_id",
      "set the access key id you give KMS as XksProxyAuthenticationCredential.AccessKeyId");
  if (c.access_key_id.size() < 20 || c.access_key_id.size() > 30 ||
      !all_of_chars(c.access_key_id, is_akid_char)) {
    fail(s.path("access_key_id"),
         quote(c.access_key_id) + " is not 20-30 characters of A-Z and 2-7",
         "generate one, e.g. `head -c 15 /dev/urandom | base32` (the XKS spec requires this alphabet)");
  }
  if (!s.has("secret")) {
    fail(s.path("secret"), "is required but missing",
         "add `secret: { file: /etc/xks-proxy/<name>.secret }` (mode 0600) or `secret: { env: VARIABLE }`");
  }
  c.secret_source = secret_source(s.get("secret"), s.path("secret"));
  c.secret = detail::read_secret(c.secret_source, file_, s.path("secret"));
  if (c.secret_source.kind == SecretSource::Kind::File) {
    std::error_code ec;
    const auto written = fs::last_write_time(resolve(c.secret_source.ref), ec);
    if (!ec) {
      c.issued = std::chrono::time_point_cast<std::chrono::system_clock::duration>(
          std::chrono::file_clock::to_sys(written));
    }
  }
  const std::string_view sv = c.secret.view();
  const bool length_ok = sv.size() >= 43 && sv.size() <= 64;
  if (!length_ok || !all_of_chars(sv, is_secret_char)) {
    // Length and alphabet only: the value itself is never shown.
    fail(s.path("secret"),
         "the secret read from " + c.secret_source.describe() +
             (length_ok ? std::string(" has a character outside A-Z a-z 0-9 + / = (a space?)")
                        : " has " + std::to_string(sv.size()) + " characters, not 43-64"),
         "write the secret access key you give KMS (RawSecretAccessKey), 43-64 of A-Z a-z 0-9 + / "
         "=, on the first line of " + c.secret_source.describe() +
             "; `head -c 32 /dev/urandom | base64` makes one");
  }
  if (s.has("not_after")) {
    const std::string v = string_value(s.get("not_after"), s.path("not_after"));
    // YYYY-MM-DD[THH:MM:SS[.frac](Z|±HH:MM)]
    const auto num = [&](std::size_t pos, std::size_t len, int& dst) {
      if (pos + len > v.size()) return false;
      dst = 0;
      for (std::size_t i = pos; i < pos + len; ++i) {
        if (v[i] < '0' || v[i] > '9') return false;
        dst = dst * 10 + (v[i] - '0');
      }
      return true;
    };
    int y = 0, mo = 0, d = 0, hh = 0, mi = 0, ss = 0, oh = 0, om = 0;
    int sign = 0;
    bool ok = num(0, 4, y) && v.size() >= 10 && v[4] == '-' && num(5, 2, mo) && v[7] == '-' &&
              num(8, 2, d);
    std::size_t pos = 10;
    if (ok && v.size() > 10) {
      ok = (v[10] == 'T' || v[10] == 't' || v[10] == ' ') && num(11, 2, hh) && v.size() > 13 &&
           v[13] == ':' && num(14, 2, mi) && v.size() > 16 && v[16] == ':' && num(17, 2, ss);
      pos = 19;
      if (ok && pos < v.size() && v[pos] == '.') {
        ++pos;
        const std::size_t digits = pos;
        while (pos < v.size() && v[pos] >= '0' && v[pos] <= '9') ++pos;
        ok = pos > digits;
      }
      if (ok && pos < v.size() && (v[pos] == 'Z' || v[pos] == 'z')) {
        ++pos;
      } else if (ok && pos < v.size() && (v[pos] == '+' || v[pos] == '-')) {
        sign = v[pos] == '+' ? 1 : -1;
        ok = num(pos + 1, 2, oh) && pos + 3 < v.size() && v[pos + 3] == ':' && num(pos + 4, 2, om);
        pos += 6;
      } else {
        ok = false;  // a time without a zone is ambiguous
      }
      ok = ok && pos == v.size();
    }
    using namespace std::chrono;
    const year_month_day ymd{year{y}, month{static_cast<unsigned>(mo)}, day{static_cast<unsigned>(d)}};
    if (!ok || !ymd.ok() || hh > 23 || mi > 59 || ss > 59 || oh > 23 || om > 59) {
      fail(s.path("not_after"), quote(v) + " is not an RFC 3339 time",
           "write it as \"2027-01-01T00:00:00Z\" (UTC) or a date \"2027-01-01\", quoted");
    }
    // The clock counts nanoseconds in 64 bits: years past 2262 do not fit (found
    // by fuzz_config); a credential's end is decades away at most.
    if (y < 1970 || y > 2200) {
      fail(s.path("not_after"), quote(v) + " is outside the years 1970 to 2200",
           "write the date the credential should be retired, e.g. \"2027-01-01\"");
    }
    c.not_after = time_point_cast<system_clock::duration>(
        sys_days{ymd} + hours{hh} + minutes{mi} + seconds{ss} - sign * (hours{oh} + minutes{om}));
  }
  return c;
}

KeyEntry Loader::parse_key(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"id", "label", "enabled", "expect_usage"});
  KeyEntry k;
  k.id = nonempty_string(s, "id", "set the external key id you give KMS, e.g. demo-aes-key");
  if (k.id.size() > kMaxKeyIdChars || !all_of_chars(k.id, is_key_id_char)) {
    fail(s.path("id"), quote(k.id) + " is not 1-128 characters of A-Z a-z 0-9 . - _",
         "use only those characters (the XKS spec's externalKeyId alphabet)");
  }
  k.label = k.id;
  if (s.has("label")) {
    k.label = string_value(s.get("label"), s.path("label"));
    if (k.label.empty()) {
      fail(s.path("label"), "is empty",
           "set the CKA_LABEL of the AES-256 key in the HSM, or delete the line to use the id");
    }
  }
  if (s.has("enabled")) k.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("expect_usage")) {
    // An empty list is meaningful here (a key with no usage), so sequence() is not used.
    const std::string up = s.path("expect_usage");
    const YAML::Node list = s.get("expect_usage");
    require_value(list, up);
    if (!list.IsSequence()) {
      fail(up, std::string("must be a list, but it is ") + kind_of(list),
           "write [ENCRYPT], [DECRYPT], [ENCRYPT, DECRYPT] or [] (no usage)");
    }
    KeyEntry::Usage u{false, false};
    for (std::size_t i = 0; i < list.size(); ++i) {
      const std::string p = at(up, i);
      const std::string v = string_value(list[i], p);
      bool& flag = v == "ENCRYPT" ? u.encrypt : u.decrypt;
      if (v != "ENCRYPT" && v != "DECRYPT") {
        fail(p, quote(v) + " is not a key usage", "write ENCRYPT or DECRYPT (upper case)");
      }
      if (flag) fail(p, quote(v) + " is listed twice", "keep one");
      flag = true;
    }
    k.expect_usage = u;
  }
  return k;
}

KeyStore Loader::parse_keystore(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path,
                  {"uri_path", "credentials", "keys", "policy", "quota", "region", "enabled"});
  KeyStore ks;
  if (s.has("enabled")) ks.enabled = bool_value(s.get("enabled"), s.path("enabled"));
  if (s.has("region")) {
    const std::string r = string_value(s.get("region"), s.path("region"));
    if (!is_aws_region(r)) {
      fail(s.path("region"), quote(r) + " is not an AWS region name",
           "write the region of the KMS key store, e.g. eu-west-1, or delete the line");
    }
    ks.region = r;
  }
  const std::string ex = "e.g. /demo/kms/xks/v1";
  const std::string fix_kms = "set it to the XksProxyUriPath configured in KMS, " + ex;
  ks.uri_path = nonempty_string(s, "uri_path", fix_kms);
  const std::string& u = ks.uri_path;
  const std::string up = s.path("uri_path");
  if (u.size() > kMaxUriPathChars) {
    fail(up, quote(u) + " is longer than 128 characters", "shorten the prefix; " + fix_kms);
  }
  if (!all_of_chars(u, is_uri_path_char)) {
    fail(up, quote(u) + " has characters other than A-Z a-z 0-9 / - _",
         "use only those characters; " + fix_kms);
  }
  if (u.front() != '/') fail(up, quote(u) + " does not start with /", fix_kms);
  if (u.size() < kUriSuffix.size() || u.compare(u.size() - kUriSuffix.size(), kUriSuffix.size(), kUriSuffix) != 0) {
    fail(up, quote(u) + " must end with /kms/xks/v1", fix_kms);
  }
  if (u.find("//") != std::string::npos) fail(up, quote(u) + " has an empty segment (//)", fix_kms);

  if (!s.has("credentials")) {
    fail(s.path("credentials"), "is required but missing",
         "add at least one credential: { access_key_id: ..., secret: { file: ... } }");
  }
  const YAML::Node creds = sequence(s.get("credentials"), s.path("credentials"), "credential");
  std::set<std::string> akids;
  for (std::size_t i = 0; i < creds.size(); ++i) {
    Credential c = parse_credential(creds[i], at(s.path("credentials"), i));
    if (!akids.insert(c.access_key_id).second) {
      fail(at(s.path("credentials"), i) + ".access_key_id",
           quote(c.access_key_id) + " appears twice in this key store",
           "give each credential its own access key id (rotation: add the new one, update KMS, "
           "then remove the old one)");
    }
    ks.credentials.push_back(std::move(c));
  }
  if (!s.has("keys")) {
    fail(s.path("keys"), "is required but missing",
         "add at least one key: { id: <externalKeyId>, label: <CKA_LABEL in the HSM> }");
  }
  const YAML::Node keys = sequence(s.get("keys"), s.path("keys"), "key");
  std::set<std::string> ids;
  for (std::size_t i = 0; i < keys.size(); ++i) {
    KeyEntry k = parse_key(keys[i], at(s.path("keys"), i));
    if (!ids.insert(k.id).second) {
      fail(at(s.path("keys"), i) + ".id", quote(k.id) + " appears twice in this key store",
           "give each key its own id");
    }
    ks.keys.push_back(std::move(k));
  }
  if (s.has("quota")) {
    const Section q(*this, s.get("quota"), s.path("quota"), {"rate", "burst"});
    unsigned rate = 0;
    unsigned burst = 0;
    opt_uint(q, "rate", rate, 1, 1'000'000,
             "requests per second for this key store (KMS's default quota is 1800)");
    opt_uint(q, "burst", burst, 1, 10'000'000, "how many requests may arrive at once");
    if (!q.has("rate")) {
      fail(q.path("rate"), "is required in a quota", "set rate: <requests per second>, e.g. 1800");
    }
    ks.quota_rate = rate;
    ks.quota_burst = burst == 0 ? rate : burst;
  }
  if (s.has("policy")) {
    const std::string p = nonempty_string(s, "policy", "give the path of a policy file (see docs/authorization.md)");
    ks.policy_file = resolve(p);
    try {
      ks.policy = policy::load_policy(ks.policy_file);
    } catch (const policy::PolicyError& e) {
      // The policy's own message names its file, statement and field.
      fail(s.path("policy"), std::string("the policy does not load: ") + e.what(),
           "correct the policy file (check it with: xksctl policy check " +
               ks.policy_file.string() + ")");
    }
  }
  return ks;
}

void Loader::parse_health(const YAML::Node& n, HealthConfig& out) const {
  const Section s(*this, n, "health", {"interval_ms", "degraded_latency_ms", "max_age_ms"});
  opt_millis(s, "interval_ms", out.interval, 100, 60'000,
             "the background deep check runs this often; KMS accepts a cached result up to 60 s old");
  opt_millis(s, "degraded_latency_ms", out.degraded_latency, 1, 250,
             "a probe slower than this reports DEGRADED; above 250 ms KMS would already time out");
  opt_millis(s, "max_age_ms", out.max_age, 1'000, 60'000,
             "the XKS spec forbids answering health from a result older than 60 s");
  if (out.max_age <= out.interval) {
    fail(s.path("max_age_ms"),
         std::to_string(out.max_age.count()) + " is not above health.interval_ms " +
             std::to_string(out.interval.count()) + ", so every cached result would expire before the next check",
         "make max_age_ms larger than interval_ms (e.g. interval 10000, max_age 60000)");
  }
}

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

LogFileConfig Loader::parse_log_file(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"path", "rotate", "max_size_mb", "daily_at", "max_files"});
  LogFileConfig out;
  const std::string p = nonempty_string(
      s, "path", "write where the log goes, e.g. path: /var/log/xks-proxy/xks-proxy.log");
  out.path = resolve(p);
  std::error_code ec;
  const fs::path dir = out.path.parent_path();
  if (!fs::is_directory(dir, ec)) {
    fail(s.path("path"), "the folder " + quote(dir.string()) + " does not exist",
         "create it, writable by the proxy's user (install -d -o xks-proxy " + dir.string() +
             "; the systemd unit's LogsDirectory= creates /var/log/xks-proxy)");
  }
  if (fs::is_directory(out.path, ec)) {
    fail(s.path("path"), quote(out.path.string()) + " is a folder",
         "name a file inside it, e.g. " + (out.path / "xks-proxy.log").string());
  }
  if (s.has("rotate")) {
    const std::string v = string_value(s.get("rotate"), s.path("rotate"));
    if (v == "size") {
      out.rotate = LogFileConfig::Rotate::Size;
    } else if (v == "daily") {
      out.rotate = LogFileConfig::Rotate::Daily;
    } else {
      fail(s.path("rotate"), quote(v) + " is not a rotation", "use size or daily");
    }
  }
  const bool daily = out.rotate == LogFileConfig::Rotate::Daily;
  if (daily && s.has("max_size_mb")) {
    fail(s.path("max_size_mb"), "only applies to rotate: size",
         "delete it, or set rotate: size");
  }
  if (!daily && s.has("daily_at")) {
    fail(s.path("daily_at"), "only applies to rotate: daily", "delete it, or set rotate: daily");
  }
  opt_uint(s, "max_size_mb", out.max_size_mb, 1, 1'000'000,
           "the current file is rotated once it reaches this many MiB");
  opt_uint(s, "max_files", out.max_files, 1, 10'000,
           "older files beyond this many are deleted");
  if (s.has("daily_at")) {
    const std::string v = string_value(s.get("daily_at"), s.path("daily_at"));
    const auto digit = [&](std::size_t i) { return v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : -100; };
    const int h = v.size() == 5 && v[2] == ':' ? digit(0) * 10 + digit(1) : -1;
    const int m = v.size() == 5 && v[2] == ':' ? digit(3) * 10 + digit(4) : -1;
    if (h < 0 || h > 23 || m < 0 || m > 59) {
      fail(s.path("daily_at"), quote(v) + " is not a time of day",
           "write it as \"HH:MM\" (24-hour, the proxy's local time zone), e.g. \"00:00\"");
    }
    out.daily_hour = h;
    out.daily_minute = m;
  }
  return out;
}

void Loader::parse_logging(const YAML::Node& n, LoggingConfig& out) const {
  const Section s(*this, n, "logging", {"level", "format", "file", "flush_interval_ms"});
  if (s.has("level")) {
    const std::string v = string_value(s.get("level"), s.path("level"));
    static constexpr std::string_view kLevels[] = {"trace", "debug", "info", "warn",
                                                   "error", "critical", "off"};
    if (std::find(std::begin(kLevels), std::end(kLevels), v) == std::end(kLevels)) {
      fail(s.path("level"), quote(v) + " is not a log level",
           "use one of trace, debug, info, warn, error, critical, off");
    }
    out.level = v;
  }
  if (s.has("format")) {
    const std::string v = string_value(s.get("format"), s.path("format"));
    if (v == "json") {
      out.format = LoggingConfig::Format::Json;
    } else if (v == "text") {
      out.format = LoggingConfig::Format::Text;
    } else {
      fail(s.path("format"), quote(v) + " is not a log format", "use json or text");
    }
  }
  opt_millis(s, "flush_interval_ms", out.flush_interval, 0, 10'000,
             "lines wait in memory at most this long before they are written (0 = at once)");
  if (s.has("file")) out.file = parse_log_file(s.get("file"), s.path("file"));
}

void Loader::default_client_names(Config& c) const {
  if (c.tls.client_ca.empty() || !c.tls.client_names.empty()) return;
  // A CA alone would let in every certificate it issued (Amazon's public roots
  // issue many): the spec requires refusing any other subject name.
  std::set<std::string> regions;
  for (std::size_t i = 0; i < c.keystores.size(); ++i) {
    if (!c.keystores[i].region) {
      fail("tls.client_names",
           "is not set and keystores[" + std::to_string(i) +
               "].region is not set either, so any certificate issued under tls.client_ca "
               "would be accepted",
           "list the accepted names, e.g. client_names: [cks.kms.eu-west-1.amazonaws.com], or "
           "set region on every key store so that client_names defaults to "
           "cks.kms.<region>.amazonaws.com");
    }
    regions.insert(*c.keystores[i].region);
  }
  for (const auto& r : regions) c.tls.client_names.push_back(kms_client_name(r));
  c.tls.client_names_defaulted = true;
}

void Loader::cross_check(const Config& c) const {
  const std::string& ping = c.server.ping_path;
  for (std::size_t i = 0; i < c.keystores.size(); ++i) {
    const std::string& u = c.keystores[i].uri_path;
    if (ping == u || ping.rfind(u + "/", 0) == 0) {
      fail("server.ping_path",
           quote(ping) + " lies inside keystores[" + std::to_string(i) + "].uri_path " + quote(u),
           "choose a ping path outside every key store, e.g. /ping");
    }
  }
  for (std::size_t h = 0; h < c.hsms.size(); ++h) {
    for (const auto& ks : c.keystores) {
      for (const auto& k : ks.keys) {
        if (k.label == c.hsms[h].health_key) {
          fail(c.hsms.size() == 1 ? "hsm.health_key" : at("hsm", h) + ".health_key",
               quote(k.label) + " is also the label of key " + quote(k.id) + " in " + ks.uri_path,
               "use a dedicated key for health checks: the XKS spec forbids probing a key that "
               "backs a KMS key");
        }
      }
    }
  }
}

Config Loader::load() {
  std::ifstream in(file_, std::ios::binary);
  std::error_code ec;
  if (!in || fs::is_directory(file_, ec)) {
    const int err = errno;
    fail("(file)",
         fs::exists(file_, ec) ? std::string("cannot be read: ") + std::strerror(err) : "does not exist",
         "pass the path of the configuration file (see config/xks-proxy.example.yaml)");
  }
  // The file should hold no secret, but one written inline by mistake must not
  // linger in freed heap: read into a buffer sized once, wiped after parsing.
  std::string text;
  const std::uintmax_t size = fs::file_size(file_, ec);
  if (!ec && size < (std::uintmax_t{1} << 24)) text.reserve(static_cast<std::size_t>(size) + 1);
  text.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  struct Wipe {
    std::string& s;
    ~Wipe() { secure_wipe(s.data(), s.size()); }
  } wipe{text};

  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail("line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1),
         "YAML/JSON syntax error: " + e.msg,
         "correct the syntax at that position (indent with spaces, not tabs)");
  }
  if (root.IsNull() || !root.IsDefined()) {
    fail("(top level)", "the file is empty", "start from config/xks-proxy.example.yaml");
  }
  const Section top(*this, root, "",
                    {"server", "tls", "hsm", "keystores", "health", "metrics", "logging"});

  Config c;
  c.source = fs::absolute(file_, ec);
  if (ec) c.source = file_;
  if (top.has("server")) parse_server(top.get("server"), c.server);
  if (!top.has("tls")) {
    fail("tls", "is required but missing",
         "add tls: { certificate: PATH, private_key: PATH } (KMS only connects over HTTPS); "
         "for local tests only, tls: { enabled: false }");
  }
  parse_tls(top.get("tls"), c.tls);

  if (!top.has("hsm")) {
    fail("hsm", "is required but missing",
         "add an hsm: section with module, token_label, pin and health_key");
  }
  const YAML::Node hsm = top.get("hsm");
  require_value(hsm, "hsm");
  if (hsm.IsMap()) {
    c.hsms.push_back(parse_hsm(hsm, "hsm", 0));
  } else if (hsm.IsSequence()) {
    sequence(hsm, "hsm", "HSM");
    if (hsm.size() > kMaxHsms) {
      fail("hsm", "lists " + std::to_string(hsm.size()) + " HSMs",
           "list at most 10 (the health report's ekmFleetDetails holds 1-10 entries)");
    }
    std::set<std::string> names;
    for (std::size_t i = 0; i < hsm.size(); ++i) {
      HsmConfig h = parse_hsm(hsm[i], at("hsm", i), i);
      if (!names.insert(h.name).second) {
        fail(at("hsm", i) + ".name", quote(h.name) + " is used by two HSMs",
             "give each HSM its own name (it identifies the HSM in logs and health)");
      }
      c.hsms.push_back(std::move(h));
    }
  } else {
    fail("hsm", std::string("must be a map (one HSM) or a list of maps, but it is ") + kind_of(hsm),
         "see config/xks-proxy.example.yaml");
  }

  if (!top.has("keystores")) {
    fail("keystores", "is required but missing",
         "add at least one key store with uri_path, credentials and keys");
  }
  const YAML::Node stores = sequence(top.get("keystores"), "keystores", "key store");
  std::set<std::string> paths;
  for (std::size_t i = 0; i < stores.size(); ++i) {
    KeyStore ks = parse_keystore(stores[i], at("keystores", i));
    if (!paths.insert(ks.uri_path).second) {
      fail(at("keystores", i) + ".uri_path", quote(ks.uri_path) + " is used by two key stores",
           "give each key store its own prefix, e.g. /team-a/kms/xks/v1 and /team-b/kms/xks/v1");
    }
    c.keystores.push_back(std::move(ks));
  }
  if (top.has("health")) parse_health(top.get("health"), c.health);
  if (top.has("metrics")) parse_metrics(top.get("metrics"), c.metrics);
  if (top.has("logging")) parse_logging(top.get("logging"), c.logging);
  default_client_names(c);
  cross_check(c);
  return c;
}

}  // namespace

Config load_config(const std::filesystem::path& file) { return Loader(file).load(); }

}  // namespace xks::config
