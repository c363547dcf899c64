// The reload rules' private parts: how one setting of two configurations is
// compared for config::diff. Each section (sections/<section>.cpp) lists its
// rules next to its parse and description; reload_plan.cpp runs them all.
#pragma once

#include <algorithm>
#include <numeric>
#include <span>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/config/reload_plan.hpp"

namespace xks::config::detail {

using Details = std::vector<std::string>;

inline std::string text(const std::string& v) { return v; }
inline std::string text(const std::filesystem::path& v) { return v.string(); }
inline std::string text(bool v) { return v ? "true" : "false"; }
inline std::string text(Millis v) { return std::to_string(v.count()); }
inline std::string text(std::chrono::hours v) { return std::to_string(v.count()); }
inline std::string text(const std::optional<std::string>& v) { return v ? *v : "unset"; }
inline std::string text(const std::optional<std::uint64_t>& v) {
  return v ? std::to_string(*v) : "unset";
}
inline std::string text(IvMode v) { return std::string(to_string(v)); }
inline std::string text(HsmVendor v) { return std::string(to_string(v)); }
inline std::string text(PinFormat v) { return std::string(to_string(v)); }
inline std::string text(TlsConfig::NameMatch v) {
  return v == TlsConfig::NameMatch::Cn ? "cn" : "cn_or_dns_san";
}
inline std::string text(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}
template <class T>
requires std::is_integral_v<T>
inline std::string text(T v) { return std::to_string(v); }

// "name: <new value>" when the values differ.
template <class T>
void value(Details& d, std::string_view name, const T& before, const T& after) {
  if (!(before == after)) d.push_back(std::string(name) + ": " + text(after));
}

// The name of one HSM's setting in a log line: hsm.<key> for a single HSM,
// hsm[<i>].<key> in a list.
inline std::string hsm_setting(const Config& c, std::size_t i, std::string_view key) {
  return (c.hsms.size() == 1 ? std::string("hsm") : "hsm[" + std::to_string(i) + "]") + "." +
         std::string(key);
}

// Calls f(running_hsm, next_hsm, i) for every HSM position both have.
template <class F>
void each_hsm(const Config& a, const Config& b, F f) {
  for (std::size_t i = 0; i < std::min(a.hsms.size(), b.hsms.size()); ++i)
    f(a.hsms[i], b.hsms[i], i);
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
inline std::string whole(double v) { return std::to_string(static_cast<long long>(v)); }

inline unsigned total_sessions(const Config& c) {
  return std::accumulate(c.hsms.begin(), c.hsms.end(), 0U,
                         [](unsigned n, const HsmConfig& h) { return n + h.sessions; });
}

inline bool same_credential(const Credential& a, const Credential& b) {
  return a.secret == b.secret && a.secret_source.describe() == b.secret_source.describe() &&
         a.not_after == b.not_after;
}

inline bool same_usage(const std::optional<KeyEntry::Usage>& a,
                       const std::optional<KeyEntry::Usage>& b) {
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

inline constexpr auto kLive = ReloadClass::Live;
inline constexpr auto kHsm = ReloadClass::NewHsmSessions;
inline constexpr auto kRestart = ReloadClass::Restart;

// Each section's rules, in the order of the documentation's table.
std::span<const Rule> server_rules();
std::span<const Rule> tls_rules();
std::span<const Rule> hsm_rules();
std::span<const Rule> keystores_rules();
std::span<const Rule> health_rules();
std::span<const Rule> reload_rules();
std::span<const Rule> metrics_rules();
std::span<const Rule> logging_rules();

}  // namespace xks::config::detail
