// Key versions: lookups on a loaded KeyEntry and the reload rule that keeps
// every ciphertext decryptable (check_version_continuity).
#include <algorithm>
#include <string>

#include "xks/config/config.hpp"

namespace xks::config {

std::string_view to_string(LegacyLayout layout) noexcept {
  switch (layout) {
    case LegacyLayout::AwsSample: return "aws-sample";
    case LegacyLayout::SpecNoMetadata: return "spec-no-metadata";
  }
  return "unknown";
}

const KeyVersion* KeyEntry::version(std::uint32_t n) const noexcept {
  const auto it =
      std::lower_bound(versions.begin(), versions.end(), n,
                       [](const KeyVersion& v, std::uint32_t x) { return v.number < x; });
  return it != versions.end() && it->number == n ? &*it : nullptr;
}

namespace {

const KeyEntry* find_key(const KeyStore& ks, const std::string& id) {
  for (const auto& k : ks.keys) {
    if (k.id == id) return &k;
  }
  return nullptr;
}

Error refuse(const Config& after, const KeyStore& ks, const KeyEntry& key, std::uint32_t version,
             const std::string& problem, const std::string& setting, const std::string& fix) {
  return make_error(ErrorName::ValidationException,
                    after.source.string() + ": keystores[" + ks.uri_path + "].keys[" + key.id +
                        "]." + setting + ": version " + std::to_string(version) + " of key '" +
                        key.id + "' " + problem + "; fix: " + fix);
}

}  // namespace

Result<void> check_version_continuity(const Config& before, const Config& after) {
  for (const auto& ks : after.keystores) {
    const KeyStore* old_ks = before.find_keystore(ks.uri_path);
    if (old_ks == nullptr) continue;
    for (const auto& key : ks.keys) {
      const KeyEntry* old = find_key(*old_ks, key.id);
      if (old == nullptr) continue;
      for (const auto& was : old->versions) {
        const KeyVersion* now = key.version(was.number);
        const bool was_current = was.number == old->current;
        if (now == nullptr) {
          if (was_current) {
            return refuse(after, ks, key, was.number,
                          "is the current version and this reload removes it: every ciphertext "
                          "written since it became current would become undecryptable",
                          "versions",
                          "keep it listed; to rotate, add a new version and make it current "
                          "(xksctl keys rotate)");
          }
          if (was.enabled) {
            return refuse(after, ks, key, was.number,
                          "is enabled and this reload removes it: its ciphertexts would become "
                          "undecryptable at once",
                          "versions",
                          "retire it first with enabled: false in one reload, check that nobody "
                          "needs it (xks_proxy_key_version_operations_total), remove it later");
          }
          continue;
        }
        if (now->label != was.label) {
          return refuse(after, ks, key, was.number,
                        "changes its label from '" + was.label + "' to '" + now->label +
                            "': its ciphertexts were made with the old HSM key",
                        "versions[].label",
                        "keep the label; a new HSM key is a new version number");
        }
        if (was_current && !now->enabled) {
          return refuse(after, ks, key, was.number,
                        "was current and this reload retires it (enabled: false) at once: "
                        "ciphertexts written moments ago would be refused",
                        "versions[].enabled",
                        "make another version current in one reload and retire this one in a "
                        "later reload, once nothing decrypts it any more");
        }
      }
    }
  }
  return {};
}

}  // namespace xks::config
