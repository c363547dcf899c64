// Reads PINs and SigV4 secrets from their SecretSource. Internal to the config
// module: load_config() is the only caller.
#pragma once

#include <filesystem>
#include <string>

#include "xks/config/config.hpp"
#include "xks/core/secure.hpp"

namespace xks::config::detail {

// Largest secret file accepted. Real secrets are < 300 bytes; a bigger file is
// almost certainly the wrong path (a certificate, a log), and refusing it keeps
// us from copying unrelated data into memory we then keep for the process life.
inline constexpr std::size_t kMaxSecretFileBytes = 4096;

// Returns the secret (first line of the file, line ending stripped; or the
// variable's value). Throws ConfigError naming `setting` in `config_file`. The
// secret never appears in an error message.
SecureString read_secret(const SecretSource& source, const std::filesystem::path& config_file,
                         const std::string& setting);

}  // namespace xks::config::detail
