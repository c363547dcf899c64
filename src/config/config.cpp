#include "xks/config/config.hpp"

namespace xks::config {

namespace {

// what() goes to a single log line and to the terminal of whoever runs
// `xks-proxy --check-config`: a newline or escape sequence from a value in the
// file must not break the line or the terminal.
std::string one_line(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    out.push_back(u < 0x20 || u == 0x7f ? ' ' : c);
  }
  return out;
}

std::string format_error(const std::filesystem::path& file, const std::string& setting,
                         const std::string& problem, const std::string& fix) {
  std::string msg = file.string();
  msg += ": ";
  msg += setting;
  msg += ": ";
  msg += problem;
  if (!fix.empty()) {
    msg += "; fix: ";
    msg += fix;
  }
  return one_line(msg);
}

}  // namespace

ConfigError::ConfigError(const std::filesystem::path& file, const std::string& setting,
                         const std::string& problem, const std::string& fix)
    : std::runtime_error(format_error(file, setting, problem, fix)), setting_(setting) {}

std::string SecretSource::describe() const { return (kind == Kind::File ? "file " : "env ") + ref; }

std::vector<std::string> Config::uri_paths() const {
  std::vector<std::string> paths;
  paths.reserve(keystores.size());
  for (const auto& ks : keystores) paths.push_back(ks.uri_path);
  return paths;
}

const KeyStore* Config::find_keystore(std::string_view uri_path) const noexcept {
  for (const auto& ks : keystores) {
    if (ks.uri_path == uri_path) return &ks;
  }
  return nullptr;
}

std::string_view to_string(IvMode mode) noexcept {
  switch (mode) {
    case IvMode::CallerRandom: return "caller_random";
    case IvMode::HsmIntoZeroBuffer: return "hsm_into_zero_buffer";
    case IvMode::HsmAppended: return "hsm_appended";
  }
  return "unknown";
}

std::string_view to_string(PinFormat format) noexcept {
  switch (format) {
    case PinFormat::Plain: return "plain";
    case PinFormat::UserPassword: return "user_password";
  }
  return "unknown";
}

}  // namespace xks::config
