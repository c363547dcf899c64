// The shipped examples (config/xks-proxy.example.yaml, config/examples/*.yaml)
// must stay valid: each is loaded after its file paths are pointed at temp
// files (the real ones do not exist on a build machine) and its env secrets are
// set. The main example must show every setting, and docs/configuration.md
// must mention every setting.
#include <set>

#include "config_fixture.hpp"
#include "xks/config/hsm_vendor.hpp"

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;

const fs::path kSourceDir = XKS_SOURCE_DIR;

// Every setting of the schema, as a dotted path ([] for list items).
const std::vector<std::string> kAllSettings = {"server.listen",
                                               "server.threads",
                                               "server.fleet_size",
                                               "server.ping_path",
                                               "server.request_deadline_ms",
                                               "server.shutdown_delay_ms",
                                               "server.limits.max_body_bytes",
                                               "server.limits.max_header_bytes",
                                               "server.limits.max_connections",
                                               "server.limits.max_requests_per_connection",
                                               "server.limits.handshake_timeout_ms",
                                               "server.limits.header_timeout_ms",
                                               "server.limits.body_timeout_ms",
                                               "server.limits.idle_timeout_ms",
                                               "server.limits.write_timeout_ms",
                                               "server.limits.unauthenticated_idle_timeout_ms",
                                               "server.limits.max_unauthenticated_per_source",
                                               "server.user",
                                               "server.group",
                                               "tls.enabled",
                                               "tls.certificate",
                                               "tls.private_key",
                                               "tls.client_ca",
                                               "tls.client_names",
                                               "tls.client_names_match",
                                               "hsm.name",
                                               "hsm.module",
                                               "hsm.token_label",
                                               "hsm.pin.file",
                                               "hsm.sessions",
                                               "hsm.health_key",
                                               "hsm.vendor",
                                               "keystores[].uri_path",
                                               "keystores[].region",
                                               "keystores[].enabled",
                                               "keystores[].credentials[].access_key_id",
                                               "keystores[].credentials[].secret.file",
                                               "keystores[].credentials[].not_after",
                                               "keystores[].keys[].id",
                                               "keystores[].keys[].label",
                                               "keystores[].keys[].enabled",
                                               "health.interval_ms",
                                               "health.degraded_latency_ms",
                                               "health.max_age_ms",
                                               "logging.level",
                                               "logging.format",
                                               "logging.flush_interval_ms",
                                               "reload.watch",
                                               "reload.debounce_ms"};

// Settings documented (commented out) rather than set in the main example,
// because they are alternatives to what it sets.
const std::vector<std::string> kAlternatives = {"hsm.slot_id",
                                                "hsm.token_serial",
                                                "hsm.pin.env",
                                                "hsm.iv",
                                                "hsm.auth_failure_codes",
                                                "hsm.pin_format",
                                                "hsm.init_args",
                                                "hsm.init_os_locking",
                                                "hsm.environment",
                                                "hsm.pin.allow_insecure_permissions",
                                                "server.allow_root",
                                                "logging.file.path",
                                                "logging.file.rotate",
                                                "logging.file.max_size_mb",
                                                "logging.file.daily_at",
                                                "logging.file.max_files",
                                                "keystores[].keys[].current",
                                                "keystores[].keys[].versions",
                                                "keystores[].keys[].versions[].version",
                                                "keystores[].keys[].versions[].decrypt_only",
                                                "keystores[].legacy_layouts"};

void collect_paths(const YAML::Node& n, const std::string& path, std::set<std::string>& out) {
  if (n.IsMap()) {
    for (const auto& kv : n) {
      const std::string p = path.empty() ? kv.first.Scalar() : path + "." + kv.first.Scalar();
      out.insert(p);
      collect_paths(kv.second, p, out);
    }
  } else if (n.IsSequence()) {
    for (const auto& item : n) collect_paths(item, path + "[]", out);
  }
}

class ExampleConfigTest : public ConfigTest {
 protected:
  // Points every file path at a temp file, sets every env secret; returns the
  // names of variables it set so that the test can unset them.
  std::vector<std::string> substitute(YAML::Node& n) {
    std::vector<std::string> vars;
    const auto secret = [&](YAML::Node s, const std::string& file, const std::string& value) {
      if (s["file"]) {
        s["file"] = file;
        write(file, value + "\n");
      }
      if (s["env"]) {
        const std::string var = s["env"].Scalar();
        ::setenv(var.c_str(), value.c_str(), 1);
        vars.push_back(var);
      }
    };
    if (n["tls"]) {
      for (const char* k : {"certificate", "private_key"}) {
        if (n["tls"][k]) n["tls"][k] = std::string("tls/server.") + (k[0] == 'c' ? "crt" : "key");
      }
      if (n["tls"]["client_ca"]) n["tls"]["client_ca"] = "tls/ca.pem";
    }
    const auto hsm = [&](YAML::Node h) {
      if (h["module"]) h["module"] = "lib/libfake-pkcs11.so";
      // AWS CloudHSM's PIN names the crypto user: <user>:<password>.
      const bool user_password = h["vendor"] && h["vendor"].Scalar() == "cloudhsm";
      if (h["pin"]) {
        secret(h["pin"], user_password ? "secrets/cu.pin" : "secrets/hsm.pin",
               user_password ? std::string("xks-cu:") + kPin : std::string(kPin));
      }
    };
    if (n["hsm"].IsSequence()) {
      for (auto h : n["hsm"]) hsm(h);
    } else {
      hsm(n["hsm"]);
    }
    for (auto ks : n["keystores"]) {
      for (auto c : ks["credentials"]) secret(c["secret"], "secrets/demo.secret", kSecret);
    }
    return vars;
  }

  Config load_example(const fs::path& example) {
    YAML::Node n = YAML::LoadFile(example.string());
    const std::vector<std::string> vars = substitute(n);
    Config c;
    try {
      c = load_config(write_config(n, "example.yaml"));
    } catch (const ConfigError& e) {
      ADD_FAILURE() << example << " is not valid: " << e.what();
    }
    for (const auto& v : vars) ::unsetenv(v.c_str());
    return c;
  }
};

TEST_F(ExampleConfigTest, MainExampleLoadsAndShowsEverySetting) {
  const fs::path example = kSourceDir / "config/xks-proxy.example.yaml";
  const Config c = load_example(example);
  ASSERT_EQ(c.keystores.size(), 1U);
  EXPECT_EQ(c.keystores[0].uri_path, "/demo/kms/xks/v1");
  EXPECT_EQ(c.server.listen_port, 443);

  std::set<std::string> present;
  collect_paths(YAML::LoadFile(example.string()), "", present);
  for (const auto& s : kAllSettings)
    EXPECT_TRUE(present.count(s)) << s << " missing from " << example;

  // The alternatives appear as comments.
  std::ifstream in(example);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  for (const auto& s : kAlternatives) {
    const std::string leaf = s.substr(s.rfind('.') + 1);
    EXPECT_THAT(text, HasSubstr(leaf + ":")) << s;
  }
}

TEST_F(ExampleConfigTest, HsmFamilyExamplesLoad) {
  const fs::path dir = kSourceDir / "config/examples";
  std::set<std::string> seen;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    seen.insert(entry.path().filename().string());
    SCOPED_TRACE(entry.path().string());
    const Config c = load_example(entry.path());
    EXPECT_FALSE(c.hsms.empty());

    std::ifstream in(entry.path());
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    // The header says what the file was run with: the real module, an emulation of the
    // family's documented behaviour (tests/fault_pkcs11 profiles), or nothing.
    const std::string header = text.substr(0, 400);
    const std::string name = entry.path().filename().string();
    if (name == "softhsm2.yaml") {
      EXPECT_THAT(header, HasSubstr("Tested with the real module"));
    } else if (name == "aws-cloudhsm.yaml" || name == "thales-luna.yaml" ||
               name == "entrust-nshield.yaml") {
      EXPECT_THAT(header, HasSubstr("emulated:")) << "header must say it is emulated";
    } else {
      EXPECT_THAT(header, HasSubstr("UNTESTED")) << "header must say untested";
    }
  }
  for (const char* f : {"softhsm2.yaml", "aws-cloudhsm.yaml", "thales-luna.yaml",
                        "entrust-nshield.yaml", "hashicorp-vault.yaml"}) {
    EXPECT_TRUE(seen.count(f)) << f;
  }
}

TEST_F(ExampleConfigTest, DocsMentionEverySetting) {
  std::ifstream in(kSourceDir / "docs/configuration.md");
  ASSERT_TRUE(in) << "docs/configuration.md";
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> all = kAllSettings;
  all.insert(all.end(), kAlternatives.begin(), kAlternatives.end());
  for (const auto& s : all) {
    const std::string leaf = s.substr(s.rfind('.') + 1);
    EXPECT_THAT(text, HasSubstr("`" + leaf + "`")) << s;
  }
  for (const char* iv : {"caller_random", "hsm_into_zero_buffer", "hsm_appended"}) {
    EXPECT_THAT(text, HasSubstr(iv));
  }
  for (const auto& profile : vendor_profiles()) {
    EXPECT_THAT(text, HasSubstr("`" + std::string(profile.name) + "`")) << profile.name;
  }
}

}  // namespace
}  // namespace xks::config::test
