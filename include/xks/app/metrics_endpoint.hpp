// The Prometheus scrape endpoint: a net::Server of its own, plain HTTP/1.1 on
// its own listener, separate from the XKS TLS port so that scraping needs no
// client certificate and the metrics never share a port with KMS traffic.
// Binding to loopback by default is the configuration's job; this class
// listens where it is told.
//
//   GET|HEAD /metrics   200, text/plain; version=0.0.4 (the query string is ignored)
//   other method        405 on /metrics, with Allow: GET
//   any other path      404
//
// Keep-alive is honoured; every read and write has a deadline so a stuck or
// slow scraper cannot pin a connection. At max_connections a new connection
// closes the one idle the longest (silent, or between keep-alive requests);
// only when every connection is being answered is the new one closed at once.
// Scrape connections are not the XKS listener's: they are counted in no
// metric, and what a scraper does wrong is not logged.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "xks/obs/metrics.hpp"

namespace xks::app {

class MetricsEndpoint {
 public:
  struct Options {
    std::string host = "127.0.0.1";  // an IP address, v4 or v6
    std::uint16_t port = 9464;       // 0: an ephemeral port, see local_port()
    // To read a request (header and any body); the first request of a
    // connection gets the shorter of this and idle_timeout.
    std::chrono::milliseconds request_timeout{5000};
    std::chrono::milliseconds idle_timeout{5000};    // between keep-alive requests
    std::chrono::milliseconds write_timeout{10000};  // to send a response
    std::size_t max_connections = 16;
  };

  // `registry` must outlive every handler of this endpoint that `ioc` may
  // still run, i.e. destroy the endpoint and finish ioc.run() before it.
  MetricsEndpoint(boost::asio::io_context& ioc, const obs::Registry& registry, Options options);
  ~MetricsEndpoint();  // stop()
  MetricsEndpoint(const MetricsEndpoint&) = delete;
  MetricsEndpoint& operator=(const MetricsEndpoint&) = delete;

  // Binds, listens and starts accepting on ioc's threads. Throws
  // std::runtime_error ("metrics.listen: ..." with the address and reason) if
  // it cannot listen.
  void start();
  // Stops accepting and closes open connections (a response being written is
  // cut off). Thread-safe and idempotent; the endpoint cannot be started again.
  void stop();
  // The bound port (the real one when Options::port was 0); 0 before start().
  std::uint16_t local_port() const noexcept { return port_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  std::uint16_t port_ = 0;
  std::atomic<bool> stopped_{false};
};

// Parses "127.0.0.1:9464", "[::1]:9464" or "0.0.0.0:0" into host and port;
// nullopt if malformed (a host name is not accepted: we bind, not resolve).
std::optional<std::pair<std::string, std::uint16_t>> parse_listen_address(std::string_view text);

}  // namespace xks::app
