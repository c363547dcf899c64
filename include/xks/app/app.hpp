// The composition root: configuration -> HSM backend -> worker pool -> health
// monitor -> handler -> server, signal handling (SIGTERM/SIGINT drain and stop,
// SIGHUP reload), systemd notifications, and an ordered shutdown.
#pragma once

#include <filesystem>

namespace xks::app {

// Process exit codes (sysexits.h), so that a supervisor can tell a
// configuration problem (do not restart in a loop: an HSM locks a user out after
// a few wrong PINs) from a transient one.
inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUnavailable = 69;  // EX_UNAVAILABLE: HSM unreachable
inline constexpr int kExitConfig = 78;       // EX_CONFIG: fix the configuration

// Runs the daemon until SIGTERM/SIGINT. Returns the process exit code; prints a
// one-line reason to stderr on a startup failure.
int run_daemon(const std::filesystem::path& config_file);

// Loads and validates the configuration (and TLS material), prints the result.
int check_config(const std::filesystem::path& config_file);

}  // namespace xks::app
