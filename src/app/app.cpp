#include "xks/app/app.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <iostream>
#include <thread>

#include "xks/api/service.hpp"
#include "xks/api/version.hpp"
#include "xks/app/handler.hpp"
#include "xks/app/health_monitor.hpp"
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

constexpr std::size_t kHsmQueueCapacity = 1024;
constexpr auto kDrainTimeout = 10s;

// Core dumps of this process could hold plaintext, PINs and SigV4 secrets.
void disable_core_dumps() {
  const rlimit none{0, 0};
  setrlimit(RLIMIT_CORE, &none);
  prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
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
      } else if (prev->enabled != key.enabled) {
        changes.push_back(ks.uri_path + ": key " + key.id + (key.enabled ? " enabled" : " disabled"));
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
  return changes;
}

class Daemon {
 public:
  Daemon(std::shared_ptr<const config::Config> cfg, std::unique_ptr<hsm::KeyBackend> backend,
         unsigned hsm_workers)
      : backend_(std::move(backend)),
        pool_(hsm_workers, kHsmQueueCapacity, "xks-hsm"),
        service_(*backend_),
        verifier_(),
        runtime_(std::make_shared<const Runtime>(cfg)),
        ioc_(static_cast<int>(io_threads(*cfg))),
        health_(ioc_, pool_, *backend_, cfg->health),
        tls_(make_tls(*cfg)),
        handler_(runtime_, service_, pool_, health_, verifier_),
        server_(ioc_, cfg->server.limits, cfg->tls.enabled ? &tls_ : nullptr, handler_),
        signals_(ioc_, SIGTERM, SIGINT, SIGHUP),
        drain_timer_(ioc_) {}

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
    const auto endpoint = server_.local_endpoint();
    health_.start();
    server_.start();
    wait_for_signal();
    obs::info("listening", {{"address", endpoint.address().to_string()},
                            {"port", endpoint.port()},
                            {"tls", cfg->tls.enabled},
                            {"ioThreads", io_threads(*cfg)},
                            {"hsmWorkers", pool_.threads()}});
    sd_notify(0, "READY=1");

    std::vector<std::thread> threads;
    const unsigned n = io_threads(*cfg);
    for (unsigned i = 1; i < n; ++i) threads.emplace_back([this] { ioc_.run(); });
    ioc_.run();
    for (auto& t : threads) t.join();

    // Ordered shutdown: no more HSM jobs, then the backend closes its sessions
    // and finalizes the module (in ~Daemon).
    pool_.stop();
    obs::info("stopped", {{"openConnections", server_.open_connections()}});
    obs::flush();
    return kExitOk;
  }

  void set_config_path(std::filesystem::path p) { config_path_ = std::move(p); }

 private:
  void wait_for_signal() {
    signals_.async_wait([this](const boost::system::error_code& ec, int signo) {
      if (ec) return;  // cancelled at shutdown
      if (signo == SIGHUP) {
        reload();
        wait_for_signal();
        return;
      }
      begin_shutdown(signo);
    });
  }

  void reload() {
    sd_notify(0, "RELOADING=1");
    const auto old_rt = runtime_.get();
    try {
      auto fresh = std::make_shared<const config::Config>(config::load_config(config_path_));
      auto tls = make_tls(*fresh);
      const auto& old_cfg = *old_rt->config;
      if (fresh->server.listen_host != old_cfg.server.listen_host ||
          fresh->server.listen_port != old_cfg.server.listen_port ||
          fresh->tls.enabled != old_cfg.tls.enabled) {
        obs::warn("reload_partial", {{"detail", "server.listen and tls.enabled take effect at the next restart"}});
      }
      if (describe_redacted_hsms(*fresh) != describe_redacted_hsms(old_cfg)) {
        obs::warn("reload_partial", {{"detail", "hsm settings take effect at the next restart"}});
      }
      auto changes = describe_changes(old_cfg, *fresh);
      runtime_.set(std::make_shared<const Runtime>(fresh));
      if (tls) tls_.replace(std::move(tls));
      server_.set_limits(fresh->server.limits);
      obs::init_logging(fresh->logging);
      obs::info("reloaded", {{"config", fresh->source.string()}, {"changes", changes}});
    } catch (const std::exception& e) {
      obs::error("reload_refused", {{"error", e.what()},
                                    {"detail", "the previous configuration keeps serving"}});
    }
    sd_notify(0, "READY=1");
  }

  static std::string describe_redacted_hsms(const config::Config& cfg) {
    std::string out;
    for (const auto& h : cfg.hsms) {
      out += h.name + '|' + h.module.string() + '|' + h.token_label.value_or("") + '|' +
             std::to_string(h.slot_id.value_or(0)) + '|' + h.pin_source.describe() + '|' +
             std::to_string(h.sessions) + '|' + h.health_key + '|' +
             std::to_string(static_cast<int>(h.iv)) + ';';
    }
    return out;
  }

  void begin_shutdown(int signo) {
    sd_notify(0, "STOPPING=1");
    obs::info("stopping", {{"signal", signo == SIGTERM ? "SIGTERM" : "SIGINT"},
                           {"requestsInFlight", server_.requests_in_flight()}});
    server_.stop_accepting();
    server_.begin_drain();
    health_.stop();
    drain_deadline_ = core::SteadyClock::now() + kDrainTimeout;
    poll_drain();
  }

  // In-flight requests finish (their responses say Connection: close); idle
  // keep-alive connections are simply closed when the io_context stops.
  void poll_drain() {
    if (server_.requests_in_flight() == 0 || core::SteadyClock::now() >= drain_deadline_) {
      if (server_.requests_in_flight() != 0) {
        obs::warn("drain_timeout", {{"requestsInFlight", server_.requests_in_flight()}});
      }
      ioc_.stop();
      return;
    }
    drain_timer_.expires_after(5ms);
    drain_timer_.async_wait([this](const boost::system::error_code&) { poll_drain(); });
  }

  std::filesystem::path config_path_;
  std::unique_ptr<hsm::KeyBackend> backend_;
  core::BlockingPool pool_;
  api::XksService service_;
  auth::SigV4Verifier verifier_;
  RuntimeHolder runtime_;
  asio::io_context ioc_;
  HealthMonitor health_;
  net::TlsContextProvider tls_;
  XksHandler handler_;
  net::Server server_;
  asio::signal_set signals_;
  asio::steady_timer drain_timer_;
  core::Deadline drain_deadline_{};
};

}  // namespace

namespace {
Result<std::unique_ptr<hsm::KeyBackend>> open_backend(const config::Config& cfg) {
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
  auto multi = hsm::MultiHsmBackend::open(cfg.hsms, options);
  if (!multi) return std::move(multi).error();
  return std::unique_ptr<hsm::KeyBackend>(std::move(*multi));
}

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
  disable_core_dumps();
  std::shared_ptr<const config::Config> cfg;
  try {
    cfg = std::make_shared<const config::Config>(config::load_config(config_file));
  } catch (const std::exception& e) {
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
  obs::init_logging(cfg->logging);
  obs::info("starting", {{"version", api::kVersion},
                         {"config", nlohmann::json::parse(config::describe_redacted(*cfg))}});
  for (const auto& w : config::config_warnings(*cfg)) obs::warn("config_warning", {{"detail", w}});

  auto backend = open_backend(*cfg);
  if (!backend) {
    const auto& err = backend.error();
    obs::error("hsm_open_failed", {{"error", err.message}, {"detail", err.detail}});
    std::cerr << "xks-proxy: " << cfg->source.string() << ": hsm: " << err.message << "\n";
    obs::flush();
    // Most reasons are configuration (module path, token, PIN); a supervisor
    // restarting in a loop would also repeat a refused login and lock the user.
    return kExitConfig;
  }
  unsigned workers = 0;
  for (const auto& h : cfg->hsms) workers += h.sessions;

  try {
    Daemon daemon(cfg, std::move(*backend), workers);
    daemon.set_config_path(config_file);
    return daemon.run();
  } catch (const std::exception& e) {
    obs::error("startup_failed", {{"error", e.what()}});
    obs::flush();
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
}

}  // namespace xks::app
