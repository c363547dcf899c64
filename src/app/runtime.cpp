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

Runtime::Runtime(std::shared_ptr<const config::Config> cfg)
    : config(std::move(cfg)), router(uri_paths(*config)) {
  keystores.resize(config->keystores.size());
  for (std::size_t i = 0; i < config->keystores.size(); ++i) {
    const auto& ks = config->keystores[i];
    for (const auto& key : ks.keys) keystores[i].keys.emplace(key.id, &key);
    for (const auto& cred : ks.credentials) {
      keystores[i].credentials.emplace(cred.access_key_id, &cred);
    }
  }
}

}  // namespace xks::app
