// The running proxy: HSM worker pool, health monitor, handler, server and the
// connection threads around one Runtime, with signal handling (SIGTERM/SIGINT
// drain and stop, SIGHUP reload), systemd notifications, the watchdog,
// session-ticket key rotation and an ordered shutdown.
#pragma once

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <filesystem>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "xks/app/config_watch.hpp"
#include "xks/app/handler.hpp"
#include "xks/app/health_monitor.hpp"
#include "xks/app/metrics_endpoint.hpp"
#include "xks/app/proxy_metrics.hpp"
#include "xks/app/runtime.hpp"
#include "xks/auth/sigv4.hpp"
#include "xks/config/reload_plan.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/net/server.hpp"

namespace xks::app {

class Daemon {
 public:
  // Opens every HSM of a configuration as one engine (new sessions, new
  // login). Called by a reload whose plan needs new HSM sessions, or when an
  // HSM is unavailable at reload.
  using EngineFactory = std::function<Result<std::shared_ptr<Engine>>(const config::Config&)>;

  // `engine` is already open on `cfg`'s HSMs. Nothing listens before run().
  Daemon(std::filesystem::path config_path, std::shared_ptr<const config::Config> cfg,
         std::shared_ptr<Engine> engine, ProxyMetrics& metrics, EngineFactory open_engine);
  ~Daemon();
  Daemon(const Daemon&) = delete;
  Daemon& operator=(const Daemon&) = delete;

  // Binds, drops privileges, serves until SIGTERM/SIGINT, drains. Returns the
  // process exit code.
  int run();

  struct ReloadResult {
    bool applied = false;
    std::string error;                       // why it was refused (applied false)
    std::optional<config::ReloadPlan> plan;  // set when the file loaded
    bool new_hsm_sessions = false;           // the engine was rebuilt
  };
  // Re-reads the configuration file and applies it by its plan, on the
  // calling thread; a file that does not load, or HSMs that do not open,
  // refuse it and the running configuration keeps serving.
  ReloadResult reload();
  // What SIGHUP does: reload() on the reload thread, unless one is running.
  void request_reload();

  std::shared_ptr<const Runtime> runtime() const { return runtime_.get(); }
  const core::BlockingPool& hsm_pool() const noexcept { return pool_; }
  const HealthMonitor& health() const noexcept { return health_; }

 private:
  // A connection io_context and what keeps its run() going while it is idle.
  struct IoWorker {
    boost::asio::io_context context{1};  // one thread: no strands needed on it
    boost::asio::executor_work_guard<boost::asio::io_context::executor_type> guard{
        context.get_executor()};
    // Watchdog heartbeats: posted by the main thread, counted by this one.
    std::atomic<std::uint64_t> heartbeats_run{0};
    std::uint64_t heartbeats_posted = 0;
    unsigned missed_ticks = 0;
  };
  static std::vector<std::unique_ptr<IoWorker>> make_io_workers(unsigned n);
  std::vector<boost::asio::io_context*> connection_contexts();

  std::shared_ptr<const Runtime> make_runtime(std::shared_ptr<const config::Config> cfg,
                                              std::shared_ptr<Engine> engine,
                                              std::shared_ptr<boost::asio::ssl::context> tls);
  void publish_tls_expiry(const config::Config& cfg);
  void log_plan(const config::ReloadPlan& plan);
  void wait_for_signal();
  void start_watchdog();
  void watchdog_tick();
  void schedule_ticket_rotation();
  void begin_shutdown(int signo);
  void wait_for_signal_while_stopping();
  void begin_drain();
  void poll_drain();
  double session_count(const std::string& hsm, std::size_t hsm::SessionCounts::*field) const;
  // reload.watch: a change of a file the configuration reads reloads as SIGHUP
  // does. Called at startup and after every applied reload (the files, the
  // setting itself and the debounce may have changed).
  void update_watch(const config::Config& cfg);
  void stop_watch();

  const std::filesystem::path config_path_;
  ProxyMetrics& metrics_;
  const EngineFactory open_engine_;
  core::BlockingPool pool_;
  auth::SigV4Verifier verifier_;
  RuntimeHolder runtime_;
  boost::asio::io_context ioc_;
  std::vector<std::unique_ptr<IoWorker>> io_workers_;
  HealthMonitor health_;
  XksHandler handler_;
  net::Server server_;
  std::unique_ptr<MetricsEndpoint> metrics_server_;
  std::vector<std::string> sampled_hsms_;  // HSMs with session samplers
  boost::asio::signal_set signals_;
  boost::asio::steady_timer drain_timer_;
  boost::asio::steady_timer shutdown_delay_timer_;
  bool draining_ = false;  // I/O thread of ioc_ only
  boost::asio::steady_timer watchdog_timer_;
  boost::asio::steady_timer rotation_timer_;
  std::chrono::microseconds watchdog_period_{0};
  core::Deadline drain_deadline_{};
  std::atomic<bool> reloading_{false};
  std::thread reload_thread_;
  // Last: stopped first, before what its callback uses.
  std::mutex watch_mutex_;
  bool stopping_watch_ = false;         // guarded by watch_mutex_
  std::unique_ptr<ConfigWatch> watch_;  // guarded by watch_mutex_
};

}  // namespace xks::app
