// The configuration loader's private parts: the text helpers every section
// uses, and the Loader, whose parse_<section> functions live in
// sections/<section>.cpp next to that section's description and reload rules.
#pragma once

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
#include <iterator>
#include <limits>
#include <set>

#include "secret_reader.hpp"
#include "xks/config/config.hpp"
#include "xks/config/hsm_vendor.hpp"
#include "xks/core/ascii.hpp"
#include "xks/hsm/ckr_names.hpp"

namespace xks::config::detail {

namespace fs = std::filesystem;
using Keys = std::initializer_list<std::string_view>;

inline constexpr std::size_t kMaxUriPathChars = 128;     // XKS spec: XksProxyUriPath
inline constexpr std::size_t kMaxKeyIdChars = 128;       // XKS spec: externalKeyId
inline constexpr std::size_t kMaxTokenLabelChars = 32;   // CK_TOKEN_INFO.label is 32 bytes
inline constexpr std::size_t kMaxTokenSerialChars = 16;  // CK_TOKEN_INFO.serialNumber is 16 bytes
inline constexpr std::size_t kMaxHsms = 10;              // ekmFleetDetails holds 1-10 entries
inline constexpr std::size_t kMaxPinChars = 255;
inline constexpr std::string_view kUriSuffix = "/kms/xks/v1";
inline constexpr std::size_t kShownValueChars = 80;
inline constexpr std::size_t kMaxAccountNameChars = 32;  // useradd's limit

// ---------------------------------------------------------------- text helpers

// A value from the file, shown in a one-line message: quoted, control
// characters escaped, long values cut so that the message stays readable.
inline std::string quote(std::string_view v) {
  std::string out;
  const bool cut = v.size() > kShownValueChars;
  core::append_quoted(out, v.substr(0, kShownValueChars));
  if (cut) out.insert(out.size() - 1, "...");
  return out;
}

inline std::size_t edit_distance(std::string_view a, std::string_view b) {
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

inline std::string join_keys(Keys known) {
  std::string out;
  for (const auto k : known) {
    if (!out.empty()) out += ", ";
    out += k;
  }
  return out;
}

inline std::string sub(const std::string& path, std::string_view key) {
  return path.empty() ? std::string(key) : path + "." + std::string(key);
}
inline std::string at(const std::string& path, std::size_t i) {
  return path + "[" + std::to_string(i) + "]";
}

inline bool all_of_chars(std::string_view s, bool (*ok)(char)) {
  return std::all_of(s.begin(), s.end(), ok);
}
using core::is_alnum;
inline bool is_uri_path_char(char c) { return is_alnum(c) || c == '/' || c == '-' || c == '_'; }
inline bool is_key_id_char(char c) { return is_alnum(c) || c == '.' || c == '-' || c == '_'; }
inline bool is_akid_char(char c) { return (c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'); }
inline bool is_secret_char(char c) { return is_alnum(c) || c == '+' || c == '/' || c == '='; }
inline bool is_env_char(char c) { return is_alnum(c) || c == '_'; }
// POSIX portable user/group names (plus digits for a numeric id).
inline bool is_account_char(char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; }
inline bool is_ping_char(char c) {
  return is_alnum(c) || c == '/' || c == '-' || c == '_' || c == '.' || c == '~';
}
// An AWS region name: lower-case letters, digits and '-', starting with a
// letter, ending with a digit, with at least two parts (us-east-1,
// us-gov-west-1, cn-north-1).
inline bool is_aws_region(std::string_view r) {
  if (r.empty() || r.size() > 32 || !(r.front() >= 'a' && r.front() <= 'z') ||
      !(r.back() >= '0' && r.back() <= '9') || r.find('-') == std::string_view::npos ||
      r.find("--") != std::string_view::npos) {
    return false;
  }
  return std::all_of(r.begin(), r.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
  });
}
inline bool is_printable(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x20 && u != 0x7f;
}

inline const char* kind_of(const YAML::Node& n) {
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
  YAML::Node sequence(const YAML::Node& n, const std::string& path, const std::string& what) const;

  fs::path resolve(const std::string& p) const;
  void check_readable_file(const fs::path& p, const std::string& setting, const std::string& what,
                           const std::string& fix) const;
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
  // keys[].versions and keys[].current (the single-label form otherwise).
  void parse_key_versions(const Section& s, KeyEntry& k) const;
  KeyVersion parse_key_version(const YAML::Node& n, const std::string& path) const;
  std::vector<LegacyLayout> parse_legacy_layouts(const YAML::Node& n,
                                                 const std::string& path) const;
  void parse_health(const YAML::Node& n, HealthConfig& out) const;
  void parse_logging(const YAML::Node& n, LoggingConfig& out) const;
  LogFileConfig parse_log_file(const YAML::Node& n, const std::string& path) const;
  void parse_metrics(const YAML::Node& n, MetricsConfig& out) const;
  void parse_reload(const YAML::Node& n, ReloadConfig& out) const;
  void default_client_names(Config& c) const;
  void cross_check(const Config& c) const;

  fs::path file_;
  fs::path dir_;
};

}  // namespace xks::config::detail
