// The key version an Encrypt or Decrypt used, recorded after the request: the
// version metrics an operator watches before retiring a version, and the
// once-per-key log line that shows a migration from another proxy progressing.
#pragma once

#include <string_view>

#include "xks/api/service.hpp"
#include "xks/app/proxy_metrics.hpp"
#include "xks/config/config.hpp"

namespace xks::app {

// Does nothing when no version was chosen (e.g. refused before the HSM job).
void record_key_version_use(ProxyMetrics& metrics, std::size_t metrics_keystore,
                            std::string_view keystore, const config::KeyEntry& key,
                            const api::KeyVersionUse& use, api::KeyUse op, bool ok,
                            std::string_view kms_request_id);

}  // namespace xks::app
