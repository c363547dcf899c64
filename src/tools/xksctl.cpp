// xksctl: the operator's tool for xks-proxy (docs/xksctl.md).
#include <cstdio>
#include <exception>
#include <string_view>

#include "xks/api/version.hpp"
#include "xks/config/config.hpp"
#include "xks/policy/cli.hpp"
#include "xks/tools/cli.hpp"

namespace {

constexpr std::string_view kUsage =
    "usage: xksctl <command> [options]   (xksctl <command> --help for details)\n"
    "\n"
    "commands:\n"
    "  credentials new     print a fresh SigV4 credential for a key store\n"
    "  kms-config          write the KMS console's proxy configuration file\n"
    "  keys create|list|rotate\n"
    "                      create an AES-256 key on the HSM; list and audit its keys;\n"
    "                      add a key version and make it current\n"
    "  call health|metadata|encrypt|decrypt\n"
    "                      send one signed XKS request and time it\n"
    "  doctor              check configuration, TLS, credentials, HSM and the proxy end to end\n"
    "  bench               load-generate signed requests; requests/s and latency percentiles\n"
    "  policy check|test   validate a secondary-authorization policy; evaluate it on a request\n"
    "  version             print the version\n";

}  // namespace

int main(int argc, char** argv) {
  using namespace xks::tools;
  if (argc < 2 || std::string_view(argv[1]) == "--help" || std::string_view(argv[1]) == "-h" ||
      std::string_view(argv[1]) == "help") {
    std::fputs(kUsage.data(), argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string_view command = argv[1];
  try {
    if (command == "credentials") return credentials_main(argc, argv);
    if (command == "kms-config") return kms_config_main(argc, argv);
    if (command == "keys") return keys_main(argc, argv);
    if (command == "call") return call_main(argc, argv);
    if (command == "doctor") return doctor_main(argc, argv);
    if (command == "bench") return bench_main(argc, argv);
    if (command == "policy") {
      // The policy commands take argv[0] = their own name ("check"/"test").
      const std::string_view sub = argc > 2 ? argv[2] : "";
      if (sub == "check") return xks::policy::policy_check_main(argc - 2, argv + 2);
      if (sub == "test") return xks::policy::policy_test_main(argc - 2, argv + 2);
      throw UsageError(
          "policy needs a subcommand: policy check <policy.yaml> | "
          "policy test <policy.yaml> <request.json>");
    }
    if (command == "version" || command == "--version") {
      std::printf("xksctl %s\n", xks::api::kVersion.data());
      return 0;
    }
    throw UsageError("unknown command '" + std::string(command) + "'; see xksctl --help");
  } catch (const UsageError& e) {
    std::fprintf(stderr, "xksctl: %s\n", e.what());
    return 2;
  } catch (const xks::config::ConfigError& e) {
    // Already one line naming the file, the setting and the fix.
    std::fprintf(stderr, "xksctl: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "xksctl: %s\n", e.what());
    return 1;
  }
}
