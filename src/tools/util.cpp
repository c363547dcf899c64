#include "xks/tools/util.hpp"
#include "xks/core/ascii.hpp"
#include "xks/core/json_text.hpp"

#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <stdexcept>

#include "xks/crypto/base64.hpp"
#include "xks/tools/cli.hpp"

namespace xks::tools {

namespace {

void random_bytes(std::uint8_t* out, std::size_t n) {
  if (RAND_bytes(out, static_cast<int>(n)) != 1) {
    throw std::runtime_error("OpenSSL RAND_bytes failed: the system has no usable entropy source");
  }
}

}  // namespace

std::string access_key_id_problem(std::string_view id) {
  if (id.size() < 20 || id.size() > 30) {
    return "is " + std::to_string(id.size()) + " characters, not 20-30";
  }
  for (const char c : id) {
    if (!((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7'))) {
      return "has characters other than A-Z 2-7";
    }
  }
  return {};
}

std::string secret_problem(std::string_view secret) {
  if (secret.size() < 43 || secret.size() > 64) {
    return "is " + std::to_string(secret.size()) + " characters, not 43-64";
  }
  for (const char c : secret) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '+' || c == '/' || c == '=';
    if (!ok) return "has characters other than A-Z a-z 0-9 + / =";
  }
  return {};
}

std::string new_access_key_id() {
  static constexpr char kBase32[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  std::array<std::uint8_t, 20> bytes{};
  random_bytes(bytes.data(), bytes.size());
  std::string id;
  // 256 is a multiple of 32: taking the low 5 bits keeps every character uniform.
  for (const std::uint8_t b : bytes) id.push_back(kBase32[b & 31U]);
  secure_wipe(bytes.data(), bytes.size());
  return id;
}

SecureString new_secret() {
  SecureBytes bytes(36);  // 36 bytes -> exactly 48 Base64 characters, no padding
  random_bytes(bytes.data(), bytes.size());
  std::string encoded = crypto::base64_encode(bytes);
  SecureString out(encoded);
  secure_wipe(encoded.data(), encoded.size());
  return out;
}

std::string uuid4() {
  std::array<std::uint8_t, 16> b{};
  random_bytes(b.data(), b.size());
  b[6] = static_cast<std::uint8_t>((b[6] & 0x0fU) | 0x40U);
  b[8] = static_cast<std::uint8_t>((b[8] & 0x3fU) | 0x80U);
  const char* const kHex = core::kHexLower;
  std::string out;
  for (std::size_t i = 0; i < b.size(); ++i) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out.push_back('-');
    out.push_back(kHex[b[i] >> 4]);
    out.push_back(kHex[b[i] & 0x0fU]);
  }
  return out;
}

void write_private_file(const std::filesystem::path& path, std::string_view content,
                        bool exclusive) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (exclusive ? O_EXCL : O_TRUNC);
  const int fd = ::open(path.c_str(), flags, 0600);
  if (fd < 0) {
    const int err = errno;
    if (err == EEXIST) {
      throw std::runtime_error(path.string() + " already exists; remove it or choose another path");
    }
    throw std::runtime_error("cannot create " + path.string() + ": " + std::strerror(err));
  }
  // An existing file keeps its old mode through O_TRUNC: force 0600 first.
  if (::fchmod(fd, 0600) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot chmod 0600 " + path.string() + ": " + std::strerror(errno));
  }
  std::size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = ::write(fd, content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      const int err = errno;
      ::close(fd);
      throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(err));
    }
    done += static_cast<std::size_t>(n);
  }
  if (::close(fd) != 0) {
    throw std::runtime_error("cannot write " + path.string() + ": " + std::strerror(errno));
  }
}

std::string read_file_or_stdin(const std::string& path) {
  std::ostringstream ss;
  if (path == "-") {
    ss << std::cin.rdbuf();
    return ss.str();
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  ss << in.rdbuf();
  return ss.str();
}

const config::KeyStore& pick_keystore(const config::Config& config, const std::string& uri_path) {
  if (uri_path.empty()) return config.keystores.front();
  if (const auto* ks = config.find_keystore(uri_path)) return *ks;
  std::string known;
  for (const auto& ks : config.keystores) known += (known.empty() ? "" : ", ") + ks.uri_path;
  throw UsageError("--keystore " + uri_path + " is not a key store of " + config.source.string() +
                   " (it has: " + known + ")");
}

std::string json_quote(std::string_view s) {
  std::string out;
  core::append_json_string(out, s);
  return out;
}

}  // namespace xks::tools
