// The XKS request pipeline behind the server, as stages that each return a
// Result: route (and method) -> authenticate (SigV4, region) -> quota ->
// parse -> authorize (key store and key state, kmsKeyArn region, policy) ->
// execute (HSM work on the worker pool) -> respond; the load balancer's ping
// before all of them; one access-log line and the request metrics per request
// (never plaintext, never secrets).
#pragma once

#include <atomic>

#include "xks/app/health_monitor.hpp"
#include "xks/app/proxy_metrics.hpp"
#include "xks/app/runtime.hpp"
#include "xks/auth/sigv4.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/net/server.hpp"

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
  struct Outcome;  // what the access log and the metrics record
  struct Call;     // one request on its way through the stages

  boost::asio::awaitable<net::Response> dispatch(Call& call);
  net::Response ping(Call& call) const;
  Result<void> route(Call& call) const;
  Result<void> authenticate(Call& call) const;
  Result<void> take_quota(const Call& call) const;
  net::Response health_status(Call& call) const;
  // GetKeyMetadata, Encrypt and Decrypt: parse -> authorize -> execute -> respond.
  template <class Op>
  boost::asio::awaitable<net::Response> key_operation(Call& call);
  Result<const config::KeyEntry*> check_key(Call& call) const;
  Result<const config::KeyEntry*> authorize(Call& call) const;
  net::Response fail(Call& call, Error error) const;
  net::Response method_not_allowed(Call& call, Error error, const char* allow) const;
  template <class T>
  net::Response respond(Call& call, Result<T>& result) const;

  const RuntimeHolder& runtime_;
  core::BlockingPool& pool_;
  const HealthMonitor& health_;
  const auth::SigV4Verifier& verifier_;
  ProxyMetrics& metrics_;
  std::atomic<bool> stopping_{false};
};

}  // namespace xks::app
