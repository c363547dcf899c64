#include "xks/app/key_versions.hpp"

#include <chrono>
#include <string>

#include "xks/obs/log.hpp"

namespace xks::app {

void record_key_version_use(ProxyMetrics& metrics, std::size_t metrics_keystore,
                            std::string_view keystore, const config::KeyEntry& key,
                            const api::KeyVersionUse& use, api::KeyUse op, bool ok,
                            std::string_view kms_request_id) {
  const std::uint32_t version = use.version.load(std::memory_order_relaxed);
  if (version == 0) return;
  metrics.record_key_version_use(metrics_keystore, key.id, version,
                                 op == api::KeyUse::Encrypt ? KeyOp::Encrypt : KeyOp::Decrypt, ok,
                                 std::chrono::system_clock::now());
  const auto legacy = use.legacy_layout();
  if (!ok || !legacy) return;
  if (metrics.record_legacy_decrypt(metrics_keystore, key.id, *legacy)) {
    obs::info("legacy_ciphertext_decrypted",
              {{"kmsRequestId", kms_request_id},
               {"keystore", keystore},
               {"keyId", key.id},
               {"layout", config::to_string(*legacy)},
               {"detail", "first " + std::string(config::to_string(*legacy)) +
                              " ciphertext of this key since start (version 1); "
                              "xks_proxy_legacy_decrypts_total counts them all"}});
  }
}

}  // namespace xks::app
