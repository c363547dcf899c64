// The XKS request pipeline behind the server: ping -> route -> method ->
// SigV4 -> parse -> key lookup -> HSM work on the worker pool -> response, and
// one access-log line per request (never plaintext, never secrets).
#pragma once

#include <atomic>

#include "xks/app/health_monitor.hpp"
#include "xks/app/runtime.hpp"
#include "xks/auth/sigv4.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/net/server.hpp"
#include "xks/app/proxy_metrics.hpp"

namespace xks::app {

class XksHandler final : public net::RequestHandler {
 public:
  XksHandler(const RuntimeHolder& runtime, core::BlockingPool& pool, const HealthMonitor& health,
             const auth::SigV4Verifier& verifier, ProxyMetrics& metrics)
      : runtime_(runtime), pool_(pool), health_(health), verifier_(verifier), metrics_(metrics) {}

  boost::asio::awaitable<net::Response> handle(net::Request& request,
                                               net::RequestContext& ctx) override;
  net::Response error_response(const Error& error, unsigned http_version) override;
  // Closes each connection after its response while shutting down or while no
  // HSM is usable; see net::RequestHandler.
  bool keep_connections() const override;
  // The shutdown delay has begun: /ping answers 503 from now on.
  void begin_stopping() noexcept { stopping_.store(true); }

 private:
  struct Outcome;  // what the access log records
  boost::asio::awaitable<net::Response> dispatch(net::Request& request,
                                                 const net::RequestContext& ctx,
                                                 const std::shared_ptr<const Runtime>& rt,
                                                 Outcome& outcome);

  const RuntimeHolder& runtime_;
  core::BlockingPool& pool_;
  const HealthMonitor& health_;
  const auth::SigV4Verifier& verifier_;
  ProxyMetrics& metrics_;
  std::atomic<bool> stopping_{false};
};

}  // namespace xks::app
