#include "xks/app/daemon.hpp"

#include <systemd/sd-daemon.h>

#include <algorithm>
#include <boost/asio/post.hpp>
#include <cstdlib>

#include "xks/app/app.hpp"
#include "xks/app/privileges.hpp"
#include "xks/config/config.hpp"
#include "xks/net/tls_context.hpp"
#include "xks/obs/log.hpp"

namespace xks::app {
namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {

constexpr auto kDrainTimeout = 10s;
// How long HSM calls still running after the last connection closed may take
// before the process exits without waiting for them.
constexpr auto kHsmStopGrace = 2s;

unsigned io_threads(const config::Config& cfg) {
  if (cfg.server.threads != 0) return cfg.server.threads;
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

std::shared_ptr<asio::ssl::context> make_tls(const config::Config& cfg) {
  if (!cfg.tls.enabled) return nullptr;
  return net::make_server_tls_context(cfg.tls, cfg.source);
}

unsigned total_sessions(const config::Config& cfg) {
  unsigned workers = 0;
  for (const auto& h : cfg.hsms) workers += h.sessions;
  return workers;
}

}  // namespace

Daemon::Daemon(std::filesystem::path config_path, std::shared_ptr<const config::Config> cfg,
               std::shared_ptr<Engine> engine, ProxyMetrics& metrics, EngineFactory open_engine)
    : config_path_(std::move(config_path)),
      metrics_(metrics),
      open_engine_(std::move(open_engine)),
      pool_(total_sessions(*cfg), cfg->server.limits.hsm_queue_capacity, "xks-hsm"),
      runtime_(make_runtime(cfg, std::move(engine), make_tls(*cfg))),
      ioc_(1),
      io_workers_(make_io_workers(io_threads(*cfg))),
      health_(
          ioc_, pool_,
          [this] {
            // Hold the engine for the duration of the probe: a reload may
            // replace it meanwhile.
            const auto current = runtime_.get()->engine;
            return current->backend->check_health();
          },
          [this] { return runtime_.get()->config->health; },
          [this](const std::vector<hsm::EkmHealth>& ekms) {
            // Labelled by the configured HSM name, as the HSM call metrics
            // are; the health entries come in configuration order.
            const auto current = runtime_.get()->config;
            for (std::size_t i = 0; i < ekms.size(); ++i) {
              const auto& name = i < current->hsms.size() ? current->hsms[i].name : ekms[i].id;
              metrics_.set_hsm_health(name, hsm::to_string(ekms[i].status));
            }
          }),
      handler_(runtime_, pool_, health_, verifier_, metrics_),
      server_(
          ioc_, [this] { return runtime_.get()->connection; }, handler_, &metrics_,
          connection_contexts()),
      signals_(ioc_, SIGTERM, SIGINT, SIGHUP),
      drain_timer_(ioc_),
      shutdown_delay_timer_(ioc_),
      watchdog_timer_(ioc_),
      rotation_timer_(ioc_) {
  metrics_.set_worker_pool_samplers([this] { return static_cast<double>(pool_.queue_depth()); },
                                    [this] { return static_cast<double>(pool_.busy_workers()); });
  // Sampled from the engine serving at scrape time (a reload may replace it).
  for (const auto& h : cfg->hsms) {
    using Counts = hsm::SessionCounts;
    metrics_.set_hsm_session_samplers(
        h.name, [this, name = h.name] { return session_count(name, &Counts::in_use); },
        [this, name = h.name] { return session_count(name, &Counts::open); });
    sampled_hsms_.push_back(h.name);
  }
  publish_tls_expiry(*cfg);
}

Daemon::~Daemon() {
  if (reload_thread_.joinable()) reload_thread_.join();
  metrics_.set_worker_pool_samplers({}, {});
  for (const auto& name : sampled_hsms_) metrics_.set_hsm_session_samplers(name, {}, {});
}

int Daemon::run() {
  const auto cfg = runtime_.get()->config;
  health_.check_now();
  for (const auto& ekm : health_.current()) {
    nlohmann::json fields = {{"hsm", ekm.id},
                             {"model", ekm.model},
                             {"status", hsm::to_string(ekm.status)},
                             {"latencyUs", ekm.latency.count()}};
    if (!ekm.detail.empty()) fields["detail"] = ekm.detail;
    obs::log(ekm.status == hsm::HealthStatus::Unavailable ? obs::Level::Warn : obs::Level::Info,
             "hsm_health", fields);
  }
  server_.listen(cfg->server.listen_host, cfg->server.listen_port);
  if (cfg->metrics.enabled) {
    metrics_server_ = std::make_unique<MetricsEndpoint>(
        ioc_, metrics_.registry(),
        MetricsEndpoint::Options{.host = cfg->metrics.listen_host,
                                 .port = cfg->metrics.listen_port});
    metrics_server_->start();
    obs::info("metrics_listening",
              {{"address", cfg->metrics.listen_host}, {"port", metrics_server_->local_port()}});
  }
  // Both listeners are bound: privileged ports need root no longer.
  drop_privileges(cfg->server, cfg->source);
  update_watch(*cfg);
  const auto endpoint = server_.local_endpoint();
  health_.start();
  server_.start();
  wait_for_signal();
  start_watchdog();
  schedule_ticket_rotation();
  obs::info("listening", {{"address", endpoint.address().to_string()},
                          {"port", endpoint.port()},
                          {"tls", cfg->tls.enabled},
                          {"mtls", !cfg->tls.client_ca.empty()},
                          {"ioThreads", io_threads(*cfg)},
                          {"hsmWorkers", pool_.threads()}});
  sd_notify(0, "READY=1");

  // One thread per connection io_context; this thread runs the listener,
  // signals, timers, health checks and the metrics listener.
  std::vector<std::thread> threads;
  for (auto& worker : io_workers_) {
    threads.emplace_back([&context = worker->context] { context.run(); });
  }
  ioc_.run();
  // poll_drain may stop ioc_ before the acceptor close that stop_accepting
  // posted has run. The pending accept holds a socket of a connection
  // io_context; destroyed later with ioc_, it would reach into that
  // context's freed socket service. Let the close and the aborted accept
  // complete now, while the connection contexts exist.
  ioc_.restart();
  ioc_.poll();
  for (auto& worker : io_workers_) {
    worker->guard.reset();
    worker->context.stop();
  }
  for (auto& t : threads) t.join();

  // Ordered shutdown. First the HSM pool: no more jobs (completions of the
  // last ones are queued to the stopped contexts). An HSM call that never
  // returns must not hold the exit — its client was answered at the request
  // deadline — so running calls get kHsmStopGrace (less if the drain deadline
  // is nearer); after that the process leaves without C_Finalize, which is
  // not allowed while a thread is inside the module. Then the connections
  // still open are destroyed with their io_contexts while the server, handler
  // and metrics they use exist; the backend closes its sessions when the last
  // Runtime holding the engine goes (in ~Daemon).
  const auto now = core::SteadyClock::now();
  const auto wait =
      drain_deadline_ == core::Deadline{}
          ? kHsmStopGrace
          : std::clamp<core::SteadyClock::duration>(drain_deadline_ - now, 100ms, kHsmStopGrace);
  if (!pool_.stop_within(wait)) {
    obs::error("hsm_calls_abandoned", {{"busyWorkers", pool_.busy_workers()},
                                       {"detail",
                                        "HSM calls still running at the end of the drain; exiting "
                                        "without closing the HSM sessions (no C_Finalize)"}});
    obs::flush();
    std::_Exit(kExitOk);
  }
  io_workers_.clear();
  obs::info("stopped", {{"openConnections", server_.open_connections()}});
  obs::flush();
  return kExitOk;
}

std::vector<std::unique_ptr<Daemon::IoWorker>> Daemon::make_io_workers(unsigned n) {
  std::vector<std::unique_ptr<IoWorker>> workers;
  for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<IoWorker>());
  return workers;
}

std::vector<asio::io_context*> Daemon::connection_contexts() {
  std::vector<asio::io_context*> out;
  for (auto& worker : io_workers_) out.push_back(&worker->context);
  return out;
}

std::shared_ptr<const Runtime> Daemon::make_runtime(std::shared_ptr<const config::Config> cfg,
                                                    std::shared_ptr<Engine> engine,
                                                    std::shared_ptr<asio::ssl::context> tls) {
  const auto indices = metrics_.register_keystores(cfg->uri_paths());
  for (std::size_t i = 0; i < indices.size(); ++i) {
    metrics_.set_credentials(indices[i], cfg->keystores[i].credentials);
    metrics_.set_key_versions(indices[i], cfg->keystores[i].keys);
  }
  return std::make_shared<const Runtime>(std::move(cfg), std::move(engine), indices,
                                         std::move(tls));
}

void Daemon::publish_tls_expiry(const config::Config& cfg) {
  if (!cfg.tls.enabled) return;
  if (const auto not_after = net::certificate_not_after(cfg.tls.certificate)) {
    metrics_.set_tls_certificate_not_after(*not_after);
  }
}

void Daemon::wait_for_signal() {
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec) return;  // cancelled at shutdown
    if (signo == SIGHUP) {
      request_reload();
      wait_for_signal();
      return;
    }
    begin_shutdown(signo);
  });
}

// Reloading may open HSM sessions (slow on a network HSM), so it runs on its
// own thread, never on an I/O thread. One at a time.
void Daemon::request_reload() {
  if (reloading_.exchange(true)) {
    obs::warn("reload_ignored", {{"detail", "a reload is already in progress"}});
    return;
  }
  if (reload_thread_.joinable()) reload_thread_.join();
  reload_thread_ = std::thread([this] {
    (void)reload();
    reloading_ = false;
  });
}

void Daemon::log_plan(const config::ReloadPlan& plan) {
  for (const auto& change : plan.changes) {
    if (change.cls != config::ReloadClass::Restart) continue;
    obs::warn("reload_partial",
              {{"setting", change.setting},
               {"changes", change.details},
               {"detail", std::string(change.setting) +
                              " takes effect at the next restart; the running value is kept"}});
  }
}

Daemon::ReloadResult Daemon::reload() {
  sd_notify(0, "RELOADING=1");
  ReloadResult result;
  const auto old_rt = runtime_.get();
  try {
    auto next_cfg = config::load_config(config_path_);
    if (auto kept = config::check_version_continuity(*old_rt->config, next_cfg); !kept) {
      throw std::runtime_error(kept.error().message);
    }
    auto plan = config::diff(*old_rt->config, next_cfg);
    auto cfg = std::make_shared<const config::Config>(plan.config);
    // The TLS context is rebuilt at every reload: certificate files are
    // replaced in place, under the same names.
    auto tls = make_tls(*cfg);
    // Keep the HSM sessions unless the plan needs new ones or an HSM is
    // unavailable (e.g. a login refused for the PIN: a reload is the
    // operator's signal to try once more).
    auto engine = old_rt->engine;
    const bool hsm_changed = plan.needs_new_hsm_sessions();
    bool hsm_unavailable = false;
    for (const auto& ekm : health_.current()) {
      hsm_unavailable |= ekm.status == hsm::HealthStatus::Unavailable;
    }
    if (hsm_changed || hsm_unavailable) {
      auto opened = open_engine_(*cfg);
      if (!opened) throw std::runtime_error("hsm: " + opened.error().message);
      engine = std::move(*opened);
      obs::info("hsm_reopened",
                {{"reason", hsm_changed ? "hsm settings changed" : "an HSM was unavailable"}});
    }
    // Last of what can refuse the reload (a log file that cannot be opened),
    // first of what applies it.
    obs::init_logging(cfg->logging);
    log_plan(plan);
    auto next = make_runtime(cfg, std::move(engine), std::move(tls));
    runtime_.update([&](const std::shared_ptr<const Runtime>&) { return std::move(next); });
    pool_.set_queue_capacity(cfg->server.limits.hsm_queue_capacity);
    publish_tls_expiry(*cfg);
    // The rotation period or session_tickets may have changed: re-arm.
    asio::post(ioc_, [this] { schedule_ticket_rotation(); });
    nlohmann::json settings = nlohmann::json::array();
    for (const auto& change : plan.changes) {
      settings.push_back({{"setting", change.setting}, {"class", config::to_string(change.cls)}});
    }
    obs::info("reloaded", {{"config", cfg->source.string()},
                           {"changes", plan.describe()},
                           {"settings", std::move(settings)}});
    metrics_.record_reload(true);
    try {
      update_watch(*cfg);
    } catch (const std::exception& e) {
      obs::error(
          "config_watch_failed",
          {{"error", e.what()}, {"detail", "file changes are not noticed; reload with SIGHUP"}});
    }
    if (hsm_changed || hsm_unavailable) health_.check_now();
    result.applied = true;
    result.new_hsm_sessions = hsm_changed || hsm_unavailable;
    result.plan = std::move(plan);
  } catch (const std::exception& e) {
    obs::error("reload_refused",
               {{"error", e.what()}, {"detail", "the previous configuration keeps serving"}});
    metrics_.record_reload(false);
    result.error = e.what();
  }
  sd_notify(0, "READY=1");
  return result;
}

// systemd's watchdog: ping while the HSM worker pool makes progress. A pool
// whose every worker has been stuck in an HSM call for half the watchdog
// period is wedged: stop pinging and let systemd restart the service.
void Daemon::start_watchdog() {
  std::uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
  watchdog_period_ = std::chrono::microseconds(usec);
  watchdog_tick();
}

void Daemon::watchdog_tick() {
  const auto since = pool_.all_busy_since();
  const bool pool_wedged = since != core::SteadyClock::time_point::max() &&
                           core::SteadyClock::now() - since > watchdog_period_ / 2;
  // Each I/O thread must run a heartbeat posted at the previous tick (a third
  // of the period ago); two missed in a row is a wedged event loop.
  std::size_t io_wedged = 0;
  for (auto& worker : io_workers_) {
    const auto done = worker->heartbeats_run.load();
    worker->missed_ticks = done == worker->heartbeats_posted ? 0 : worker->missed_ticks + 1;
    if (worker->missed_ticks >= 2) ++io_wedged;
    if (done == worker->heartbeats_posted) {
      ++worker->heartbeats_posted;
      asio::post(worker->context, [w = worker.get()] { ++w->heartbeats_run; });
    }
  }
  if (!pool_wedged && io_wedged == 0) {
    sd_notify(0, "WATCHDOG=1");
  } else if (pool_wedged) {
    obs::error("hsm_pool_wedged", {{"detail",
                                    "every HSM worker has been stuck in an HSM call for more than "
                                    "half the watchdog period; withholding the watchdog ping"},
                                   {"workers", pool_.threads()}});
  } else {
    obs::error("io_thread_wedged",
               {{"detail",
                 "an I/O thread has not run its event loop for more than half the "
                 "watchdog period; withholding the watchdog ping"},
                {"threads", io_wedged}});
  }
  watchdog_timer_.expires_after(watchdog_period_ / 3);
  watchdog_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (!ec) watchdog_tick();
  });
}

// Fresh session-ticket keys: a new TLS context from the current files.
// Connections keep the context they started with. Arming the timer again
// replaces the pending wait, so a reload can call this at any time.
void Daemon::schedule_ticket_rotation() {
  const auto cfg = runtime_.get()->config;
  if (!cfg->tls.enabled || !cfg->tls.session_tickets) {
    rotation_timer_.cancel();
    return;
  }
  rotation_timer_.expires_after(cfg->tls.ticket_key_rotation);
  rotation_timer_.async_wait([this](const boost::system::error_code& ec) {
    if (ec) return;
    const auto current = runtime_.get();
    try {
      auto tls = make_tls(*current->config);
      runtime_.update([&](const std::shared_ptr<const Runtime>& now) {
        // A reload in the meantime brought its own fresh context.
        return now->config == current->config ? Runtime::with_tls(*now, std::move(tls)) : nullptr;
      });
      obs::info("tls_ticket_keys_rotated");
    } catch (const std::exception& e) {
      obs::error("tls_ticket_rotation_failed",
                 {{"error", e.what()}, {"detail", "the previous TLS context keeps serving"}});
    }
    schedule_ticket_rotation();
  });
}

double Daemon::session_count(const std::string& hsm, std::size_t hsm::SessionCounts::*field) const {
  for (const auto& counts : runtime_.get()->engine->backend->session_counts()) {
    if (counts.hsm == hsm) return static_cast<double>(counts.*field);
  }
  return 0.0;
}

void Daemon::update_watch(const config::Config& cfg) {
  const std::lock_guard lock(watch_mutex_);
  if (!cfg.reload.watch || stopping_watch_) {
    if (watch_) obs::info("config_watch_stopped");
    watch_.reset();
    return;
  }
  auto files = watched_files(cfg);
  const auto count = files.size();
  if (watch_ && watch_->debounce() == cfg.reload.debounce) {
    watch_->set_files(std::move(files));
    return;
  }
  watch_.reset();
  watch_ = std::make_unique<ConfigWatch>(
      std::move(files), cfg.reload.debounce,
      [this](const std::vector<std::filesystem::path>& changed) {
        if (reloading_) return false;  // asked again once the running reload is done
        nlohmann::json names = nlohmann::json::array();
        for (const auto& f : changed) names.push_back(f.string());
        obs::info("config_changed", {{"files", names}});
        asio::post(ioc_, [this] { request_reload(); });
        return true;
      });
  obs::info("config_watch_started", {{"files", count},
                                     {"directories", watch_->watched_directories()},
                                     {"debounceMs", cfg.reload.debounce.count()}});
}

void Daemon::stop_watch() {
  const std::lock_guard lock(watch_mutex_);
  stopping_watch_ = true;
  watch_.reset();
}

void Daemon::begin_shutdown(int signo) {
  stop_watch();  // like SIGHUP, a file change no longer reloads while stopping
  const auto delay = runtime_.get()->config->server.shutdown_delay;
  sd_notify(0, "STOPPING=1");
  obs::info("stopping", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"},
                         {"requestsInFlight", server_.requests_in_flight()},
                         {"openConnections", server_.open_connections()},
                         {"shutdownDelayMs", delay.count()}});
  if (delay == config::Millis(0)) {
    begin_drain();
    return;
  }
  // The listener stays open and every connection still serves: the load
  // balancer sees /ping fail and stops sending, and each client learns from
  // a Connection: close response to reconnect elsewhere. Closing anything
  // now would race requests already on their way.
  handler_.begin_stopping();
  shutdown_delay_timer_.expires_after(delay);
  shutdown_delay_timer_.async_wait([this](const boost::system::error_code&) { begin_drain(); });
  wait_for_signal_while_stopping();
}

// During the shutdown delay a second SIGTERM or SIGINT drains at once; a
// reload is pointless and ignored.
void Daemon::wait_for_signal_while_stopping() {
  signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
    if (ec || draining_) return;
    if (signo == SIGHUP) {
      obs::warn("reload_ignored", {{"detail", "the proxy is shutting down"}});
      wait_for_signal_while_stopping();
      return;
    }
    shutdown_delay_timer_.cancel();
  });
}

void Daemon::begin_drain() {
  if (draining_) return;
  draining_ = true;
  if (server_.open_connections() != 0 || server_.requests_in_flight() != 0) {
    obs::info("draining", {{"requestsInFlight", server_.requests_in_flight()},
                           {"openConnections", server_.open_connections()}});
  }
  server_.stop_accepting();
  server_.begin_drain();
  health_.stop();
  watchdog_timer_.cancel();
  rotation_timer_.cancel();
  if (metrics_server_) metrics_server_->stop();
  drain_deadline_ = core::SteadyClock::now() + kDrainTimeout;
  poll_drain();
}

// Idle keep-alive connections were closed by begin_drain; the others finish
// the request they are receiving or serving (answered with Connection:
// close) and close. Whatever is left at the drain deadline is cut.
void Daemon::poll_drain() {
  if (server_.open_connections() == 0 || core::SteadyClock::now() >= drain_deadline_) {
    if (server_.open_connections() != 0) {
      obs::warn("drain_timeout", {{"openConnections", server_.open_connections()},
                                  {"requestsInFlight", server_.requests_in_flight()}});
    }
    ioc_.stop();
    return;
  }
  drain_timer_.expires_after(5ms);
  drain_timer_.async_wait([this](const boost::system::error_code&) { poll_drain(); });
}

}  // namespace xks::app
