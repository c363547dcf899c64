// The XKS request pipeline behind the server: ping -> route -> method ->
// SigV4 -> parse -> key lookup -> HSM work on the worker pool -> response, and
// one access-log line per request (never plaintext, never secrets).
#pragma once

#include "xks/api/service.hpp"
#include "xks/app/health_monitor.hpp"
#include "xks/app/runtime.hpp"
#include "xks/auth/sigv4.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/net/server.hpp"

namespace xks::app {

class XksHandler final : public net::RequestHandler {
 public:
  XksHandler(const RuntimeHolder& runtime, api::XksService& service, core::BlockingPool& pool,
             const HealthMonitor& health, const auth::SigV4Verifier& verifier)
      : runtime_(runtime), service_(service), pool_(pool), health_(health), verifier_(verifier) {}

  boost::asio::awaitable<net::Response> handle(net::Request& request,
                                               const net::RequestContext& ctx) override;
  net::Response error_response(const Error& error, unsigned http_version) override;

 private:
  struct Outcome;  // what the access log records
  boost::asio::awaitable<net::Response> dispatch(net::Request& request,
                                                 const net::RequestContext& ctx,
                                                 const std::shared_ptr<const Runtime>& rt,
                                                 Outcome& outcome);

  const RuntimeHolder& runtime_;
  api::XksService& service_;
  core::BlockingPool& pool_;
  const HealthMonitor& health_;
  const auth::SigV4Verifier& verifier_;
};

}  // namespace xks::app
