// Shared fixture for the config tests: a private temp folder per test holding
// a complete, valid configuration (certificates, module, PIN and secret files,
// all mode 0600 and referenced by RELATIVE paths), plus helpers to mutate it
// and to assert on ConfigError messages.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <yaml-cpp/yaml.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>

#include "xks/config/config.hpp"

namespace xks::config::test {

namespace fs = std::filesystem;

// Distinctive values so that a leak into any message is easy to detect.
inline constexpr const char* kSecret = "S3cr3t+Value/That=Must0NeverAppearInAnyLogLine";  // 46
inline constexpr const char* kSecret2 = "An0ther+Secret/Value=ForRotationTestsOnlyXYZ";   // 44
inline constexpr const char* kPin = "pin-1234-never-logged";
inline constexpr const char* kAkid = "AKIAXKSPROXYEXAMPLE2";
inline constexpr const char* kAkid2 = "AKIAXKSPROXYEXAMPLE3";

inline const char* kBaseYaml = R"(server:
  listen: "127.0.0.1:0"
  threads: 2
  fleet_size: 1
  ping_path: /ping
  request_deadline_ms: 200
  limits:
    max_body_bytes: 65536
    max_header_bytes: 16384
    max_connections: 100
    max_requests_per_connection: 0
    handshake_timeout_ms: 5000
    header_timeout_ms: 10000
    body_timeout_ms: 10000
    idle_timeout_ms: 120000
    write_timeout_ms: 10000
tls:
  enabled: true
  certificate: tls/server.crt
  private_key: tls/server.key
  client_ca: tls/ca.pem
  client_names: [cks.kms.eu-west-1.amazonaws.com]
hsm:
  name: soft1
  module: lib/libfake-pkcs11.so
  token_label: xks
  pin: { file: secrets/hsm.pin }
  sessions: 8
  health_key: xks-health
  iv: caller_random
keystores:
  - uri_path: /demo/kms/xks/v1
    credentials:
      - access_key_id: AKIAXKSPROXYEXAMPLE2
        secret: { file: secrets/demo.secret }
        not_after: "2027-01-01T00:00:00Z"
    keys:
      - { id: demo-aes-key, label: demo-aes-label, enabled: true }
      - { id: second.key_2 }
health: { interval_ms: 10000, degraded_latency_ms: 50, max_age_ms: 60000 }
logging: { level: info, format: json }
)";

class ConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "xks-config-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
    write("tls/server.crt", "-----BEGIN CERTIFICATE-----\n");
    write("tls/server.key", "-----BEGIN PRIVATE KEY-----\n");
    write("tls/ca.pem", "-----BEGIN CERTIFICATE-----\n");
    write("lib/libfake-pkcs11.so", "not really a library");
    write("secrets/hsm.pin", std::string(kPin) + "\n");
    write("secrets/demo.secret", std::string(kSecret) + "\n");
    write("secrets/other.secret", std::string(kSecret2) + "\n");
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  // Writes `content` at dir_/rel with `mode` (0600 unless told), making folders.
  fs::path write(const std::string& rel, const std::string& content, ::mode_t mode = 0600) {
    const fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    {
      std::ofstream out(p, std::ios::binary | std::ios::trunc);
      out << content;
    }
    ::chmod(p.c_str(), mode);
    return p;
  }

  YAML::Node base() const { return YAML::Load(kBaseYaml); }

  // Writes a YAML node (or text) as the configuration and returns its path.
  fs::path write_config(const YAML::Node& n, const std::string& name = "xks-proxy.yaml") {
    YAML::Emitter e;
    e << n;
    return write(name, e.c_str(), 0644);
  }
  fs::path write_config_text(const std::string& text, const std::string& name = "xks-proxy.yaml") {
    return write(name, text, 0644);
  }

  Config load_mutated(const std::function<void(YAML::Node&)>& mutate) {
    YAML::Node n = base();
    mutate(n);
    return load_config(write_config(n));
  }

  // Loads the mutated base config, expects a ConfigError for `setting`, checks
  // the message shape (one line, file, setting, fix, no secrets) and returns it.
  std::string expect_error(const std::function<void(YAML::Node&)>& mutate,
                           const std::string& setting) {
    YAML::Node n = base();
    mutate(n);
    return expect_error_file(write_config(n), setting);
  }
  std::string expect_error_file(const fs::path& file, const std::string& setting) {
    try {
      (void)load_config(file);
    } catch (const ConfigError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(e.setting(), setting) << msg;
      EXPECT_THAT(msg, ::testing::StartsWith(file.string() + ": " + setting + ": ")) << msg;
      EXPECT_THAT(msg, ::testing::HasSubstr("; fix: ")) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_EQ(msg.find(kSecret), std::string::npos) << msg;
      EXPECT_EQ(msg.find(kSecret2), std::string::npos) << msg;
      EXPECT_EQ(msg.find(kPin), std::string::npos) << msg;
      return msg;
    } catch (const std::exception& e) {
      ADD_FAILURE() << "expected ConfigError for " << setting << ", got: " << e.what();
      return {};
    }
    ADD_FAILURE() << "expected ConfigError for " << setting << ", but the config loaded";
    return {};
  }

  fs::path dir_;
};

// Sets an environment variable for the life of the object.
class ScopedEnv {
 public:
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (value != nullptr) {
      ::setenv(name, value, 1);
    } else {
      ::unsetenv(name);
    }
  }
  ScopedEnv(const ScopedEnv&) = delete;
  ScopedEnv& operator=(const ScopedEnv&) = delete;
  ~ScopedEnv() { ::unsetenv(name_.c_str()); }

 private:
  std::string name_;
};

}  // namespace xks::config::test
