// xksctl credentials new, xksctl kms-config: the SigV4 credential a key store
// shares with KMS, and the file the KMS console imports it from.
#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>

#include "xks/config/config.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/util.hpp"

namespace xks::tools {

namespace {

constexpr const char* kCredentialsHelp =
    "usage: xksctl credentials new [--json] [--secret-file FILE]\n"
    "\n"
    "Prints a fresh SigV4 credential for a key store: an access key id (20 of A-Z2-7)\n"
    "and a secret access key (48 of A-Za-z0-9+/, from OpenSSL's RAND_bytes).\n"
    "  --json               print {\"access_key_id\": ..., \"secret\": ...}\n"
    "  --secret-file FILE   write the secret to FILE (mode 0600, must not exist) and\n"
    "                       print only the access key id; reference it from the config as\n"
    "                       secret: { file: FILE }\n";

constexpr const char* kKmsConfigHelp =
    "usage: xksctl kms-config --config FILE --keystore URI_PATH [--access-key-id ID] [--out FILE]\n"
    "\n"
    "Writes the proxy configuration file the KMS console imports when you create or\n"
    "update an external key store: XksProxyUriPath and the credential (the key store's\n"
    "first one unless --access-key-id picks another). It holds the raw secret: --out\n"
    "writes it with mode 0600; without --out it goes to standard output.\n";

}  // namespace

int credentials_main(int argc, char** argv) {
  if (argc < 3 || std::string_view(argv[2]) == "--help" || std::string_view(argv[2]) == "-h") {
    std::fputs(kCredentialsHelp, stdout);
    return argc < 3 ? 2 : 0;
  }
  if (std::string_view(argv[2]) != "new") {
    throw UsageError("unknown credentials subcommand '" + std::string(argv[2]) +
                     "'; the only one is: credentials new");
  }
  const Args args(argc, argv, 3, {"--secret-file"}, {"--json"}, "credentials new");
  if (args.help()) {
    std::fputs(kCredentialsHelp, stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("unexpected argument '" + args.positional()[0] + "'");

  const std::string id = new_access_key_id();
  const SecureString secret = new_secret();
  if (const auto file = args.get("--secret-file")) {
    std::string content(secret.view());
    content.push_back('\n');
    write_private_file(*file, content, /*exclusive=*/true);
    secure_wipe(content.data(), content.size());
    if (args.flag("--json")) {
      std::printf("{\"access_key_id\": \"%s\", \"secret_file\": %s}\n", id.c_str(),
                  json_quote(*file).c_str());
    } else {
      std::printf("access_key_id: %s\n", id.c_str());
    }
    return 0;
  }
  // The secret only ever goes to stdout: the operator asked for it.
  if (args.flag("--json")) {
    std::printf("{\"access_key_id\": \"%s\", \"secret\": \"%.*s\"}\n", id.c_str(),
                static_cast<int>(secret.size()), secret.view().data());
  } else {
    std::printf("access_key_id: %s\nsecret: %.*s\n", id.c_str(), static_cast<int>(secret.size()),
                secret.view().data());
  }
  return 0;
}

int kms_config_main(int argc, char** argv) {
  const Args args(argc, argv, 2, {"--config", "--keystore", "--access-key-id", "--out"}, {},
                  "kms-config");
  if (args.help()) {
    std::fputs(kKmsConfigHelp, stdout);
    return 0;
  }
  if (!args.positional().empty())
    throw UsageError("unexpected argument '" + args.positional()[0] + "'");
  const config::Config cfg =
      config::load_config(args.require("--config", "the proxy's configuration file"));
  const config::KeyStore& ks = pick_keystore(
      cfg, args.require("--keystore", "the key store's uri_path, e.g. /demo/kms/xks/v1"));
  const config::Credential* cred = &ks.credentials.front();
  if (const auto id = args.get("--access-key-id")) {
    cred = nullptr;
    for (const auto& c : ks.credentials) {
      if (c.access_key_id == *id) cred = &c;
    }
    if (cred == nullptr) {
      throw UsageError("--access-key-id " + *id + " is not a credential of key store " +
                       ks.uri_path);
    }
  }
  nlohmann::json j = {{"XksProxyUriPath", ks.uri_path},
                      {"XksProxyAuthenticationCredential",
                       {{"AccessKeyId", cred->access_key_id},
                        {"RawSecretAccessKey", std::string(cred->secret.view())}}}};
  std::string text = j.dump() + "\n";
  if (const auto out = args.get("--out")) {
    write_private_file(*out, text, /*exclusive=*/false);
    std::fprintf(stderr, "wrote %s (mode 0600) for key store %s, access key id %s\n", out->c_str(),
                 ks.uri_path.c_str(), cred->access_key_id.c_str());
  } else {
    std::fwrite(text.data(), 1, text.size(), stdout);
  }
  secure_wipe(text.data(), text.size());
  return 0;
}

}  // namespace xks::tools
