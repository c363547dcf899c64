#include "xks/app/runtime.hpp"

namespace xks::app {
namespace {

std::vector<std::string> uri_paths(const config::Config& cfg) {
  std::vector<std::string> paths;
  paths.reserve(cfg.keystores.size());
  for (const auto& ks : cfg.keystores) paths.push_back(ks.uri_path);
  return paths;
}

}  // namespace

Runtime::Runtime(std::shared_ptr<const config::Config> cfg, std::shared_ptr<Engine> eng,
                 const std::vector<std::size_t>& metrics_indices)
    : config(std::move(cfg)), engine(std::move(eng)), router(uri_paths(*config)) {
  keystores.resize(config->keystores.size());
  for (std::size_t i = 0; i < config->keystores.size(); ++i) {
    const auto& ks = config->keystores[i];
    auto& index = keystores[i];
    for (const auto& key : ks.keys) index.keys.emplace(key.id, &key);
    for (const auto& cred : ks.credentials) index.credentials.emplace(cred.access_key_id, &cred);
    if (ks.quota_rate > 0) {
      index.quota = std::make_shared<core::TokenBucket>(ks.quota_rate, ks.quota_burst);
    }
    if (i < metrics_indices.size()) index.metrics_index = metrics_indices[i];
  }
}

}  // namespace xks::app
