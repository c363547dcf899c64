// The tls section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

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
    if (v.empty())
      fail(s.path(key), "is empty", "write the path of the PEM file or delete the line");
    dst = resolve(v);
  };
  path_setting("certificate", out.certificate);
  path_setting("private_key", out.private_key);
  path_setting("client_ca", out.client_ca);
  if (s.has("client_names")) {
    const YAML::Node names =
        sequence(s.get("client_names"), s.path("client_names"), "accepted client name");
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
    fail(s.path("client_names"),
         "is set without tls.client_ca, so no client certificate is asked for",
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
    check_readable_file(
        out.client_ca, s.path("client_ca"), "client CA file",
        "correct the path to the PEM CA bundle, or delete client_ca to turn mTLS off");
  }
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_tls(const TlsConfig& tls) {
  return {{"enabled", tls.enabled},
          {"certificate", tls.certificate.string()},
          {"private_key", tls.private_key.string()},
          {"client_ca", tls.client_ca.string()},
          {"client_names", tls.client_names},
          {"client_names_from", tls.client_names_defaulted ? "keystores[].region" : "config"},
          {"client_names_match",
           tls.client_names_match == config::TlsConfig::NameMatch::Cn ? "cn" : "cn_or_dns_san"},
          {"session_tickets", tls.session_tickets},
          {"ticket_key_rotation_hours", tls.ticket_key_rotation.count()}};
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
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
};
}  // namespace

std::span<const Rule> tls_rules() { return kRules; }

}  // namespace xks::config::detail
