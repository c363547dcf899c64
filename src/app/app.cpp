#include "xks/app/app.hpp"

#include <sys/prctl.h>
#include <sys/resource.h>
#include <systemd/sd-daemon.h>

#include <iostream>

#include "xks/api/version.hpp"
#include "xks/app/daemon.hpp"
#include "xks/app/instrumented_backend.hpp"
#include "xks/app/privileges.hpp"
#include "xks/config/config.hpp"
#include "xks/hsm/ckr.hpp"
#include "xks/hsm/events.hpp"
#include "xks/hsm/multi_hsm_backend.hpp"
#include "xks/net/tls_context.hpp"
#include "xks/obs/log.hpp"

namespace xks::app {

namespace {

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
  obs::warn("core_dumps_allowed", {{"detail",
                                    "server.allow_core_dumps is true: a core dump may "
                                    "contain plaintext, the HSM PIN and SigV4 secrets"}});
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
      fields["detail"] =
          "login refused; no further attempt until the configuration is fixed "
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
    Daemon daemon(config_file, cfg, std::move(*engine), metrics,
                  [&metrics](const config::Config& next) { return open_engine(next, metrics); });
    return daemon.run();
  } catch (const std::exception& e) {
    obs::error("startup_failed", {{"error", e.what()}});
    obs::flush();
    std::cerr << "xks-proxy: " << e.what() << "\n";
    return kExitConfig;
  }
}

}  // namespace xks::app
