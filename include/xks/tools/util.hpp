// Helpers shared by the xksctl subcommands.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "xks/config/config.hpp"
#include "xks/core/secure.hpp"

namespace xks::tools {

// Access key id: 20-30 characters of A-Z 2-7; secret: 43-64 characters of
// A-Z a-z 0-9 + / = (spec, "Authentication"). Empty string if valid, else why not.
std::string access_key_id_problem(std::string_view id);
std::string secret_problem(std::string_view secret);

// A fresh, compliant pair from RAND_bytes: a 20-character id (the RFC 4648
// base32 alphabet is exactly A-Z 2-7) and a 48-character Base64 secret (288 bits).
std::string new_access_key_id();
SecureString new_secret();

// A random (version 4) UUID, as KMS's kmsRequestId looks.
std::string uuid4();

// Writes `content` to `path` with mode 0600 whatever the umask, so a secret is
// never readable by others even for an instant. exclusive: refuse an existing file.
void write_private_file(const std::filesystem::path& path, std::string_view content,
                        bool exclusive);

// Reads a whole file, or standard input for "-".
std::string read_file_or_stdin(const std::string& path);

// The key store named by --keystore (its uri_path), or the first one.
const config::KeyStore& pick_keystore(const config::Config& config, const std::string& uri_path);

std::string json_quote(std::string_view s);

}  // namespace xks::tools
