// Everything a reload can change, built once per (re)load and then read-only:
// the configuration in force (health settings, deadlines and the rest), its
// routing and lookup tables, per-key-store quotas and metric indices, the HSM
// engine, and what new connections get (limits, TLS context). One holder keeps
// the current Runtime. Requests take a snapshot (shared_ptr) at arrival and HSM
// jobs and connections hold it, so a reload never changes the rules, or frees
// the backend, under a request in flight.
#pragma once

#include <atomic>
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
#include "xks/net/server.hpp"

namespace xks::app {

// The HSM backend and the operations over it. Shared by successive Runtimes
// while the hsm settings do not change; rebuilt (new sessions, new login) when
// they do or when an HSM is unavailable at reload.
struct Engine {
  explicit Engine(std::unique_ptr<hsm::KeyBackend> b) : backend(std::move(b)), service(*backend) {}
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

  // `tls` null: plain HTTP (tls.enabled: false).
  Runtime(std::shared_ptr<const config::Config> cfg, std::shared_ptr<Engine> eng,
          const std::vector<std::size_t>& metrics_indices,
          std::shared_ptr<boost::asio::ssl::context> tls);

  // The same Runtime with another TLS context (fresh session-ticket keys);
  // the quotas' buckets are shared with `from`.
  static std::shared_ptr<const Runtime> with_tls(const Runtime& from,
                                                 std::shared_ptr<boost::asio::ssl::context> tls);

  std::shared_ptr<const config::Config> config;
  std::shared_ptr<Engine> engine;
  http::Router router;
  std::vector<KeyStoreIndex> keystores;  // same order as config->keystores
  // From config->server.limits and config->tls. Its own shared_ptr: an open
  // connection holds these, not the Runtime, so the HSM engine of an old
  // Runtime is released once the requests that use it are done.
  std::shared_ptr<const net::ConnectionSettings> connection;
};

// The current Runtime: the one place a reload (or a ticket-key rotation)
// publishes what it changed, in one atomic swap.
class RuntimeHolder {
 public:
  explicit RuntimeHolder(std::shared_ptr<const Runtime> rt) : rt_(std::move(rt)) {}
  std::shared_ptr<const Runtime> get() const { return rt_.load(); }
  // Replaces the Runtime with make(current), unless make returns null. Writers
  // are serialized, so two updates never lose one another's change.
  template <class Make>
  void update(Make&& make) {
    std::lock_guard lock(writer_mutex_);
    if (auto next = make(rt_.load())) rt_.store(std::move(next));
  }

 private:
  std::mutex writer_mutex_;
  std::atomic<std::shared_ptr<const Runtime>> rt_;
};

}  // namespace xks::app
