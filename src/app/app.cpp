#include "xks/app/app.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "xks/api/version.hpp"
#include "xks/app/config_watch.hpp"
#include "xks/app/handler.hpp"
#include "xks/app/health_monitor.hpp"
#include "xks/app/instrumented_backend.hpp"
#include "xks/app/metrics_endpoint.hpp"
#include "xks/app/privileges.hpp"
#include "xks/app/proxy_metrics.hpp"
#include "xks/hsm/events.hpp"
#include "xks/app/runtime.hpp"
#include "xks/auth/sigv4.hpp"
#include "xks/config/config.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/hsm/ckr.hpp"
#include "xks/hsm/multi_hsm_backend.hpp"
#include "xks/net/server.hpp"
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

// Core dumps of this process could hold plaintext, PINs and SigV4 secrets.
// PR_SET_DUMPABLE 0 also keeps other processes of the same user from
// ptrace-attaching or reading /proc/<pid>/mem.
void disable_core_dumps() {
  const rlimit none{0, 0};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}

// server.allow_core_dumps: for debugging a crash, on the operator's say-so.
void enable_core_dumps() {
  rlimit limit{};
  getrlimit(RLIMIT_CORE, &limit);
  limit.rlim_cur = limit.rlim_max;
  setrlimit(RLIMIT_CORE, &limit);
  prctl(PR_SET_DUMPABLE, 1, 0, 0, 0);
  obs::warn("core_dumps_allowed", {{"detail", "server.allow_core_dumps is true: a core dump may "
                                              "contain plaintext, the HSM PIN and SigV4 secrets"}});
}

unsigned io_threads(const config::Config& cfg) {
  if (cfg.server.threads != 0) return cfg.server.threads;
  const unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : n;
}

std::shared_ptr<asio::ssl::context> make_tls(const config::Config& cfg) {
  if (!cfg.tls.enabled) return nullptr;
  return net::make_server_tls_context(cfg.tls, cfg.source);
}

// What a reload changes, for the log (names only, never secret values).
nlohmann::json describe_changes(const config::Config& before, const config::Config& after) {
  nlohmann::json changes = nlohmann::json::array();
  for (const auto& ks : after.keystores) {
    const auto* old = before.find_keystore(ks.uri_path);
    if (old == nullptr) {
      changes.push_back("keystore added: " + ks.uri_path);
      continue;
    }
    if (old->enabled != ks.enabled) {
      changes.push_back(ks.uri_path + (ks.enabled ? ": keystore enabled" : ": keystore disabled"));
    }
    if (old->region != ks.region) {
      changes.push_back(ks.uri_path + ": region " + (ks.region ? *ks.region : "unset"));
    }
    for (const auto& cred : ks.credentials) {
      bool found = false;
      for (const auto& o : old->credentials) found |= o.access_key_id == cred.access_key_id;
      if (!found) changes.push_back(ks.uri_path + ": credential added: " + cred.access_key_id);
    }
    for (const auto& o : old->credentials) {
      bool found = false;
      for (const auto& cred : ks.credentials) found |= o.access_key_id == cred.access_key_id;
      if (!found) changes.push_back(ks.uri_path + ": credential removed: " + o.access_key_id);
    }
    for (const auto& key : ks.keys) {
      const config::KeyEntry* prev = nullptr;
      for (const auto& o : old->keys) {
        if (o.id == key.id) prev = &o;
      }
      if (prev == nullptr) {
        changes.push_back(ks.uri_path + ": key added: " + key.id);
      } else {
        if (prev->enabled != key.enabled) {
          changes.push_back(ks.uri_path + ": key " + key.id + (key.enabled ? " enabled" : " disabled"));
        }
        if (prev->current != key.current) {
          changes.push_back(ks.uri_path + ": key " + key.id + " current version " +
                            std::to_string(prev->current) + " -> " + std::to_string(key.current));
        }
        for (const auto& v : key.versions) {
          const auto* was = prev->version(v.number);
          const std::string what = ks.uri_path + ": key " + key.id + " version " + std::to_string(v.number);
          if (was == nullptr) {
            changes.push_back(what + " added");
          } else if (was->enabled != v.enabled || was->decrypt_only != v.decrypt_only) {
            changes.push_back(what + (v.enabled ? (v.decrypt_only ? " decrypt_only" : " enabled") : " retired"));
          }
        }
        for (const auto& v : prev->versions) {
          if (key.version(v.number) == nullptr) {
            changes.push_back(ks.uri_path + ": key " + key.id + " version " + std::to_string(v.number) + " removed");
          }
        }
      }
    }
    for (const auto& o : old->keys) {
      bool found = false;
      for (const auto& key : ks.keys) found |= key.id == o.id;
      if (!found) changes.push_back(ks.uri_path + ": key removed: " + o.id);
    }
  }
  for (const auto& ks : before.keystores) {
    if (after.find_keystore(ks.uri_path) == nullptr) {
      changes.push_back("keystore removed: " + ks.uri_path);
    }
  }
  if (before.logging.level != after.logging.level) {
    changes.push_back("logging.level: " + after.logging.level);
  }
  if (before.logging.format != after.logging.format) changes.push_back("logging.format");
  if (before.logging.file != after.logging.file) {
    changes.push_back("logging.file: " +
                      (after.logging.file ? after.logging.file->path.string() : "stdout"));
  }
  if (before.logging.flush_interval != after.logging.flush_interval) {
    changes.push_back("logging.flush_interval_ms: " +
                      std::to_string(after.logging.flush_interval.count()));
  }
  return changes;
}

// Opens every configured HSM (fails if any cannot be opened: the daemon then
// exits with the reason) and wraps the fleet for HSM call metrics.
Result<std::shared_ptr<Engine>> open_engine(const config::Config& cfg, ProxyMetrics& metrics) {
  hsm::Pkcs11Backend::Options options;
  // Every C_Login is worth a log line: HSMs lock a user out after a few wrong
  // PINs, so an operator must be able to count the attempts.
  options.on_login = [](std::string_view hsm_name, CK_RV rv) {
    nlohmann::json fields = {{"hsm", hsm_name}, {"result", hsm::ckr_name(rv)}};
    if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) {
      obs::info("hsm_login", fields);
    } else {
      fields["detail"] = "login refused; no further attempt until the configuration is fixed "
                         "(hsm.pin) and reloaded";
      obs::error("hsm_login", fields);
    }
  };
  options.on_event = [](const hsm::HsmEvent& event) {
    nlohmann::json fields = {{"hsm", event.hsm}, {"detail", event.detail}};
    if (event.rv != CKR_OK) fields["result"] = hsm::ckr_name(event.rv);
    if (event.retry_in.count() > 0) fields["retryInMs"] = event.retry_in.count();
    const bool bad = event.kind != hsm::HsmEvent::Kind::Recovered &&
                     event.kind != hsm::HsmEvent::Kind::Opened &&
                     event.kind != hsm::HsmEvent::Kind::LoginReset &&
                     event.kind != hsm::HsmEvent::Kind::ReinitAttempt;
    obs::log(bad ? obs::Level::Warn : obs::Level::Info,
             std::string("hsm_") + std::string(hsm::to_string(event.kind)), fields);
  };
  // An HSM that is unreachable at startup (device or network) does not stop a
  // fleet: it reports UNAVAILABLE and is opened in the background. A
  // configuration problem (module, token, PIN) of any HSM does.
  auto multi = hsm::MultiHsmBackend::open_fleet(cfg.hsms, options);
  if (!multi) return std::move(multi).error();
  // HSM call latency is recorded per fleet: one HSM is labelled by its name.
  const std::string label = cfg.hsms.size() == 1 ? cfg.hsms.front().name : "fleet";
  const auto index = metrics.register_hsms({label}).front();
  return std::make_shared<Engine>(
      std::make_unique<InstrumentedBackend>(std::move(*multi), metrics, index));
}

std::string hsm_settings(const config::Config& cfg) {
  std::string out;
  for (const auto& h : cfg.hsms) {
    out += h.name + '|' + h.module.string() + '|' + h.token_label.value_or("") + '|' +
           std::to_string(h.slot_id.value_or(0)) + '|' + h.pin_source.describe() + '|' +
           std::to_string(h.sessions) + '|' + h.health_key + '|' +
           std::string(config::to_string(h.iv)) + '|' + h.token_serial.value_or("") + '|' +
           std::string(config::to_string(h.vendor)) + '|' +
           std::string(config::to_string(h.pin_format)) + '|' + h.init_args.value_or("") + '|' +
           (h.init_os_locking ? "locking" : "") + '|';
    for (const unsigned long rv : h.auth_failure_codes) out += std::to_string(rv) + ',';
    for (const auto& [name, value] : h.environment) out += '|' + name + '=' + value;
    out += ';';
  }
  return out;
}

bool same_pins(const config::Config& a, const config::Config& b) {
  if (a.hsms.size() != b.hsms.size()) return false;
  for (std::size_t i = 0; i < a.hsms.size(); ++i) {
    if (!(a.hsms[i].pin == b.hsms[i].pin)) return false;
  }
  return true;
}

std::vector<std::string> uri_paths(const config::Config& cfg) {
  std::vector<std::string> paths;
  for (const auto& ks : cfg.keystores) paths.push_back(ks.uri_path);
  return paths;
}

class Daemon {
 public:
  Daemon(std::filesystem::path config_path, std::shared_ptr<const config::Config> cfg,
         std::shared_ptr<Engine> engine, ProxyMetrics& metrics)
      : config_path_(std::move(config_path)),
        metrics_(metrics),
        pool_(total_sessions(*cfg), cfg->server.limits.hsm_queue_capacity, "xks-hsm"),
        runtime_(make_runtime(cfg, std::move(engine))),
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
            cfg->health,
            [this](const std::vector<hsm::EkmHealth>& ekms) {
              // Labelled by the configured HSM name, as the HSM call metrics
              // are; the health entries come in configuration order.
              const auto current = runtime_.get()->config;
              for (std::size_t i = 0; i < ekms.size(); ++i) {
                const auto& name =
                    i < current->hsms.size() ? current->hsms[i].name : ekms[i].id;
                metrics_.set_hsm_health(name, hsm::to_string(ekms[i].status));
              }
            }),
        tls_(make_tls(*cfg)),
        handler_(runtime_, pool_, health_, verifier_, metrics_),
        server_(ioc_, cfg->server.limits, cfg->tls.enabled ? &tls_ : nullptr, handler_, &metrics_,
                connection_contexts()),
        signals_(ioc_, SIGTERM, SIGINT, SIGHUP),
        drain_timer_(ioc_),
        shutdown_delay_timer_(ioc_),
        watchdog_timer_(ioc_),
        rotation_timer_(ioc_) {
    metrics_.set_worker_pool_samplers(
        [this] { return static_cast<double>(pool_.queue_depth()); },
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

  ~Daemon() {
    if (reload_thread_.joinable()) reload_thread_.join();
    metrics_.set_worker_pool_samplers({}, {});
    for (const auto& name : sampled_hsms_) metrics_.set_hsm_session_samplers(name, {}, {});
  }
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  int run() {
    const auto cfg = runtime_.get()->config;
    health_.check_now();
    for (const auto& ekm : health_.current()) {
      nlohmann::json fields = {{"hsm", ekm.id}, {"model", ekm.model},
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
      obs::info("metrics_listening", {{"address", cfg->metrics.listen_host},
                                      {"port", metrics_server_->local_port()}});
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
    const auto wait = drain_deadline_ == core::Deadline{}
                          ? kHsmStopGrace
                          : std::clamp<core::SteadyClock::duration>(drain_deadline_ - now, 100ms,
                                                                    kHsmStopGrace);
    if (!pool_.stop_within(wait)) {
      obs::error("hsm_calls_abandoned",
                 {{"busyWorkers", pool_.busy_workers()},
                  {"detail", "HSM calls still running at the end of the drain; exiting "
                             "without closing the HSM sessions (no C_Finalize)"}});
      obs::flush();
      std::_Exit(kExitOk);
    }
    io_workers_.clear();
    obs::info("stopped", {{"openConnections", server_.open_connections()}});
    obs::flush();
    return kExitOk;
  }

 private:
  // A connection io_context and what keeps its run() going while it is idle.
  struct IoWorker {
    asio::io_context context{1};  // one thread: no strands needed on it
    asio::executor_work_guard<asio::io_context::executor_type> guard{context.get_executor()};
    // Watchdog heartbeats: posted by the main thread, counted by this one.
    std::atomic<std::uint64_t> heartbeats_run{0};
    std::uint64_t heartbeats_posted = 0;
    unsigned missed_ticks = 0;
  };
  static std::vector<std::unique_ptr<IoWorker>> make_io_workers(unsigned n) {
    std::vector<std::unique_ptr<IoWorker>> workers;
    for (unsigned i = 0; i < n; ++i) workers.push_back(std::make_unique<IoWorker>());
    return workers;
  }
  std::vector<asio::io_context*> connection_contexts() {
    std::vector<asio::io_context*> out;
    for (auto& worker : io_workers_) out.push_back(&worker->context);
    return out;
  }

  static unsigned total_sessions(const config::Config& cfg) {
    unsigned workers = 0;
    for (const auto& h : cfg.hsms) workers += h.sessions;
    return workers;
  }

  std::shared_ptr<const Runtime> make_runtime(std::shared_ptr<const config::Config> cfg,
                                              std::shared_ptr<Engine> engine) {
    const auto indices = metrics_.register_keystores(uri_paths(*cfg));
    for (std::size_t i = 0; i < indices.size(); ++i) {
      metrics_.set_credentials(indices[i], cfg->keystores[i].credentials);
      metrics_.set_key_versions(indices[i], cfg->keystores[i].keys);
    }
    return std::make_shared<const Runtime>(std::move(cfg), std::move(engine), indices);
  }

  double session_count(const std::string& hsm, std::size_t hsm::SessionCounts::*field) const {
    for (const auto& counts : runtime_.get()->engine->backend->session_counts()) {
      if (counts.hsm == hsm) return static_cast<double>(counts.*field);
    }
    return 0.0;
  }

  void publish_tls_expiry(const config::Config& cfg) {
    if (!cfg.tls.enabled) return;
    if (const auto not_after = net::certificate_not_after(cfg.tls.certificate)) {
      metrics_.set_tls_certificate_not_after(*not_after);
    }
  }

  void wait_for_signal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) return;  // cancelled at shutdown
      if (signo == SIGHUP) {
        start_reload();
        wait_for_signal();
        return;
      }
      begin_shutdown(signo);
    });
  }

  // Reloading may open HSM sessions (slow on a network HSM), so it runs on its
  // own thread, never on an I/O thread. One at a time.
  void start_reload() {
    if (reloading_.exchange(true)) {
      obs::warn("reload_ignored", {{"detail", "a reload is already in progress"}});
      return;
    }
    if (reload_thread_.joinable()) reload_thread_.join();
    reload_thread_ = std::thread([this] {
      reload();
      reloading_ = false;
    });
  }

  void reload() {
    sd_notify(0, "RELOADING=1");
    const auto old_rt = runtime_.get();
    const auto& old_cfg = *old_rt->config;
    try {
      auto fresh = std::make_shared<const config::Config>(config::load_config(config_path_));
      if (auto kept = config::check_version_continuity(old_cfg, *fresh); !kept) {
        throw std::runtime_error(kept.error().message);
      }
      auto tls = make_tls(*fresh);
      if (fresh->server.listen_host != old_cfg.server.listen_host ||
          fresh->server.listen_port != old_cfg.server.listen_port ||
          fresh->tls.enabled != old_cfg.tls.enabled ||
          fresh->server.threads != old_cfg.server.threads ||
          fresh->metrics.listen_port != old_cfg.metrics.listen_port ||
          fresh->metrics.listen_host != old_cfg.metrics.listen_host ||
          fresh->metrics.enabled != old_cfg.metrics.enabled) {
        obs::warn("reload_partial", {{"detail", "server.listen, server.threads, tls.enabled and "
                                                "metrics take effect at the next restart"}});
      }
      // Keep the HSM sessions unless the hsm settings changed or an HSM is
      // unavailable (e.g. a login refused for the PIN: a reload is the
      // operator's signal to try once more).
      auto engine = old_rt->engine;
      const bool hsm_changed =
          hsm_settings(*fresh) != hsm_settings(old_cfg) || !same_pins(*fresh, old_cfg);
      bool hsm_unavailable = false;
      for (const auto& ekm : health_.current()) {
        hsm_unavailable |= ekm.status == hsm::HealthStatus::Unavailable;
      }
      if (hsm_changed || hsm_unavailable) {
        auto opened = open_engine(*fresh, metrics_);
        if (!opened) {
          throw std::runtime_error("hsm: " + opened.error().message);
        }
        engine = std::move(*opened);
        obs::info("hsm_reopened", {{"reason", hsm_changed ? "hsm settings changed"
                                                          : "an HSM was unavailable"}});
      }
      // Last of what can refuse the reload (a log file that cannot be opened),
      // first of what applies it.
      obs::init_logging(fresh->logging);
      auto changes = describe_changes(old_cfg, *fresh);
      runtime_.set(make_runtime(fresh, std::move(engine)));
      if (tls) tls_.replace(std::move(tls));
      publish_tls_expiry(*fresh);
      server_.set_limits(fresh->server.limits);
      obs::info("reloaded", {{"config", fresh->source.string()}, {"changes", changes}});
      metrics_.record_reload(true);
      try {
        update_watch(*fresh);
      } catch (const std::exception& e) {
        obs::error("config_watch_failed",
                   {{"error", e.what()},
                    {"detail", "file changes are not noticed; reload with SIGHUP"}});
      }
      if (hsm_changed || hsm_unavailable) health_.check_now();
    } catch (const std::exception& e) {
      obs::error("reload_refused", {{"error", e.what()},
                                    {"detail", "the previous configuration keeps serving"}});
      metrics_.record_reload(false);
    }
    sd_notify(0, "READY=1");
  }

  // systemd's watchdog: ping while the HSM worker pool makes progress. A pool
  // whose every worker has been stuck in an HSM call for half the watchdog
  // period is wedged: stop pinging and let systemd restart the service.
  void start_watchdog() {
    std::uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0) return;
    watchdog_period_ = std::chrono::microseconds(usec);
    watchdog_tick();
  }

  void watchdog_tick() {
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
      obs::error("hsm_pool_wedged",
                 {{"detail", "every HSM worker has been stuck in an HSM call for more than "
                             "half the watchdog period; withholding the watchdog ping"},
                  {"workers", pool_.threads()}});
    } else {
      obs::error("io_thread_wedged",
                 {{"detail", "an I/O thread has not run its event loop for more than half the "
                             "watchdog period; withholding the watchdog ping"},
                  {"threads", io_wedged}});
    }
    watchdog_timer_.expires_after(watchdog_period_ / 3);
    watchdog_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (!ec) watchdog_tick();
    });
  }

  // Fresh session-ticket keys: a new TLS context from the current files.
  // Connections keep the context they started with.
  void schedule_ticket_rotation() {
    const auto cfg = runtime_.get()->config;
    if (!cfg->tls.enabled || !cfg->tls.session_tickets) return;
    rotation_timer_.expires_after(cfg->tls.ticket_key_rotation);
    rotation_timer_.async_wait([this](const boost::system::error_code& ec) {
      if (ec) return;
      const auto current = runtime_.get()->config;
      try {
        tls_.replace(make_tls(*current));
        obs::info("tls_ticket_keys_rotated");
      } catch (const std::exception& e) {
        obs::error("tls_ticket_rotation_failed",
                   {{"error", e.what()}, {"detail", "the previous TLS context keeps serving"}});
      }
      schedule_ticket_rotation();
    });
  }

  // reload.watch: a change of a file the configuration reads reloads as SIGHUP
  // does. Called at startup and after every applied reload (the files, the
  // setting itself and the debounce may have changed).
  void update_watch(const config::Config& cfg) {
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
          asio::post(ioc_, [this] { start_reload(); });
          return true;
        });
    obs::info("config_watch_started", {{"files", count},
                                       {"directories", watch_->watched_directories()},
                                       {"debounceMs", cfg.reload.debounce.count()}});
  }

  void stop_watch() {
    const std::lock_guard lock(watch_mutex_);
    stopping_watch_ = true;
    watch_.reset();
  }

  void begin_shutdown(int signo) {
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
  void wait_for_signal_while_stopping() {
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

  void begin_drain() {
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
  void poll_drain() {
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

  const std::filesystem::path config_path_;
  ProxyMetrics& metrics_;
  core::BlockingPool pool_;
  auth::SigV4Verifier verifier_;
  RuntimeHolder runtime_;
  asio::io_context ioc_;
  std::vector<std::unique_ptr<IoWorker>> io_workers_;
  HealthMonitor health_;
  net::TlsContextProvider tls_;
  XksHandler handler_;
  net::Server server_;
  std::unique_ptr<MetricsEndpoint> metrics_server_;
  std::vector<std::string> sampled_hsms_;  // HSMs with session samplers
  asio::signal_set signals_;
  asio::steady_timer drain_timer_;
  asio::steady_timer shutdown_delay_timer_;
  bool draining_ = false;  // I/O thread of ioc_ only
  asio::steady_timer watchdog_timer_;
  asio::steady_timer rotation_timer_;
  std::chrono::microseconds watchdog_period_{0};
  core::Deadline drain_deadline_{};
  std::atomic<bool> reloading_{false};
  std::thread reload_thread_;
  // Last: stopped first, before what its callback uses.
  std::mutex watch_mutex_;
  bool stopping_watch_ = false;  // guarded by watch_mutex_
  std::unique_ptr<ConfigWatch> watch_;  // guarded by watch_mutex_
};

}  // namespace

int check_config(const std::filesystem::path& config_file) {
  try {
    const auto cfg = config::load_config(config_file);
    if (cfg.tls.enabled) (void)net::make_server_tls_context(cfg.tls, cfg.source);
    for (const auto& w : config::config_warnings(cfg)) std::cerr << "warning: " << w << "\n";
    std::cout << config_file.string() << ": OK\n";
    return kExitOk;
  } catch (const std::exception& e) {
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
}

int run_daemon(const std::filesystem::path& config_file) {
  // Off before the configuration (and its secrets) is even read.
  disable_core_dumps();
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = std::make_shared<const config::Config>(config::load_config(config_file));
  } catch (const std::exception& e) {
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
  if (cfg->server.allow_core_dumps) enable_core_dumps();
  try {
    check_root_policy(cfg->server, cfg->source);
  } catch (const std::exception& e) {
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
  try {
    obs::init_logging(cfg->logging);
  } catch (const std::exception& e) {
    std::cerr << "xks-proxy: " << cfg->source.string() << ": " << e.what() << "\n";
    return kExitConfig;
  }
  obs::info("starting", {{"version", api::kVersion},
                         {"config", nlohmann::json::parse(config::describe_redacted(*cfg))}});
  for (const auto& w : config::config_warnings(*cfg)) obs::warn("config_warning", {{"detail", w}});

  ProxyMetrics::Options metrics_options;
  metrics_options.version = std::string(api::kVersion);
  ProxyMetrics metrics(std::move(metrics_options));
  auto engine = open_engine(*cfg, metrics);
  if (!engine) {
    const auto& err = engine.error();
    obs::error("hsm_open_failed", {{"error", err.message}, {"detail", err.detail}});
    std::cerr << "xks-proxy: " << cfg->source.string() << ": hsm: " << err.message << "\n";
    obs::flush();
    // Most reasons are configuration (module path, token, PIN); a supervisor
    // restarting in a loop would also repeat a refused login and lock the user.
    return kExitConfig;
  }
  try {
    Daemon daemon(config_file, cfg, std::move(*engine), metrics);
    return daemon.run();
  } catch (const std::exception& e) {
    obs::error("startup_failed", {{"error", e.what()}});
    obs::flush();
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
}

}  // namespace xks::app
