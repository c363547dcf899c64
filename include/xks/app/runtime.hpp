// Everything a request needs from the configuration, built once per
// (re)load and then read-only. Requests take a snapshot (shared_ptr) at
// arrival, so a reload never changes the rules under a request in flight.
#pragma once

#include <memory>
#include <mutex>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/http/router.hpp"

namespace xks::app {

struct Runtime {
  struct KeyStoreIndex {
    // Views into `config`, which the Runtime owns.
    std::unordered_map<std::string_view, const config::KeyEntry*> keys;
    std::unordered_map<std::string_view, const config::Credential*> credentials;
  };

  explicit Runtime(std::shared_ptr<const config::Config> cfg);

  std::shared_ptr<const config::Config> config;
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
