// The deep health check, run in the background and cached (spec,
// GetHealthStatus: a cached result MUST NOT be older than one minute).
// GetHealthStatus and the load balancer's ping answer from the cache at once.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <functional>
#include <mutex>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/hsm/key_backend.hpp"

namespace xks::app {

class HealthMonitor {
 public:
  // The deep check itself (encrypt+decrypt on every HSM's health key); runs on
  // the HSM pool. A function, not a backend, because a reload may replace the
  // backend.
  using Probe = std::function<std::vector<hsm::EkmHealth>()>;
  // Called with the thresholded result after every check and every interval
  // (so an aged-out result is published too): metrics.
  using Publish = std::function<void(const std::vector<hsm::EkmHealth>&)>;
  // The health settings in force, asked at every use: a reload changes them
  // without restarting the monitor.
  using Settings = std::function<config::HealthConfig()>;

  HealthMonitor(boost::asio::io_context& ioc, core::BlockingPool& pool, Probe probe,
                Settings settings, Publish publish = {});

  // Runs one check on the calling thread (at startup, before serving).
  void check_now();
  // Re-checks every health.interval on the HSM pool, until stop().
  void start();
  void stop();

  // The last result, with the thresholds applied: DEGRADED when slower than
  // degraded_latency, every HSM UNAVAILABLE when the result is older than
  // max_age (a stuck check must not keep reporting ACTIVE).
  std::vector<hsm::EkmHealth> current() const;
  bool any_usable() const;

 private:
  boost::asio::awaitable<void> loop();
  void store(std::vector<hsm::EkmHealth> result);

  core::BlockingPool& pool_;
  const Probe probe_;
  const Publish publish_;
  const Settings settings_;
  boost::asio::steady_timer timer_;
  std::atomic<bool> check_running_{false};
  std::atomic<bool> stopped_{false};

  mutable std::mutex mutex_;
  std::vector<hsm::EkmHealth> last_;
  core::SteadyClock::time_point checked_at_{};
};

}  // namespace xks::app
