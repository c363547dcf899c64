// xksctl keys create|list: the HSM keys behind the key stores, created with safe
// attributes and audited for unsafe ones.
#include <openssl/rand.h>

#include <cstdio>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/crypto/hex.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/rotate.hpp"
#include "xks/tools/token.hpp"

namespace xks::tools {

namespace {

constexpr const char* kKeysHelp =
    "usage: xksctl keys create --config FILE [--hsm NAME] --label LABEL [--usage encrypt,decrypt] "
    "[--id HEX]\n"
    "       xksctl keys list   --config FILE [--hsm NAME]\n"
    "       xksctl keys rotate --config FILE --key ID [--keystore URI_PATH] [--label LABEL] [--hsm "
    "NAME] [--write]\n"
    "\n"
    "create  generates an AES-256 token key (CKM_AES_KEY_GEN) that is private, sensitive,\n"
    "        not extractable, cannot wrap/unwrap/sign/verify/derive, with the usages given\n"
    "        (default encrypt,decrypt: a KMS key needs both) and CKA_ID = --id or 16 random\n"
    "        bytes. Refuses a label that already exists. Logs in once with hsm.pin.\n"
    "list    lists every secret key on the token (label, id, type, usages, sensitive,\n"
    "        extractable, which key store uses it) and prints a WARN line for each unsafe\n"
    "        attribute of a key in use, each configured key that is missing, and each\n"
    "        configured key without both ENCRYPT and DECRYPT.\n"
    "rotate  adds a version to external key ID: creates its HSM key as create does (encrypt,\n"
    "        decrypt), label LABEL (default <current label>-v<N>), and prints the configuration\n"
    "        change that lists it under versions and makes it current; --write makes the change\n"
    "        (the old file is kept as FILE.<UTC time>.bak). The edited file is loaded and checked\n"
    "        before the key is created. Reload the proxy (SIGHUP) to start using it.\n"
    "  --hsm NAME   the configured HSM (hsm.name) to use; default: the first (create, rotate) or "
    "all (list)\n";

const config::HsmConfig& pick_hsm(const config::Config& cfg,
                                  const std::optional<std::string>& name) {
  if (!name) return cfg.hsms.front();
  std::string known;
  for (const auto& h : cfg.hsms) {
    if (h.name == *name) return h;
    known += (known.empty() ? "" : ", ") + h.name;
  }
  throw UsageError("--hsm " + *name + " is not a configured HSM (configured: " + known + ")");
}

// Who uses a label: "/demo/kms/xks/v1 key demo-aes-key", "health key of hsm 'x'".
std::map<std::string, std::vector<std::string>> users_by_label(const config::Config& cfg,
                                                               const config::HsmConfig& hsm) {
  std::map<std::string, std::vector<std::string>> out;
  for (const auto& ks : cfg.keystores) {
    for (const auto& k : ks.keys) {
      for (const auto& v : k.versions) {
        std::string who = ks.uri_path + " key " + k.id;
        if (k.versions_listed) {
          who += " v" + std::to_string(v.number) +
                 (v.number == k.current ? " (current)"
                  : !v.enabled          ? " (retired)"
                  : v.decrypt_only      ? " (decrypt_only)"
                                        : "");
        }
        out[v.label].push_back(who + (k.enabled ? "" : " (disabled)"));
      }
    }
  }
  if (!hsm.health_key.empty()) out[hsm.health_key].push_back("health key of hsm " + hsm.name);
  return out;
}

int keys_create(const Args& args) {
  const config::Config cfg =
      config::load_config(args.require("--config", "the proxy's configuration file"));
  const config::HsmConfig& hsm = pick_hsm(cfg, args.get("--hsm"));
  const std::string label = args.require("--label", "the new key's CKA_LABEL");
  if (label.size() > 128) throw UsageError("--label is longer than 128 characters");
  bool encrypt = false, decrypt = false;
  std::string usage = args.get_or("--usage", "encrypt,decrypt");
  for (std::size_t start = 0; start <= usage.size();) {
    auto end = usage.find(',', start);
    if (end == std::string::npos) end = usage.size();
    const std::string u = usage.substr(start, end - start);
    if (u == "encrypt") {
      encrypt = true;
    } else if (u == "decrypt") {
      decrypt = true;
    } else if (!(u == "none" && usage == "none")) {
      throw UsageError("--usage '" + usage + "': use encrypt, decrypt, encrypt,decrypt or none");
    }
    start = end + 1;
  }
  std::vector<std::uint8_t> id;
  if (const auto hex = args.get("--id")) {
    auto decoded = crypto::hex_decode(*hex);
    if (!decoded || decoded->empty())
      throw UsageError("--id '" + *hex + "' is not hex (e.g. 0a1b2c)");
    id.assign(decoded->begin(), decoded->end());
  } else {
    id.resize(16);
    if (RAND_bytes(id.data(), static_cast<int>(id.size())) != 1)
      throw std::runtime_error("RAND_bytes failed");
  }

  create_key(hsm, label, id, encrypt, decrypt);
  if (!(encrypt && decrypt)) {
    std::printf(
        "WARN  key '%s' lacks %s: KMS CreateKey on it fails "
        "(XksKeyInvalidConfigurationException)\n",
        label.c_str(),
        !encrypt && !decrypt ? "ENCRYPT and DECRYPT"
        : !encrypt           ? "ENCRYPT"
                             : "DECRYPT");
  }
  return 0;
}

int keys_list(const Args& args) {
  const config::Config cfg =
      config::load_config(args.require("--config", "the proxy's configuration file"));
  std::vector<const config::HsmConfig*> hsms;
  if (const auto name = args.get("--hsm")) {
    hsms.push_back(&pick_hsm(cfg, name));
  } else {
    for (const auto& h : cfg.hsms) hsms.push_back(&h);
  }
  int warnings = 0;
  for (const config::HsmConfig* hsm : hsms) {
    ToolToken token(*hsm);
    token.open_and_login(/*read_write=*/false);
    const auto users = users_by_label(cfg, *hsm);
    std::map<std::string, config::KeyEntry::Usage> expected;
    for (const auto& ks : cfg.keystores) {
      for (const auto& k : ks.keys) {
        if (!k.expect_usage) continue;
        for (const auto& v : k.versions) expected.emplace(v.label, *k.expect_usage);
      }
    }
    std::vector<TokenKey> keys = token.secret_keys();
    std::printf("hsm %s: %s, %zu secret key(s)\n", hsm->name.c_str(),
                token.token_description().c_str(), keys.size());
    std::printf("  %-24s %-34s %-10s %-18s %-9s %-11s %s\n", "LABEL", "ID", "TYPE", "USAGES",
                "SENSITIVE", "EXTRACTABLE", "USED BY");
    std::vector<std::string> warns;
    std::map<std::string, int> seen;
    for (const auto& k : keys) {
      ++seen[k.label];
      const auto u = users.find(k.label);
      std::string used;
      if (u != users.end()) {
        for (const auto& s : u->second) used += (used.empty() ? "" : "; ") + s;
      }
      std::printf("  %-24s %-34s %-10s %-18s %-9s %-11s %s\n", k.label.c_str(),
                  k.id_hex.empty() ? "-" : k.id_hex.c_str(), k.type_name().c_str(),
                  k.usages().c_str(), k.sensitive ? "yes" : "no", k.extractable ? "yes" : "no",
                  used.empty() ? "-" : used.c_str());
      if (u == users.end()) continue;
      for (const auto& why : k.unsafe()) {
        warns.push_back("key '" + k.label + "' (" + used + ") is " + why);
      }
      // A key store key whose expect_usage matches the HSM is restricted on purpose.
      const auto ex = expected.find(k.label);
      const bool as_expected = ex != expected.end() && ex->second.encrypt == k.encrypt &&
                               ex->second.decrypt == k.decrypt;
      if ((!k.encrypt || !k.decrypt) && !as_expected) {
        warns.push_back(
            "key '" + k.label + "' (" + used + ") lacks " +
            (!k.encrypt && !k.decrypt ? "ENCRYPT and DECRYPT"
                                      : (!k.encrypt ? "ENCRYPT" : "DECRYPT")) +
            ": a key store key needs both for KMS CreateKey (XksKeyInvalidConfigurationException)");
      }
    }
    for (const auto& [label, who] : users) {
      const int n = seen.count(label) ? seen[label] : 0;
      std::string used;
      for (const auto& s : who) used += (used.empty() ? "" : "; ") + s;
      if (n == 0) {
        warns.push_back(
            "key label '" + label + "' (" + used + ") is not on this token: " +
            "KMS sees XksKeyNotFoundException; create it with xksctl keys create --label " + label);
      } else if (n > 1) {
        warns.push_back(
            "key label '" + label + "' (" + used + ") names " + std::to_string(n) +
            " keys: the proxy cannot tell which to use; delete or relabel the extra ones");
      }
    }
    for (const auto& w : warns) std::printf("WARN  hsm %s: %s\n", hsm->name.c_str(), w.c_str());
    warnings += static_cast<int>(warns.size());
  }
  if (warnings == 0) std::printf("no warnings\n");
  return 0;
}

}  // namespace

int keys_main(int argc, char** argv) {
  if (argc < 3 || std::string_view(argv[2]) == "--help" || std::string_view(argv[2]) == "-h") {
    std::fputs(kKeysHelp, stdout);
    return argc < 3 ? 2 : 0;
  }
  const std::string_view sub = argv[2];
  if (sub == "create") {
    const Args args(argc, argv, 3, {"--config", "--hsm", "--label", "--usage", "--id"}, {},
                    "keys create");
    if (args.help()) return std::fputs(kKeysHelp, stdout), 0;
    return keys_create(args);
  }
  if (sub == "rotate") {
    const Args args(argc, argv, 3, {"--config", "--key", "--keystore", "--label", "--hsm"},
                    {"--write"}, "keys rotate");
    if (args.help()) return std::fputs(kKeysHelp, stdout), 0;
    return keys_rotate(args);
  }
  if (sub == "list") {
    const Args args(argc, argv, 3, {"--config", "--hsm"}, {}, "keys list");
    if (args.help()) return std::fputs(kKeysHelp, stdout), 0;
    return keys_list(args);
  }
  throw UsageError("unknown keys subcommand '" + std::string(sub) +
                   "'; use keys create, keys list or keys rotate");
}

}  // namespace xks::tools
