// xks-proxy: the daemon's entry point (CLI only; the work is in xks::app).
#include <cstring>
#include <iostream>
#include <string_view>

#include "xks/api/version.hpp"
#include "xks/app/app.hpp"

namespace {

constexpr const char* kDefaultConfig = "/etc/xks-proxy/xks-proxy.yaml";

void usage(std::ostream& out) {
  out << "usage: xks-proxy [--config FILE] [--check-config] [--version]\n"
         "  --config FILE    configuration (YAML or JSON), default "
      << kDefaultConfig
      << "\n"
         "  --check-config   validate the configuration and TLS material, then exit\n"
         "  --version        print the version\n"
         "Signals: SIGTERM/SIGINT drain and stop, SIGHUP reloads the configuration.\n";
}

}  // namespace

int main(int argc, char** argv) {
  std::string config = kDefaultConfig;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if ((arg == "--config" || arg == "-c") && i + 1 < argc) {
      config = argv[++i];
    } else if (arg.starts_with("--config=")) {
      config = std::string(arg.substr(std::strlen("--config=")));
    } else if (arg == "--check-config") {
      check_only = true;
    } else if (arg == "--version") {
      std::cout << "xks-proxy " << xks::api::kVersion << "\n";
      return 0;
    } else if (arg == "--help" || arg == "-h") {
      usage(std::cout);
      return 0;
    } else {
      std::cerr << "xks-proxy: unknown argument '" << arg << "'\n";
      usage(std::cerr);
      return 2;
    }
  }
  return check_only ? xks::app::check_config(config) : xks::app::run_daemon(config);
}
