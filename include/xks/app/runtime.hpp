// Everything a request needs, built once per (re)load and then read-only:
// the configuration, its routing and lookup tables, per-key-store quotas and
// metric indices, and the HSM engine. Requests take a snapshot (shared_ptr) at
// arrival and HSM jobs hold it, so a reload never changes the rules, or frees
// the backend, under a request in flight.
#pragma once

#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "xks/api/service.hpp"
#include "xks/config/config.hpp"
#include "xks/core/token_bucket.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/http/router.hpp"

namespace xks::app {

// The HSM backend and the operations over it. Shared by successive Runtimes
// while the hsm settings do not change; rebuilt (new sessions, new login) when
// they do or when an HSM is unavailable at reload.
struct Engine {
  explicit Engine(std::unique_ptr<hsm::KeyBackend> b)
      : backend(std::move(b)), service(*backend) {}
  std::unique_ptr<hsm::KeyBackend> backend;
  api::XksService service;
};

struct Runtime {
  struct KeyStoreIndex {
    // Views into `config`, which the Runtime owns.
    std::unordered_map<std::string_view, const config::KeyEntry*> keys;
    std::unordered_map<std::string_view, const config::Credential*> credentials;
    std::shared_ptr<core::TokenBucket> quota;  // null: no quota
    std::size_t metrics_index = 0;             // ProxyMetrics key store index
  };

  Runtime(std::shared_ptr<const config::Config> cfg, std::shared_ptr<Engine> eng,
          const std::vector<std::size_t>& metrics_indices);

  std::shared_ptr<const config::Config> config;
  std::shared_ptr<Engine> engine;
  http::Router router;
  std::vector<KeyStoreIndex> keystores;  // same order as config->keystores
};

// The current Runtime; swapped atomically by a reload.
class RuntimeHolder {
 public:
  explicit RuntimeHolder(std::shared_ptr<const Runtime> rt) : rt_(std::move(rt)) {}
  std::shared_ptr<const Runtime> get() const {
    std::lock_guard lock(mutex_);
    return rt_;
  }
  void set(std::shared_ptr<const Runtime> rt) {
    std::lock_guard lock(mutex_);
    rt_ = std::move(rt);
  }

 private:
  mutable std::mutex mutex_;
  std::shared_ptr<const Runtime> rt_;
};

}  // namespace xks::app
