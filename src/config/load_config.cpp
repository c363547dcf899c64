// load_config(): YAML (or JSON, which is YAML) → validated, secret-resolved
// Config. Every rule stops at the first problem with a ConfigError that names
// the setting and says how to fix it, because the person reading it is an
// operator at startup who cannot read this code. Values from the file are
// quoted in messages; secrets never are (they are never even echoed when they
// are written inline by mistake).
#include "loader.hpp"

namespace xks::config {

namespace detail {

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
  std::transform(v.begin(), v.end(), v.begin(), [](char c) {
    return static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  });
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
    if (err == ENOENT || err == ENOTDIR)
      fail(setting, what + " " + p.string() + " does not exist", fix);
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
        for (const auto& v : k.versions) {
          if (v.label != c.hsms[h].health_key) continue;
          fail(c.hsms.size() == 1 ? "hsm.health_key" : at("hsm", h) + ".health_key",
               quote(v.label) + " is also the label of key " + quote(k.id) +
                   (k.versions_listed ? " version " + std::to_string(v.number) : std::string()) +
                   " in " + ks.uri_path,
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
         fs::exists(file_, ec) ? std::string("cannot be read: ") + std::strerror(err)
                               : "does not exist",
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
    fail(
        "line " + std::to_string(e.mark.line + 1) + ", column " + std::to_string(e.mark.column + 1),
        "YAML/JSON syntax error: " + e.msg,
        "correct the syntax at that position (indent with spaces, not tabs)");
  }
  if (root.IsNull() || !root.IsDefined()) {
    fail("(top level)", "the file is empty", "start from config/xks-proxy.example.yaml");
  }
  const Section top(
      *this, root, "",
      {"server", "tls", "hsm", "keystores", "health", "metrics", "logging", "reload"});

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
  if (top.has("reload")) parse_reload(top.get("reload"), c.reload);
  default_client_names(c);
  cross_check(c);
  return c;
}

}  // namespace detail

Config load_config(const std::filesystem::path& file) { return detail::Loader(file).load(); }

}  // namespace xks::config
