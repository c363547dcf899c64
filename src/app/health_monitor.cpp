#include "xks/app/health_monitor.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include "xks/obs/log.hpp"

namespace xks::app {
namespace asio = boost::asio;
using std::chrono::duration_cast;
using std::chrono::milliseconds;

HealthMonitor::HealthMonitor(asio::io_context& ioc, core::BlockingPool& pool, Probe probe,
                             Settings settings, Publish publish)
    : pool_(pool),
      probe_(std::move(probe)),
      publish_(std::move(publish)),
      settings_(std::move(settings)),
      timer_(asio::make_strand(ioc)) {}

void HealthMonitor::check_now() { store(probe_()); }

void HealthMonitor::start() { asio::co_spawn(timer_.get_executor(), loop(), asio::detached); }

void HealthMonitor::stop() {
  stopped_ = true;
  asio::post(timer_.get_executor(), [this] { timer_.cancel(); });
}

asio::awaitable<void> HealthMonitor::loop() {
  while (!stopped_) {
    timer_.expires_after(settings_().interval);
    co_await timer_.async_wait(asio::as_tuple(asio::use_awaitable));
    if (stopped_) co_return;
    if (publish_) publish_(current());
    // One check at a time: if the previous one is stuck in the HSM, do not pile
    // more on; the cached result ages out to UNAVAILABLE instead.
    if (check_running_.exchange(true)) {
      obs::warn("health_check_stuck", {{"detail", "previous deep health check still running"}});
      continue;
    }
    const auto deadline = core::SteadyClock::now() + settings_().interval;
    const bool queued = pool_.try_submit(deadline, [this](bool expired) {
      if (!expired) store(probe_());
      check_running_ = false;
    });
    if (!queued) {
      check_running_ = false;
      obs::warn("health_check_skipped", {{"detail", "HSM work queue full"}});
    }
  }
}

void HealthMonitor::store(std::vector<hsm::EkmHealth> result) {
  std::vector<hsm::EkmHealth> previous;
  {
    std::lock_guard lock(mutex_);
    previous = last_;
    last_ = std::move(result);
    checked_at_ = core::SteadyClock::now();
  }
  // Log transitions, not every check.
  const auto now = current();
  if (publish_) publish_(now);
  for (std::size_t i = 0; i < now.size(); ++i) {
    const bool changed = i >= previous.size() || previous[i].status != now[i].status;
    if (!changed) continue;
    nlohmann::json fields = {{"hsm", now[i].id},
                             {"status", hsm::to_string(now[i].status)},
                             {"latencyUs", now[i].latency.count()}};
    if (!now[i].detail.empty()) fields["detail"] = now[i].detail;
    if (now[i].status == hsm::HealthStatus::Active) {
      obs::info("hsm_health", fields);
    } else {
      obs::warn("hsm_health", fields);
    }
  }
}

std::vector<hsm::EkmHealth> HealthMonitor::current() const {
  std::vector<hsm::EkmHealth> result;
  core::SteadyClock::time_point checked_at;
  {
    std::lock_guard lock(mutex_);
    result = last_;
    checked_at = checked_at_;
  }
  const auto age = core::SteadyClock::now() - checked_at;
  const config::HealthConfig settings = settings_();
  for (auto& ekm : result) {
    if (age > settings.max_age) {
      ekm.status = hsm::HealthStatus::Unavailable;
      ekm.detail = "last deep health check is " +
                   std::to_string(duration_cast<milliseconds>(age).count()) +
                   " ms old (limit health.max_age_ms); the check is stuck or failing to run";
    } else if (ekm.status == hsm::HealthStatus::Active &&
               ekm.latency > duration_cast<std::chrono::microseconds>(settings.degraded_latency)) {
      ekm.status = hsm::HealthStatus::Degraded;
      ekm.detail = "encrypt+decrypt took " + std::to_string(ekm.latency.count()) +
                   " us, above health.degraded_latency_ms";
    }
  }
  return result;
}

bool HealthMonitor::any_usable() const {
  for (const auto& ekm : current()) {
    if (ekm.status != hsm::HealthStatus::Unavailable) return true;
  }
  return false;
}

}  // namespace xks::app
