// load_config() on valid inputs: every field of the full schema, the JSON form,
// relative paths, the HSM list form, secrets from files and the environment.
#include <unistd.h>

#include "config_fixture.hpp"

#include <p11-kit/pkcs11.h>
#include <nlohmann/json.hpp>

#include "xks/config/hsm_vendor.hpp"

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

TEST_F(ConfigTest, FullExampleLoadsEveryField) {
  const fs::path file = write_config(base());
  const Config c = load_config(file);

  EXPECT_EQ(c.source, fs::absolute(file));
  EXPECT_EQ(c.server.listen_host, "127.0.0.1");
  EXPECT_EQ(c.server.listen_port, 0);
  EXPECT_EQ(c.server.threads, 2U);
  EXPECT_EQ(c.server.fleet_size, 1U);
  EXPECT_EQ(c.server.ping_path, "/ping");
  EXPECT_EQ(c.server.request_deadline, Millis(200));
  EXPECT_EQ(c.server.limits.max_body_bytes, 65536U);
  EXPECT_EQ(c.server.limits.max_header_bytes, 16384U);
  EXPECT_EQ(c.server.limits.max_connections, 100U);
  EXPECT_EQ(c.server.limits.max_requests_per_connection, 0U);
  EXPECT_EQ(c.server.limits.handshake_timeout, Millis(5000));
  EXPECT_EQ(c.server.limits.idle_timeout, Millis(120000));

  EXPECT_TRUE(c.tls.enabled);
  EXPECT_EQ(c.tls.certificate, dir_ / "tls/server.crt");
  EXPECT_EQ(c.tls.private_key, dir_ / "tls/server.key");
  EXPECT_EQ(c.tls.client_ca, dir_ / "tls/ca.pem");
  EXPECT_EQ(c.tls.client_names, std::vector<std::string>{"cks.kms.eu-west-1.amazonaws.com"});

  ASSERT_EQ(c.hsms.size(), 1U);
  const HsmConfig& h = c.hsms[0];
  EXPECT_EQ(h.name, "soft1");
  EXPECT_EQ(h.module, dir_ / "lib/libfake-pkcs11.so");
  EXPECT_EQ(h.token_label, std::optional<std::string>("xks"));
  EXPECT_FALSE(h.slot_id.has_value());
  EXPECT_EQ(h.pin_source.kind, SecretSource::Kind::File);
  EXPECT_EQ(h.pin_source.ref, (dir_ / "secrets/hsm.pin").string());
  EXPECT_EQ(h.pin.view(), kPin);  // trailing newline stripped
  EXPECT_EQ(h.sessions, 8U);
  EXPECT_EQ(h.health_key, "xks-health");
  EXPECT_EQ(h.iv, IvMode::CallerRandom);

  ASSERT_EQ(c.keystores.size(), 1U);
  const KeyStore& ks = c.keystores[0];
  EXPECT_EQ(ks.uri_path, "/demo/kms/xks/v1");
  ASSERT_EQ(ks.credentials.size(), 1U);
  EXPECT_EQ(ks.credentials[0].access_key_id, kAkid);
  EXPECT_EQ(ks.credentials[0].secret.view(), kSecret);
  ASSERT_TRUE(ks.credentials[0].not_after.has_value());
  using namespace std::chrono;
  EXPECT_EQ(*ks.credentials[0].not_after, sys_days{year{2027} / January / 1});
  // The credential's age: its secret file's mtime.
  ASSERT_TRUE(ks.credentials[0].issued.has_value());
  const auto mtime = file_clock::to_sys(fs::last_write_time(dir_ / "secrets/demo.secret"));
  EXPECT_EQ(time_point_cast<seconds>(*ks.credentials[0].issued), time_point_cast<seconds>(mtime));
  ASSERT_EQ(ks.keys.size(), 2U);
  EXPECT_EQ(ks.keys[0].id, "demo-aes-key");
  EXPECT_EQ(ks.keys[0].label, "demo-aes-label");
  EXPECT_TRUE(ks.keys[0].enabled);
  EXPECT_EQ(ks.keys[1].id, "second.key_2");
  EXPECT_EQ(ks.keys[1].label, "second.key_2");  // label defaults to id

  EXPECT_EQ(c.health.interval, Millis(10000));
  EXPECT_EQ(c.health.degraded_latency, Millis(50));
  EXPECT_EQ(c.health.max_age, Millis(60000));
  EXPECT_EQ(c.logging.level, "info");
  EXPECT_EQ(c.logging.format, LoggingConfig::Format::Json);
  EXPECT_FALSE(c.logging.file.has_value());  // stdout
  EXPECT_EQ(c.logging.flush_interval, Millis(0));
}

TEST_F(ConfigTest, LogFileWithSizeOrDailyRotation) {
  fs::create_directories(dir_ / "logs");
  YAML::Node n = base();
  n["logging"]["file"]["path"] = "logs/xks.log";  // relative: from the config's folder
  n["logging"]["flush_interval_ms"] = 200;
  Config c = load_config(write_config(n));
  ASSERT_TRUE(c.logging.file.has_value());
  EXPECT_EQ(c.logging.file->path, dir_ / "logs/xks.log");
  EXPECT_EQ(c.logging.file->rotate, LogFileConfig::Rotate::Size);
  EXPECT_EQ(c.logging.file->max_size_mb, 100U);
  EXPECT_EQ(c.logging.file->max_files, 10U);
  EXPECT_EQ(c.logging.flush_interval, Millis(200));

  n["logging"]["file"]["max_size_mb"] = 5;
  n["logging"]["file"]["max_files"] = 3;
  c = load_config(write_config(n));
  EXPECT_EQ(c.logging.file->max_size_mb, 5U);
  EXPECT_EQ(c.logging.file->max_files, 3U);

  n["logging"]["file"].remove("max_size_mb");
  n["logging"]["file"]["rotate"] = "daily";
  n["logging"]["file"]["daily_at"] = "23:05";
  c = load_config(write_config(n));
  EXPECT_EQ(c.logging.file->rotate, LogFileConfig::Rotate::Daily);
  EXPECT_EQ(c.logging.file->daily_hour, 23);
  EXPECT_EQ(c.logging.file->daily_minute, 5);
}

TEST_F(ConfigTest, MinimalConfigTakesDocumentedDefaults) {
  const Config c = load_config(write_config_text(R"(
tls: { certificate: tls/server.crt, private_key: tls/server.key }
hsm: { module: lib/libfake-pkcs11.so, slot_id: 3, pin: { file: secrets/hsm.pin }, health_key: hk }
keystores:
  - uri_path: /kms/xks/v1
    credentials: [ { access_key_id: AKIAXKSPROXYEXAMPLE2, secret: { file: secrets/demo.secret } } ]
    keys: [ { id: k1 } ]
)"));
  const Limits defaults;
  EXPECT_EQ(c.server.listen_host, "0.0.0.0");
  EXPECT_EQ(c.server.listen_port, 443);
  EXPECT_EQ(c.server.threads, 0U);
  EXPECT_EQ(c.server.ping_path, "/ping");
  EXPECT_EQ(c.server.request_deadline, Millis(200));
  EXPECT_EQ(c.server.limits.max_body_bytes, defaults.max_body_bytes);
  EXPECT_TRUE(c.tls.enabled);
  EXPECT_TRUE(c.tls.client_ca.empty());
  EXPECT_EQ(c.hsms[0].name, "hsm1");
  EXPECT_EQ(c.hsms[0].slot_id, std::optional<std::uint64_t>(3));
  EXPECT_FALSE(c.hsms[0].token_label.has_value());
  EXPECT_EQ(c.hsms[0].sessions, 8U);
  EXPECT_EQ(c.hsms[0].iv, IvMode::CallerRandom);
  EXPECT_FALSE(c.keystores[0].credentials[0].not_after.has_value());
  EXPECT_TRUE(c.keystores[0].keys[0].enabled);
  EXPECT_EQ(c.health.max_age, Millis(60000));
  EXPECT_EQ(c.logging.format, LoggingConfig::Format::Json);
}

TEST_F(ConfigTest, JsonEquivalentLoads) {
  // Tabs and one-line objects on purpose: JSON written by other tools.
  const fs::path file = write_config_text(R"({
	"server": {"listen": "[::1]:8443", "threads": 4, "fleet_size": 2, "ping_path": "/healthz",
	           "request_deadline_ms": 150, "limits": {"max_body_bytes": 32768, "idle_timeout_ms": 5000}},
	"tls": {"enabled": true, "certificate": "tls/server.crt", "private_key": "tls/server.key"},
	"hsm": {"name": "soft1", "module": "lib/libfake-pkcs11.so", "token_label": "xks",
	        "pin": {"file": "secrets/hsm.pin"}, "sessions": 4, "health_key": "xks-health",
	        "iv": "hsm_into_zero_buffer"},
	"keystores": [{
		"uri_path": "/demo/kms/xks/v1",
		"credentials": [{"access_key_id": "AKIAXKSPROXYEXAMPLE2", "secret": {"file": "secrets/demo.secret"},
		                 "not_after": "2027-06-30T12:00:00+02:00"}],
		"keys": [{"id": "demo-aes-key", "label": "L", "enabled": false}]
	}],
	"health": {"interval_ms": 5000, "degraded_latency_ms": 20, "max_age_ms": 30000},
	"logging": {"level": "debug", "format": "text"}
}
)",
                                          "xks-proxy.json");
  const Config c = load_config(file);
  EXPECT_EQ(c.server.listen_host, "::1");
  EXPECT_EQ(c.server.listen_port, 8443);
  EXPECT_EQ(c.server.threads, 4U);
  EXPECT_EQ(c.server.fleet_size, 2U);
  EXPECT_EQ(c.server.ping_path, "/healthz");
  EXPECT_EQ(c.server.request_deadline, Millis(150));
  EXPECT_EQ(c.server.limits.max_body_bytes, 32768U);
  EXPECT_EQ(c.server.limits.idle_timeout, Millis(5000));
  EXPECT_EQ(c.hsms[0].iv, IvMode::HsmIntoZeroBuffer);
  EXPECT_EQ(c.hsms[0].pin.view(), kPin);
  EXPECT_EQ(c.keystores[0].credentials[0].secret.view(), kSecret);
  EXPECT_FALSE(c.keystores[0].keys[0].enabled);
  using namespace std::chrono;
  EXPECT_EQ(*c.keystores[0].credentials[0].not_after, sys_days{year{2027} / June / 30} + hours{10});
  EXPECT_EQ(c.health.interval, Millis(5000));
  EXPECT_EQ(c.logging.level, "debug");
  EXPECT_EQ(c.logging.format, LoggingConfig::Format::Text);
}

TEST_F(ConfigTest, JsonDuplicateKeyIsAnError) {
  const std::string msg = expect_error_file(
      write_config_text(R"({"logging": {"level": "info"}, "logging": {"level": "debug"}})",
                        "x.json"),
      "logging");
  EXPECT_THAT(msg, HasSubstr("set twice"));
}

TEST_F(ConfigTest, RelativePathsResolveAgainstTheConfigFolderNotTheWorkingDirectory) {
  // The config lives in a sub-folder; its relative paths point one level up.
  YAML::Node n = base();
  n["tls"]["certificate"] = "../tls/server.crt";
  n["tls"]["private_key"] = "../tls/server.key";
  n["tls"]["client_ca"] = "../tls/ca.pem";
  n["hsm"]["module"] = "../lib/libfake-pkcs11.so";
  n["hsm"]["pin"]["file"] = "../secrets/hsm.pin";
  n["keystores"][0]["credentials"][0]["secret"]["file"] = "../secrets/demo.secret";
  const fs::path file = write_config(n, "etc/xks-proxy.yaml");

  const fs::path old = fs::current_path();
  fs::current_path("/");
  Config c;
  EXPECT_NO_THROW(c = load_config(file));
  fs::current_path(old);
  EXPECT_EQ(c.tls.certificate, dir_ / "tls/server.crt");  // normalised, no ".."
  EXPECT_EQ(c.hsms.at(0).module, dir_ / "lib/libfake-pkcs11.so");
  EXPECT_EQ(c.keystores.at(0).credentials.at(0).secret.view(), kSecret);
}

TEST_F(ConfigTest, AbsolutePathsAreKept) {
  const Config c = load_mutated(
      [&](YAML::Node& n) { n["hsm"]["module"] = (dir_ / "lib/libfake-pkcs11.so").string(); });
  EXPECT_EQ(c.hsms[0].module, dir_ / "lib/libfake-pkcs11.so");
}

TEST_F(ConfigTest, HsmListFormLoadsSeveralHsmsWithDefaultNames) {
  const Config c = load_mutated([&](YAML::Node& n) {
    YAML::Node first = YAML::Clone(n["hsm"]);  // a copy: n["hsm"] is replaced below
    first.remove("name");
    YAML::Node second = YAML::Clone(first);
    second.remove("token_label");
    second["slot_id"] = 7;
    second["iv"] = "hsm_appended";
    second["pin"] = YAML::Load("{ env: XKS_TEST_PIN_2 }");
    YAML::Node list(YAML::NodeType::Sequence);
    list.push_back(first);
    list.push_back(second);
    n["hsm"] = list;
    ::setenv("XKS_TEST_PIN_2", "second-pin", 1);
  });
  ::unsetenv("XKS_TEST_PIN_2");
  ASSERT_EQ(c.hsms.size(), 2U);
  EXPECT_EQ(c.hsms[0].name, "hsm1");
  EXPECT_EQ(c.hsms[1].name, "hsm2");
  EXPECT_EQ(c.hsms[0].pin.view(), kPin);
  EXPECT_EQ(c.hsms[1].pin.view(), "second-pin");
  EXPECT_EQ(c.hsms[1].slot_id, std::optional<std::uint64_t>(7));
  EXPECT_EQ(c.hsms[1].iv, IvMode::HsmAppended);
}

TEST_F(ConfigTest, EnvSecretsAreRead) {
  ScopedEnv pin("XKS_TEST_HSM_PIN", kPin);
  ScopedEnv secret("XKS_TEST_SECRET", kSecret2);
  const Config c = load_mutated([](YAML::Node& n) {
    n["hsm"]["pin"] = YAML::Load("{ env: XKS_TEST_HSM_PIN }");
    n["keystores"][0]["credentials"][0]["secret"] = YAML::Load("{ env: XKS_TEST_SECRET }");
  });
  EXPECT_EQ(c.hsms[0].pin_source.kind, SecretSource::Kind::Env);
  EXPECT_EQ(c.hsms[0].pin_source.describe(), "env XKS_TEST_HSM_PIN");
  EXPECT_EQ(c.hsms[0].pin.view(), kPin);
  EXPECT_EQ(c.keystores[0].credentials[0].secret.view(), kSecret2);
}

TEST_F(ConfigTest, SecretFileTakesOnlyTheFirstLineAndStripsCrLf) {
  write("secrets/demo.secret", std::string(kSecret) + "\r\nsecond line is ignored\n");
  const Config c = load_config(write_config(base()));
  EXPECT_EQ(c.keystores[0].credentials[0].secret.view(), kSecret);
}

TEST_F(ConfigTest, SecretFileWithoutTrailingNewlineLoads) {
  write("secrets/demo.secret", kSecret);
  EXPECT_EQ(load_config(write_config(base())).keystores[0].credentials[0].secret.view(), kSecret);
}

TEST_F(ConfigTest, InsecurePermissionsAreAllowedOnlyWhenSaidExplicitly) {
  write("secrets/demo.secret", std::string(kSecret) + "\n", 0644);
  const Config c = load_mutated([](YAML::Node& n) {
    n["keystores"][0]["credentials"][0]["secret"]["allow_insecure_permissions"] = true;
  });
  EXPECT_TRUE(c.keystores[0].credentials[0].secret_source.allow_insecure_permissions);
  EXPECT_EQ(c.keystores[0].credentials[0].secret.view(), kSecret);
}

TEST_F(ConfigTest, SeveralCredentialsAndKeyStores) {
  const Config c = load_mutated([](YAML::Node& n) {
    YAML::Node cred2 = YAML::Clone(n["keystores"][0]["credentials"][0]);
    cred2["access_key_id"] = kAkid2;
    cred2["secret"]["file"] = "secrets/other.secret";
    n["keystores"][0]["credentials"].push_back(cred2);
    YAML::Node ks2 = YAML::Clone(n["keystores"][0]);
    ks2["uri_path"] = "/team-b/kms/xks/v1";
    n["keystores"].push_back(ks2);
  });
  ASSERT_EQ(c.keystores.size(), 2U);
  EXPECT_EQ(c.keystores[0].credentials.size(), 2U);
  EXPECT_EQ(c.keystores[0].credentials[1].secret.view(), kSecret2);
  EXPECT_EQ(c.find_keystore("/team-b/kms/xks/v1"), &c.keystores[1]);
  EXPECT_EQ(c.find_keystore("/demo/kms/xks/v1"), &c.keystores[0]);
  EXPECT_EQ(c.find_keystore("/other/kms/xks/v1"), nullptr);
  EXPECT_EQ(c.find_keystore("/demo/kms/xks/v1/"), nullptr);
}

TEST_F(ConfigTest, TlsMayBeDisabledExplicitlyWithoutFiles) {
  const Config c = load_mutated([](YAML::Node& n) { n["tls"] = YAML::Load("{ enabled: false }"); });
  EXPECT_FALSE(c.tls.enabled);
}

TEST_F(ConfigTest, ListenAcceptsV4V6AndPortZero) {
  for (const auto& [text, host, port] :
       std::vector<std::tuple<std::string, std::string, std::uint16_t>>{
           {"0.0.0.0:443", "0.0.0.0", 443},
           {"127.0.0.1:0", "127.0.0.1", 0},
           {"[::]:443", "::", 443},
           {"[fe80::1]:65535", "fe80::1", 65535}}) {
    const Config c = load_mutated([&](YAML::Node& n) { n["server"]["listen"] = text; });
    EXPECT_EQ(c.server.listen_host, host) << text;
    EXPECT_EQ(c.server.listen_port, port) << text;
  }
}

TEST_F(ConfigTest, NotAfterAcceptsDatesAndOffsets) {
  using namespace std::chrono;
  for (const auto& [text, expected] : std::vector<std::pair<std::string, system_clock::time_point>>{
           {"2027-01-01", sys_days{year{2027} / January / 1}},
           {"2027-01-01T01:02:03Z", sys_days{year{2027} / January / 1} + 1h + 2min + 3s},
           {"2027-01-01T01:02:03.250Z", sys_days{year{2027} / January / 1} + 1h + 2min + 3s},
           {"2027-01-01T00:00:00-01:30", sys_days{year{2027} / January / 1} + 1h + 30min}}) {
    const Config c = load_mutated(
        [&](YAML::Node& n) { n["keystores"][0]["credentials"][0]["not_after"] = text; });
    EXPECT_EQ(*c.keystores[0].credentials[0].not_after, expected) << text;
  }
}

TEST_F(ConfigTest, IvModesParse) {
  for (const auto& [text, mode] : std::vector<std::pair<std::string, IvMode>>{
           {"caller_random", IvMode::CallerRandom},
           {"hsm_into_zero_buffer", IvMode::HsmIntoZeroBuffer},
           {"hsm_appended", IvMode::HsmAppended}}) {
    const Config c = load_mutated([&](YAML::Node& n) { n["hsm"]["iv"] = text; });
    EXPECT_EQ(c.hsms[0].iv, mode);
    EXPECT_EQ(to_string(mode), text);
  }
}

TEST_F(ConfigTest, VendorSetsTheDefaultsAndAnExplicitSettingWins) {
  struct Row {
    const char* vendor;
    IvMode iv;
    std::vector<unsigned long> codes;
    PinFormat pin;
  };
  const std::vector<unsigned long> standard = {CKR_ENCRYPTED_DATA_INVALID,
                                               CKR_ENCRYPTED_DATA_LEN_RANGE};
  auto with = [&](unsigned long extra) {
    auto v = standard;
    v.push_back(extra);
    return v;
  };
  for (const Row& row : std::vector<Row>{
           {"generic", IvMode::CallerRandom, standard, PinFormat::Plain},
           {"softhsm2", IvMode::CallerRandom, with(CKR_GENERAL_ERROR), PinFormat::Plain},
           {"luna", IvMode::HsmAppended, standard, PinFormat::Plain},
           {"nshield", IvMode::HsmIntoZeroBuffer, with(CKR_FUNCTION_FAILED), PinFormat::Plain},
           {"vault", IvMode::CallerRandom, standard, PinFormat::Plain},
           {"utimaco", IvMode::CallerRandom, standard, PinFormat::Plain}}) {
    const Config c = load_mutated([&](YAML::Node& n) {
      n["hsm"]["vendor"] = row.vendor;
      n["hsm"].remove("iv");
    });
    EXPECT_EQ(c.hsms[0].vendor, *vendor_from_name(row.vendor)) << row.vendor;
    EXPECT_EQ(c.hsms[0].iv, row.iv) << row.vendor;
    EXPECT_EQ(c.hsms[0].auth_failure_codes, row.codes) << row.vendor;
    EXPECT_EQ(c.hsms[0].pin_format, row.pin) << row.vendor;
    EXPECT_EQ(to_string(c.hsms[0].vendor), row.vendor);
  }
  const Config c = load_mutated([&](YAML::Node& n) {
    n["hsm"]["vendor"] = "nshield";
    n["hsm"].remove("iv");
    n["hsm"]["auth_failure_codes"] = YAML::Load("[CKR_ENCRYPTED_DATA_INVALID, CKR_GENERAL_ERROR]");
    n["hsm"]["pin_format"] = "plain";
  });
  EXPECT_EQ(c.hsms[0].auth_failure_codes,
            (std::vector<unsigned long>{CKR_ENCRYPTED_DATA_INVALID, CKR_GENERAL_ERROR}));
}

TEST_F(ConfigTest, InitArgsEnvironmentAndTokenSerialLoad) {
  const fs::path conf = dir_ / "softhsm2.conf";
  std::ofstream(conf) << "directories.tokendir = /nonexistent\n";
  const Config c = load_mutated([&](YAML::Node& n) {
    n["hsm"].remove("token_label");
    n["hsm"]["token_serial"] = "9c1e0f3a5b7d";
    n["hsm"]["init_args"] = "configdir='sql:/tmp/db' flags=readOnly";
    n["hsm"]["init_os_locking"] = false;
    n["hsm"]["environment"] = YAML::Load("{ SOFTHSM2_CONF: softhsm2.conf, OTHER: plain-value }");
  });
  const HsmConfig& h = c.hsms[0];
  EXPECT_EQ(h.token_serial, std::optional<std::string>{"9c1e0f3a5b7d"});
  EXPECT_FALSE(h.token_label);
  EXPECT_EQ(h.init_args, std::optional<std::string>{"configdir='sql:/tmp/db' flags=readOnly"});
  EXPECT_FALSE(h.init_os_locking);
  ASSERT_EQ(h.environment.size(), 2U);
  // A relative value naming a file next to the configuration is a path.
  EXPECT_EQ(h.environment[0], (std::pair<std::string, std::string>{
                                  "SOFTHSM2_CONF", conf.lexically_normal().string()}));
  EXPECT_EQ(h.environment[1], (std::pair<std::string, std::string>{"OTHER", "plain-value"}));
}

TEST(ConfigErrorTest, WhatIsOneLineWithFileSettingProblemAndFix) {
  const ConfigError e("/etc/xks-proxy/xks-proxy.yaml", "keystores[0].uri_path",
                      "\"/demo/kms/xks\" must end with /kms/xks/v1\nsecond line",
                      "set it to the XksProxyUriPath configured in KMS, e.g. /demo/kms/xks/v1");
  EXPECT_STREQ(e.what(),
               "/etc/xks-proxy/xks-proxy.yaml: keystores[0].uri_path: \"/demo/kms/xks\" must end "
               "with /kms/xks/v1 second line; fix: set it to the XksProxyUriPath configured in "
               "KMS, e.g. /demo/kms/xks/v1");
  EXPECT_EQ(e.setting(), "keystores[0].uri_path");
}

TEST(SecretSourceTest, Describe) {
  SecretSource f{SecretSource::Kind::File, "/etc/x", false};
  SecretSource e{SecretSource::Kind::Env, "XKS_HSM_PIN", false};
  EXPECT_EQ(f.describe(), "file /etc/x");
  EXPECT_EQ(e.describe(), "env XKS_HSM_PIN");
}

TEST_F(ConfigTest, ReloadWatchIsOffByDefaultAndParses) {
  Config c = load_config(write_config(base()));
  EXPECT_FALSE(c.reload.watch);
  EXPECT_EQ(c.reload.debounce, Millis(500));

  c = load_mutated([](YAML::Node& n) {
    n["reload"]["watch"] = true;
    n["reload"]["debounce_ms"] = 200;
  });
  EXPECT_TRUE(c.reload.watch);
  EXPECT_EQ(c.reload.debounce, Millis(200));
  const auto j = nlohmann::json::parse(describe_redacted(c));
  EXPECT_EQ(j["reload"]["watch"], true);
  EXPECT_EQ(j["reload"]["debounce_ms"], 200);
}

TEST_F(ConfigTest, ReloadSettingsAreValidated) {
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["reload"]["watch"] = "yes"; }, "reload.watch"),
              HasSubstr("true or false"));
  EXPECT_THAT(
      expect_error([](YAML::Node& n) { n["reload"]["debounce_ms"] = 5; }, "reload.debounce_ms"),
      HasSubstr("out of range 10..60000"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["reload"]["wacth"] = true; }, "reload.wacth"),
              HasSubstr("did you mean \"watch\""));
}

}  // namespace
}  // namespace xks::config::test
