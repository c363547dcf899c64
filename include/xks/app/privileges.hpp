// Least privilege: the daemon binds its port as root if it
// must, then becomes an unprivileged user for good; it refuses to run as root
// unless the configuration says so explicitly. See docs/security.md.
#pragma once

#include <filesystem>

#include "xks/config/config.hpp"

namespace xks::app {

// Throws std::runtime_error (one line naming the setting and the fix) when the
// process runs as root (effective uid 0) while server.user is empty and
// server.allow_root is false. Call it right after loading the configuration,
// before opening the HSM. `config_file` (if given) prefixes the message.
void check_root_policy(const config::ServerConfig& server,
                       const std::filesystem::path& config_file = {});

// After the listener is bound: when server.user is set, switches the whole
// process (every thread, via glibc's setxid broadcast) to that user, to
// server.group or the user's primary group, and to the user's supplementary
// groups (initgroups, as systemd's User= does), then verifies that root cannot
// be regained. Already running as that user: nothing to do. Running as another
// non-root user: error (only root can switch). No server.user: nothing to do.
// Throws std::runtime_error with a one-line message naming the setting.
void drop_privileges(const config::ServerConfig& server,
                     const std::filesystem::path& config_file = {});

}  // namespace xks::app
