// libFuzzer target for the configuration loader (xks::config::load_config).
// The configuration is written by an operator, not by the network, but a
// malformed file must still end in one clear ConfigError, never a crash, a
// hang or a leaked secret. There is no load-from-string entry point, so each
// input is written to config.yaml in a private temp folder that also holds
// the files a valid configuration refers to (relative paths: tls/server.pem,
// tls/server.key, tls/ca.pem, lib/module.so, secrets/hsm.pin,
// secrets/demo.secret, secrets/open.secret mode 0644), so that the fuzzer can
// reach every section, not just the YAML parser.
// Invariants: load_config returns a Config or throws ConfigError (nothing
// else) whose message is one line and never holds the secret or the PIN; a
// loaded Config describes (describe_redacted, config_warnings) without the
// secret or PIN appearing.
#include <sys/stat.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "xks/config/config.hpp"

namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSecret = "FuzzSecretValue+Never/Logged=0123456789abcdefXYZ";  // 49
constexpr std::string_view kPin = "fuzz-pin-never-logged-42";

void put(const fs::path& p, std::string_view content, ::mode_t mode) {
  fs::create_directories(p.parent_path());
  {
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out.write(content.data(), static_cast<std::streamsize>(content.size()));
  }
  ::chmod(p.c_str(), mode);
}

const fs::path& workdir() {
  static const fs::path dir = [] {
    std::string tmpl = (fs::temp_directory_path() / "xks-fuzz-config-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    const fs::path d = tmpl;
    put(d / "tls/server.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
    put(d / "tls/server.key", "-----BEGIN PRIVATE KEY-----\n", 0600);
    put(d / "tls/ca.pem", "-----BEGIN CERTIFICATE-----\n", 0644);
    put(d / "lib/module.so", "not a library", 0644);
    put(d / "secrets/hsm.pin", std::string(kPin) + "\n", 0600);
    put(d / "secrets/demo.secret", std::string(kSecret) + "\n", 0600);
    put(d / "secrets/open.secret", std::string(kSecret) + "\n", 0644);
    // Removed at exit so that repeated runs do not litter /tmp.
    std::atexit([] {
      std::error_code ec;
      fs::remove_all(workdir(), ec);
    });
    ::setenv("XKS_FUZZ_PIN", std::string(kPin).c_str(), 1);
    return d;
  }();
  return dir;
}

bool check_leaks = true;

bool leaks(std::string_view text) {
  if (!check_leaks) return false;
  return text.find(kSecret) != std::string_view::npos || text.find(kPin) != std::string_view::npos;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);  // NOLINT
  // libFuzzer learns the secret's bytes from the comparisons below and writes
  // them into the file itself (as a key, say); quoting the operator's own text
  // back is no leak, so such inputs are not checked for leaks
  // (regressions/fuzz_config/pin-as-setting-name).
  check_leaks = true;
  if (leaks(input)) check_leaks = false;
  const fs::path file = workdir() / "config.yaml";
  put(file, input, 0600);
  try {
    const xks::config::Config c = xks::config::load_config(file);
    if (leaks(xks::config::describe_redacted(c))) std::abort();
    for (const auto& w : xks::config::config_warnings(c)) {
      if (leaks(w)) std::abort();
    }
  } catch (const xks::config::ConfigError& e) {
    const std::string_view msg = e.what();
    if (msg.empty() || msg.find('\n') != std::string_view::npos || leaks(msg)) {
      std::fprintf(stderr, "bad ConfigError message: %s\n", e.what());
      std::abort();
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "load_config threw something other than ConfigError: %s\n", e.what());
    std::abort();
  }
  return 0;
}
