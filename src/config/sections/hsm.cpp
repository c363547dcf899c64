// The hsm section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

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

  const int selectors =
      int{s.has("token_label")} + int{s.has("token_serial")} + int{s.has("slot_id")};
  if (selectors != 1) {
    std::string set;
    for (const char* k : {"token_label", "token_serial", "slot_id"}) {
      if (s.has(k)) set += std::string(set.empty() ? "" : " and ") + k;
    }
    fail(path,
         selectors == 0 ? "sets neither token_label, token_serial nor slot_id" : "sets both " + set,
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
    fail(s.path("pin"),
         "the PIN read from " + h.pin_source.describe() + " is longer than 255 characters",
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
  for (const auto& p : vendor_profiles())
    vendors += (vendors.empty() ? "" : ", ") + std::string(p.name);
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
        fail(s.path("iv"),
             std::string(to_string(h.iv)) + " does not work with " + std::string(profile.family) +
                 ": " + std::string(refused.why),
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

// ---------------------------------------------------------------- describe

nlohmann::json describe_hsms(const std::vector<HsmConfig>& all) {
  using nlohmann::json;
  json hsms = json::array();
  for (const auto& h : all) {
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
  return hsms;
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
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
};
}  // namespace

std::span<const Rule> hsm_rules() { return kRules; }

}  // namespace xks::config::detail
