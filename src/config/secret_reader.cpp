#include "secret_reader.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

namespace xks::config::detail {

namespace {

// Closes the descriptor on every exit path, including a throw.
class Fd {
 public:
  explicit Fd(int fd) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);  // read-only: a close error cannot lose data
  }
  int get() const noexcept { return fd_; }

 private:
  int fd_;
};

// "0644": the permission bits as chmod takes them.
std::string octal_mode(mode_t mode) {
  const unsigned perms = static_cast<unsigned>(mode) & 0777U;
  std::string out = "0";
  for (const unsigned shift : {6U, 3U, 0U}) out += static_cast<char>('0' + ((perms >> shift) & 7U));
  return out;
}

SecureString read_file_secret(const SecretSource& source, const std::filesystem::path& config_file,
                              const std::string& setting) {
  const std::string& path = source.ref;
  const auto fail = [&](const std::string& problem, const std::string& fix) {
    throw ConfigError(config_file, setting, problem, fix);
  };
  // O_NONBLOCK: opening a FIFO placed at the path must not hang the startup;
  // it is refused below as "not a regular file".
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK));
  if (fd.get() < 0) {
    const int err = errno;
    if (err == ENOENT || err == ENOTDIR) {
      fail("secret file " + path + " does not exist",
           "create it (one line, mode 0600, owned by the proxy's user) or correct the path");
    }
    if (err == EACCES) {
      fail("secret file " + path + " cannot be read by uid " + std::to_string(::geteuid()),
           "make it readable by the proxy's user only: chown <proxy user> " + path +
               " && chmod 600 " + path);
    }
    fail("cannot open secret file " + path + ": " + std::strerror(err),
         "check the path and its permissions");
  }
  // fstat on the open descriptor, not stat on the path: what we check is
  // exactly what we read.
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) {
    fail("cannot stat secret file " + path + ": " + std::strerror(errno),
         "check the path and its permissions");
  }
  if (!S_ISREG(st.st_mode)) {
    fail("secret file " + path + " is not a regular file",
         "point it at a file that holds only the secret");
  }
  if ((st.st_mode & 077) != 0 && !source.allow_insecure_permissions) {
    fail("secret file " + path + " has mode " + octal_mode(st.st_mode) +
             ", so group or others can read or change it",
         "chmod 600 " + path +
             " (or, if a mount cannot offer that, add allow_insecure_permissions: true next to "
             "file:)");
  }
  if (static_cast<std::uintmax_t>(st.st_size) > kMaxSecretFileBytes) {
    fail("secret file " + path + " is " + std::to_string(st.st_size) +
             " bytes; a secret file holds one short line",
         "point it at the file that holds only the secret");
  }

  // A wiping buffer, never a std::string: the bytes that surround the secret
  // (a second line, the newline) are wiped with it.
  std::vector<char, WipingAllocator<char>> buf(kMaxSecretFileBytes + 1);
  std::size_t used = 0;
  while (used < buf.size()) {
    const ssize_t n = ::read(fd.get(), buf.data() + used, buf.size() - used);
    if (n < 0) {
      if (errno == EINTR) continue;
      fail("cannot read secret file " + path + ": " + std::strerror(errno),
           "check the file and its permissions");
    }
    if (n == 0) break;
    used += static_cast<std::size_t>(n);
  }
  if (used > kMaxSecretFileBytes) {
    fail("secret file " + path + " is larger than " + std::to_string(kMaxSecretFileBytes) +
             " bytes; a secret file holds one short line",
         "point it at the file that holds only the secret");
  }
  std::string_view content(buf.data(), used);
  if (const auto nl = content.find('\n'); nl != std::string_view::npos) {
    content = content.substr(0, nl);
  }
  if (!content.empty() && content.back() == '\r') content.remove_suffix(1);
  if (content.empty()) {
    fail("secret file " + path + " is empty (or its first line is)",
         "write the secret on the first line of the file");
  }
  return SecureString(content);
}

SecureString read_env_secret(const SecretSource& source, const std::filesystem::path& config_file,
                             const std::string& setting) {
  // getenv's buffer belongs to the environment; we copy straight into a
  // SecureString so that no std::string copy is left behind.
  const char* value = std::getenv(source.ref.c_str());
  if (value == nullptr) {
    throw ConfigError(config_file, setting, "environment variable " + source.ref + " is not set",
                      "export " + source.ref +
                          " in the proxy's environment (systemd: EnvironmentFile= or "
                          "LoadCredential=; containers: a secret mounted as env)");
  }
  if (*value == '\0') {
    throw ConfigError(config_file, setting, "environment variable " + source.ref + " is empty",
                      "set " + source.ref + " to the secret");
  }
  return SecureString(std::string_view(value));
}

}  // namespace

SecureString read_secret(const SecretSource& source, const std::filesystem::path& config_file,
                         const std::string& setting) {
  return source.kind == SecretSource::Kind::File ? read_file_secret(source, config_file, setting)
                                                 : read_env_secret(source, config_file, setting);
}

}  // namespace xks::config::detail
