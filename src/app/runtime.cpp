#include "xks/app/runtime.hpp"

namespace xks::app {

Runtime::Runtime(std::shared_ptr<const config::Config> cfg, std::shared_ptr<Engine> eng,
                 const std::vector<std::size_t>& metrics_indices,
                 std::shared_ptr<boost::asio::ssl::context> tls)
    : config(std::move(cfg)),
      engine(std::move(eng)),
      router(config->uri_paths()),
      connection(std::make_shared<const net::ConnectionSettings>(
          net::ConnectionSettings{config->server.limits, std::move(tls)})) {
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

std::shared_ptr<const Runtime> Runtime::with_tls(const Runtime& from,
                                                 std::shared_ptr<boost::asio::ssl::context> tls) {
  auto next = std::make_shared<Runtime>(from);
  next->connection = std::make_shared<const net::ConnectionSettings>(
      net::ConnectionSettings{from.connection->limits, std::move(tls)});
  return next;
}

}  // namespace xks::app
