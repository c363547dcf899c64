#include "xks/app/proxy_metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <shared_mutex>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace xks::app {

// ---------------------------------------------------------------------------
// Enumerations

std::string_view api_label(http::Api api) noexcept {
  switch (api) {
    case http::Api::GetHealthStatus: return "GetHealthStatus";
    case http::Api::GetKeyMetadata: return "GetKeyMetadata";
    case http::Api::Encrypt: return "Encrypt";
    case http::Api::Decrypt: return "Decrypt";
  }
  return "unknown";
}

std::string_view to_string(HsmFunction f) noexcept {
  switch (f) {
    case HsmFunction::Encrypt: return "encrypt";
    case HsmFunction::Decrypt: return "decrypt";
    case HsmFunction::KeyAttributes: return "key_attributes";
    case HsmFunction::HealthCheck: return "health_check";
    case HsmFunction::GenerateRandom: return "generate_random";
  }
  return "unknown";
}

std::string_view to_string(PolicyDecision d) noexcept {
  switch (d) {
    case PolicyDecision::Allow: return "allow";
    case PolicyDecision::Deny: return "deny";
    case PolicyDecision::DryRunDeny: return "dry_run_deny";
  }
  return "deny";
}

std::string_view to_string(ThrottleReason r) noexcept {
  switch (r) {
    case ThrottleReason::QueueFull: return "queue_full";
    case ThrottleReason::Quota: return "quota";
    case ThrottleReason::SessionWait: return "session_wait";
  }
  return "queue_full";
}

// ---------------------------------------------------------------------------
// ProxyMetrics

namespace {

static_assert(static_cast<std::size_t>(ErrorName::InternalException) + 2 == kOutcomeCount,
              "kAllErrorNames must list every ErrorName in enum order");

constexpr std::array kTlsResults = {TlsHandshakeResult::Ok, TlsHandshakeResult::Timeout,
                                    TlsHandshakeResult::Protocol, TlsHandshakeResult::Certificate,
                                    TlsHandshakeResult::Other};
constexpr std::array kPolicyDecisions = {PolicyDecision::Allow, PolicyDecision::Deny,
                                         PolicyDecision::DryRunDeny};
constexpr std::array kThrottleReasons = {ThrottleReason::QueueFull, ThrottleReason::Quota,
                                         ThrottleReason::SessionWait};
constexpr std::array kApis = {http::Api::GetHealthStatus, http::Api::GetKeyMetadata,
                              http::Api::Encrypt, http::Api::Decrypt};
constexpr std::array kHsmFunctions = {HsmFunction::Encrypt, HsmFunction::Decrypt,
                                      HsmFunction::KeyAttributes, HsmFunction::HealthCheck,
                                      HsmFunction::GenerateRandom};
// key_backend.hpp's HealthStatus spellings, pre-created so all three series
// exist from the first scrape.
constexpr std::array<std::string_view, 3> kHealthStatuses = {"ACTIVE", "DEGRADED", "UNAVAILABLE"};

std::string_view outcome_label(std::size_t outcome) noexcept {
  return outcome == 0 ? std::string_view("ok") : xks::to_string(kAllErrorNames[outcome - 1]);
}

double unix_seconds(std::chrono::system_clock::time_point t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

// Field 22 of /proc/self/stat (clock ticks after boot) + btime of /proc/stat,
// as the Go and Python clients compute it; nullopt if /proc is not there.
std::optional<double> process_start_time() {
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return std::nullopt;
  // comm (field 2) may contain spaces and parentheses: skip to the last ')'.
  const auto close = line.rfind(')');
  if (close == std::string::npos) return std::nullopt;
  std::istringstream fields(line.substr(close + 1));
  std::string field;
  // After ')' come fields 3..; starttime is field 22, the 20th of these.
  for (int i = 3; i <= 22 && (fields >> field); ++i) {
  }
  if (!fields) return std::nullopt;
  double ticks = 0;
  try {
    ticks = std::stod(field);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  std::ifstream proc_stat("/proc/stat");
  std::string key;
  while (proc_stat >> key) {
    if (key == "btime") {
      double btime = 0;
      if (!(proc_stat >> btime)) return std::nullopt;
      const long hz = ::sysconf(_SC_CLK_TCK);
      if (hz <= 0) return std::nullopt;
      return btime + ticks / static_cast<double>(hz);
    }
    proc_stat.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
  }
  return std::nullopt;
}

double resident_memory_bytes() {
  std::ifstream statm("/proc/self/statm");
  double size = 0;
  double resident = 0;
  if (!(statm >> size >> resident)) return std::nan("");
  const long page = ::sysconf(_SC_PAGESIZE);
  return resident * static_cast<double>(page > 0 ? page : 4096);
}

}  // namespace

struct ProxyMetrics::KeystoreSlot {
  // One configured version of one key; sorted by (key, version).
  struct KeyVersion {
    std::string key;
    std::uint32_t version = 0;
    std::array<std::array<obs::Counter*, 2>, 2> ops{};  // [KeyOp][ok]
    std::array<obs::Gauge*, 2> last_used{};             // [KeyOp]
    std::array<std::atomic<bool>, 2> legacy_logged{};   // [LegacyLayout]
  };
  struct Credential {
    std::string access_key_id;
    obs::Gauge* last_used = nullptr;
    obs::Gauge* not_after = nullptr;  // null when the credential has no not_after
    obs::Gauge* issued = nullptr;     // null when the issue time is unknown
  };
  std::string uri_path;
  std::array<std::array<obs::Counter*, kOutcomeCount>, kApiCount> requests{};
  std::array<obs::Counter*, kPolicyDecisions.size()> policy{};
  // Per key store, so a reload of one never blocks requests to another; readers
  // only take it shared.
  mutable std::shared_mutex credentials_mutex;
  std::vector<Credential> credentials;
  std::array<obs::Counter*, 2> legacy{};  // [LegacyLayout]
  mutable std::shared_mutex key_versions_mutex;
  std::vector<std::unique_ptr<KeyVersion>> key_versions;
};

struct ProxyMetrics::HsmSlot {
  std::string name;
  std::array<obs::Histogram*, kHsmFunctionCount> calls{};
  // Guarded by registration_mutex_ (set_hsm_health only).
  std::vector<std::pair<std::string, obs::Gauge*>> health;
};

ProxyMetrics::ProxyMetrics(Options options)
    : options_(std::move(options)),
      requests_(registry_.counter("xks_proxy_requests_total",
                                  "XKS API requests by key store, API and outcome (ok or the "
                                  "spec's errorName).",
                                  {"keystore", "api", "outcome"})),
      request_duration_(registry_.histogram(
          "xks_proxy_request_duration_seconds",
          "Time from the request's arrival to its response, by API; KMS allows 250 ms.", {"api"},
          {obs::kLatencyBuckets.begin(), obs::kLatencyBuckets.end()})),
      hsm_call_duration_(registry_.histogram(
          "xks_proxy_hsm_call_duration_seconds", "Duration of PKCS#11 calls by HSM and function.",
          {"hsm", "function"}, {obs::kLatencyBuckets.begin(), obs::kLatencyBuckets.end()})),
      hsm_sessions_in_use_(registry_.callback_gauge("xks_proxy_hsm_sessions_in_use",
                                                    "PKCS#11 sessions leased right now.", {"hsm"})),
      hsm_sessions_open_(registry_.callback_gauge(
          "xks_proxy_hsm_sessions_open", "PKCS#11 sessions open (idle or leased).", {"hsm"})),
      hsm_queue_depth_(
          registry_.callback_gauge("xks_proxy_hsm_queue_depth", "HSM jobs waiting for a worker.")),
      hsm_workers_busy_(
          registry_.callback_gauge("xks_proxy_hsm_workers_busy", "HSM workers running a job.")),
      hsm_health_(registry_.gauge("xks_proxy_hsm_health",
                                  "1 for the HSM's current health status, 0 for the others.",
                                  {"hsm", "status"})),
      tls_handshakes_(registry_.counter("xks_proxy_tls_handshakes_total",
                                        "TLS handshakes by result (ok or the failure class).",
                                        {"result"})),
      connections_open_(
          registry_.gauge("xks_proxy_connections_open", "Client connections open right now.")),
      connections_total_(
          registry_.counter("xks_proxy_connections_total", "Client connections accepted.")),
      cert_expiry_(registry_.callback_gauge("xks_proxy_tls_certificate_expiry_seconds",
                                            "Unix time of the server certificate's notAfter.")),
      cert_days_remaining_(
          registry_.callback_gauge("xks_proxy_tls_certificate_days_remaining",
                                   "Whole days until the server certificate expires.")),
      credential_last_used_(registry_.gauge(
          "xks_proxy_credential_last_used_timestamp_seconds",
          "Unix time a SigV4 credential last signed a valid request; 0 if not since start.",
          {"keystore", "access_key_id"})),
      credential_not_after_(registry_.gauge("xks_proxy_credential_not_after_timestamp_seconds",
                                            "Unix time after which a SigV4 credential is refused.",
                                            {"keystore", "access_key_id"})),
      credential_issued_(registry_.gauge(
          "xks_proxy_credential_issued_timestamp_seconds",
          "Unix time a SigV4 credential's secret file was last written (its age for rotation).",
          {"keystore", "access_key_id"})),
      reloads_(registry_.counter("xks_proxy_config_reloads_total",
                                 "Configuration reloads (SIGHUP) by result: ok or refused.",
                                 {"result"})),
      last_reload_successful_(registry_.gauge(
          "xks_proxy_config_last_reload_successful",
          "1 if the last configuration reload was applied (or none was tried), 0 if refused.")),
      policy_decisions_(registry_.counter("xks_proxy_policy_decisions_total",
                                          "Authorization policy decisions by key store.",
                                          {"keystore", "decision"})),
      throttled_(registry_.counter("xks_proxy_throttled_total",
                                   "Requests refused with ThrottlingException, by reason.",
                                   {"reason"})),
      connections_dropped_(registry_.counter(
          "xks_proxy_connections_dropped_total",
          "Client connections the server refused or closed early, by cause.", {"cause"})),
      key_version_ops_(registry_.counter(
          "xks_proxy_key_version_operations_total",
          "Encrypt and Decrypt requests by key version and outcome (ok or error).",
          {"keystore", "key", "version", "operation", "outcome"})),
      key_version_last_used_(registry_.gauge(
          "xks_proxy_key_version_last_used_timestamp_seconds",
          "Unix time a key version last served an Encrypt or Decrypt; 0 if not since start.",
          {"keystore", "key", "version", "operation"})),
      legacy_decrypts_(registry_.counter(
          "xks_proxy_legacy_decrypts_total",
          "Ciphertexts of another proxy's layout decrypted (keystores[].legacy_layouts).",
          {"keystore", "layout"})) {
  if (!options_.now) options_.now = [] { return std::chrono::system_clock::now(); };

  for (const auto api : kApis) {
    request_duration_by_api_[static_cast<std::size_t>(api)] =
        &request_duration_.with({api_label(api)});
  }
  for (const auto r : kTlsResults) {
    tls_handshakes_by_result_[static_cast<std::size_t>(r)] = &tls_handshakes_.with({to_string(r)});
  }
  for (const auto r : kThrottleReasons) {
    throttled_by_reason_[static_cast<std::size_t>(r)] = &throttled_.with({to_string(r)});
  }
  for (std::size_t i = 0; i < kDropCauseCount; ++i) {
    dropped_by_cause_[i] = &connections_dropped_.with({to_string(static_cast<DropCause>(i))});
  }
  connections_open_child_ = &connections_open_.with({});
  connections_total_child_ = &connections_total_.with({});
  reloads_ok_ = &reloads_.with({"ok"});
  reloads_refused_ = &reloads_.with({"refused"});
  last_reload_successful_child_ = &last_reload_successful_.with({});
  last_reload_successful_child_->set(1.0);

  registry_.gauge("xks_proxy_build_info", "Always 1; the proxy's version as a label.", {"version"})
      .with({options_.version})
      .set(1.0);
  if (options_.process_metrics) {
    const auto started = process_start_time();
    registry_.gauge("process_start_time_seconds", "Start time of the process since unix epoch.")
        .with({})
        .set(started ? *started : unix_seconds(options_.now()));
    registry_.callback_gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
        .set({}, resident_memory_bytes);
  }

  std::lock_guard lock(registration_mutex_);
  register_keystore_locked("unknown");  // kUnknownKeystore
}

ProxyMetrics::~ProxyMetrics() = default;

ProxyMetrics::KeystoreSlot* ProxyMetrics::keystore_slot(std::size_t index) const noexcept {
  return index < kMaxKeystores ? keystores_[index].load(std::memory_order_acquire) : nullptr;
}

ProxyMetrics::HsmSlot* ProxyMetrics::hsm_slot(std::size_t index) const noexcept {
  return index < kMaxHsms ? hsms_[index].load(std::memory_order_acquire) : nullptr;
}

std::size_t ProxyMetrics::register_keystore_locked(const std::string& uri_path) {
  if (const auto it = keystore_by_path_.find(uri_path); it != keystore_by_path_.end()) {
    return it->second;
  }
  const auto index = keystore_storage_.size();
  if (index >= kMaxKeystores) {
    throw std::length_error("metrics: more than " + std::to_string(kMaxKeystores) + " key stores");
  }
  auto slot = std::make_unique<KeystoreSlot>();
  slot->uri_path = uri_path;
  for (const auto api : kApis) {
    for (std::size_t o = 0; o < kOutcomeCount; ++o) {
      slot->requests[static_cast<std::size_t>(api)][o] =
          &requests_.with({uri_path, api_label(api), outcome_label(o)});
    }
  }
  for (const auto d : kPolicyDecisions) {
    slot->policy[static_cast<std::size_t>(d)] = &policy_decisions_.with({uri_path, to_string(d)});
  }
  if (index != kUnknownKeystore) {
    for (const auto l : {config::LegacyLayout::AwsSample, config::LegacyLayout::SpecNoMetadata}) {
      slot->legacy[static_cast<std::size_t>(l)] =
          &legacy_decrypts_.with({uri_path, config::to_string(l)});
    }
  }
  keystores_[index].store(slot.get(), std::memory_order_release);
  keystore_storage_.push_back(std::move(slot));
  keystore_by_path_.emplace(uri_path, index);
  return index;
}

std::vector<std::size_t> ProxyMetrics::register_keystores(
    const std::vector<std::string>& uri_paths) {
  std::vector<std::size_t> indices;
  indices.reserve(uri_paths.size());
  std::lock_guard lock(registration_mutex_);
  for (const auto& path : uri_paths) indices.push_back(register_keystore_locked(path));
  return indices;
}

std::optional<std::size_t> ProxyMetrics::keystore_index(std::string_view uri_path) const {
  std::lock_guard lock(registration_mutex_);
  const auto it = keystore_by_path_.find(uri_path);
  if (it == keystore_by_path_.end()) return std::nullopt;
  return it->second;
}

void ProxyMetrics::record_request(std::size_t keystore, http::Api api,
                                  std::optional<ErrorName> error,
                                  std::chrono::nanoseconds duration) noexcept {
  const auto api_index = static_cast<std::size_t>(api);
  if (api_index >= kApiCount) return;
  const std::size_t outcome = error ? static_cast<std::size_t>(*error) + 1 : 0;
  if (outcome >= kOutcomeCount) return;
  auto* slot = keystore_slot(keystore);
  if (slot == nullptr) return;
  slot->requests[api_index][outcome]->inc();
  request_duration_by_api_[api_index]->observe(duration);
}

void ProxyMetrics::record_policy_decision(std::size_t keystore, PolicyDecision decision) noexcept {
  const auto d = static_cast<std::size_t>(decision);
  if (auto* slot = keystore_slot(keystore); slot != nullptr && d < slot->policy.size()) {
    slot->policy[d]->inc();
  }
}

void ProxyMetrics::set_credentials(std::size_t keystore,
                                   const std::vector<config::Credential>& credentials) {
  std::lock_guard registration(registration_mutex_);
  auto* slot = keystore_slot(keystore);
  if (slot == nullptr) return;
  std::unique_lock lock(slot->credentials_mutex);
  std::vector<KeystoreSlot::Credential> next;
  for (const auto& c : credentials) {
    KeystoreSlot::Credential entry;
    entry.access_key_id = c.access_key_id;
    entry.last_used = &credential_last_used_.with({slot->uri_path, c.access_key_id});
    if (c.not_after) {
      entry.not_after = &credential_not_after_.with({slot->uri_path, c.access_key_id});
      entry.not_after->set(unix_seconds(*c.not_after));
    }
    if (c.issued) {
      entry.issued = &credential_issued_.with({slot->uri_path, c.access_key_id});
      entry.issued->set(unix_seconds(*c.issued));
    }
    next.push_back(std::move(entry));
  }
  for (const auto& old : slot->credentials) {
    const std::array<std::string, 2> labels{slot->uri_path, old.access_key_id};
    const auto kept = std::find_if(next.begin(), next.end(), [&](const auto& n) {
      return n.access_key_id == old.access_key_id;
    });
    if (kept == next.end()) {
      credential_last_used_.remove(labels);
      credential_not_after_.remove(labels);
      credential_issued_.remove(labels);
    } else {
      // The reload dropped its not_after, or its issue time is no longer known.
      if (kept->not_after == nullptr && old.not_after != nullptr)
        credential_not_after_.remove(labels);
      if (kept->issued == nullptr && old.issued != nullptr) credential_issued_.remove(labels);
    }
  }
  slot->credentials = std::move(next);
}

void ProxyMetrics::record_credential_use(std::size_t keystore, std::string_view access_key_id,
                                         std::chrono::system_clock::time_point when) noexcept {
  auto* slot = keystore_slot(keystore);
  if (slot == nullptr) return;
  std::shared_lock lock(slot->credentials_mutex);
  for (const auto& c : slot->credentials) {
    if (c.access_key_id == access_key_id) {
      c.last_used->set(unix_seconds(when));
      return;
    }
  }
}

std::string_view to_string(KeyOp op) noexcept {
  return op == KeyOp::Encrypt ? "encrypt" : "decrypt";
}

void ProxyMetrics::set_key_versions(std::size_t keystore,
                                    const std::vector<config::KeyEntry>& keys) {
  std::lock_guard registration(registration_mutex_);
  auto* slot = keystore_slot(keystore);
  if (slot == nullptr) return;
  using Entry = KeystoreSlot::KeyVersion;
  auto less = [](const std::unique_ptr<Entry>& a, const std::unique_ptr<Entry>& b) {
    return std::tie(a->key, a->version) < std::tie(b->key, b->version);
  };
  std::vector<std::unique_ptr<Entry>> next;
  for (const auto& k : keys) {
    for (const auto& v : k.versions) {
      auto e = std::make_unique<Entry>();
      e->key = k.id;
      e->version = v.number;
      const std::string number = std::to_string(v.number);
      for (const auto op : {KeyOp::Encrypt, KeyOp::Decrypt}) {
        const auto o = static_cast<std::size_t>(op);
        e->ops[o][1] = &key_version_ops_.with({slot->uri_path, k.id, number, to_string(op), "ok"});
        e->ops[o][0] =
            &key_version_ops_.with({slot->uri_path, k.id, number, to_string(op), "error"});
        e->last_used[o] =
            &key_version_last_used_.with({slot->uri_path, k.id, number, to_string(op)});
      }
      next.push_back(std::move(e));
    }
  }
  std::sort(next.begin(), next.end(), less);
  std::unique_lock lock(slot->key_versions_mutex);
  for (const auto& old : slot->key_versions) {
    const auto kept = std::lower_bound(next.begin(), next.end(), old, less);
    if (kept != next.end() && (*kept)->key == old->key && (*kept)->version == old->version) {
      for (std::size_t i = 0; i < old->legacy_logged.size(); ++i) {
        (*kept)->legacy_logged[i].store(old->legacy_logged[i].load());
      }
      continue;
    }
    const std::string number = std::to_string(old->version);
    for (const auto op : {KeyOp::Encrypt, KeyOp::Decrypt}) {
      for (const char* outcome : {"ok", "error"}) {
        const std::array<std::string, 5> labels{slot->uri_path, old->key, number,
                                                std::string(to_string(op)), outcome};
        key_version_ops_.remove(labels);
      }
      const std::array<std::string, 4> labels{slot->uri_path, old->key, number,
                                              std::string(to_string(op))};
      key_version_last_used_.remove(labels);
    }
  }
  slot->key_versions = std::move(next);
}

namespace {
template <class Vec>
auto find_key_version(const Vec& entries, std::string_view key, std::uint32_t version) noexcept {
  const auto it =
      std::lower_bound(entries.begin(), entries.end(), std::pair{key, version},
                       [](const auto& e, const std::pair<std::string_view, std::uint32_t>& x) {
                         const std::string_view k = e->key;
                         return k < x.first || (k == x.first && e->version < x.second);
                       });
  return it != entries.end() && (*it)->key == key && (*it)->version == version ? it->get()
                                                                               : nullptr;
}
}  // namespace

void ProxyMetrics::record_key_version_use(std::size_t keystore, std::string_view key_id,
                                          std::uint32_t version, KeyOp op, bool ok,
                                          std::chrono::system_clock::time_point when) noexcept {
  auto* slot = keystore_slot(keystore);
  if (slot == nullptr) return;
  std::shared_lock lock(slot->key_versions_mutex);
  auto* e = find_key_version(slot->key_versions, key_id, version);
  if (e == nullptr) return;
  const auto o = static_cast<std::size_t>(op);
  e->ops[o][ok ? 1 : 0]->inc();
  if (ok) e->last_used[o]->set(unix_seconds(when));
}

bool ProxyMetrics::record_legacy_decrypt(std::size_t keystore, std::string_view key_id,
                                         config::LegacyLayout layout) noexcept {
  auto* slot = keystore_slot(keystore);
  const auto l = static_cast<std::size_t>(layout);
  if (slot == nullptr || l >= slot->legacy.size() || slot->legacy[l] == nullptr) return false;
  slot->legacy[l]->inc();
  std::shared_lock lock(slot->key_versions_mutex);
  // Legacy ciphertexts always belong to version 1.
  auto* e = find_key_version(slot->key_versions, key_id, 1);
  return e != nullptr && !e->legacy_logged[l].exchange(true);
}

std::size_t ProxyMetrics::register_hsm_locked(const std::string& name) {
  if (const auto it = hsm_by_name_.find(name); it != hsm_by_name_.end()) return it->second;
  const auto index = hsm_storage_.size();
  if (index >= kMaxHsms) {
    throw std::length_error("metrics: more than " + std::to_string(kMaxHsms) + " HSMs");
  }
  auto slot = std::make_unique<HsmSlot>();
  slot->name = name;
  for (const auto f : kHsmFunctions) {
    slot->calls[static_cast<std::size_t>(f)] = &hsm_call_duration_.with({name, to_string(f)});
  }
  for (const auto status : kHealthStatuses) {
    slot->health.emplace_back(std::string(status), &hsm_health_.with({name, status}));
  }
  hsms_[index].store(slot.get(), std::memory_order_release);
  hsm_storage_.push_back(std::move(slot));
  hsm_by_name_.emplace(name, index);
  return index;
}

std::vector<std::size_t> ProxyMetrics::register_hsms(const std::vector<std::string>& names) {
  std::vector<std::size_t> indices;
  indices.reserve(names.size());
  std::lock_guard lock(registration_mutex_);
  for (const auto& name : names) indices.push_back(register_hsm_locked(name));
  return indices;
}

std::optional<std::size_t> ProxyMetrics::hsm_index(std::string_view name) const {
  std::lock_guard lock(registration_mutex_);
  const auto it = hsm_by_name_.find(name);
  if (it == hsm_by_name_.end()) return std::nullopt;
  return it->second;
}

void ProxyMetrics::record_hsm_call(std::size_t hsm, HsmFunction function,
                                   std::chrono::nanoseconds duration) noexcept {
  const auto f = static_cast<std::size_t>(function);
  if (auto* slot = hsm_slot(hsm); slot != nullptr && f < kHsmFunctionCount) {
    slot->calls[f]->observe(duration);
  }
}

void ProxyMetrics::record_reload(bool applied) noexcept {
  (applied ? reloads_ok_ : reloads_refused_)->inc();
  last_reload_successful_child_->set(applied ? 1.0 : 0.0);
}

void ProxyMetrics::set_hsm_health(std::string_view hsm, std::string_view status) {
  std::lock_guard lock(registration_mutex_);
  auto* slot = hsms_[register_hsm_locked(std::string(hsm))].load(std::memory_order_relaxed);
  bool found = false;
  for (auto& [name, gauge] : slot->health) {
    const bool current = name == status;
    found = found || current;
    gauge->set(current ? 1.0 : 0.0);
  }
  if (!found) {
    auto& gauge = hsm_health_.with({hsm, status});
    gauge.set(1.0);
    slot->health.emplace_back(std::string(status), &gauge);
  }
}

void ProxyMetrics::set_hsm_session_samplers(std::string_view hsm, std::function<double()> in_use,
                                            std::function<double()> open) {
  hsm_sessions_in_use_.set({hsm}, std::move(in_use));
  hsm_sessions_open_.set({hsm}, std::move(open));
}

void ProxyMetrics::set_worker_pool_samplers(std::function<double()> queue_depth,
                                            std::function<double()> workers_busy) {
  hsm_queue_depth_.set({}, std::move(queue_depth));
  hsm_workers_busy_.set({}, std::move(workers_busy));
}

void ProxyMetrics::record_throttled(ThrottleReason reason) noexcept {
  const auto r = static_cast<std::size_t>(reason);
  if (r < throttled_by_reason_.size()) throttled_by_reason_[r]->inc();
}

void ProxyMetrics::record_tls_handshake(TlsHandshakeResult result) noexcept {
  const auto r = static_cast<std::size_t>(result);
  if (r < tls_handshakes_by_result_.size()) tls_handshakes_by_result_[r]->inc();
}

void ProxyMetrics::connection_opened() noexcept {
  connections_total_child_->inc();
  connections_open_child_->inc();
}

void ProxyMetrics::connection_closed() noexcept { connections_open_child_->dec(); }

void ProxyMetrics::record_connection_dropped(DropCause cause) noexcept {
  const auto c = static_cast<std::size_t>(cause);
  if (c < dropped_by_cause_.size()) dropped_by_cause_[c]->inc();
}

void ProxyMetrics::set_tls_certificate_not_after(std::chrono::system_clock::time_point not_after) {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(not_after.time_since_epoch()).count();
  cert_not_after_.store(static_cast<std::int64_t>(seconds), std::memory_order_relaxed);
  // Sampled so days_remaining counts down between reloads without a timer.
  cert_expiry_.set(
      {}, [this] { return static_cast<double>(cert_not_after_.load(std::memory_order_relaxed)); });
  cert_days_remaining_.set({}, [this] {
    const auto now =
        std::chrono::duration_cast<std::chrono::seconds>(options_.now().time_since_epoch()).count();
    const auto left = cert_not_after_.load(std::memory_order_relaxed) - now;
    return std::floor(static_cast<double>(left) / 86400.0);
  });
}

std::string ProxyMetrics::render() const { return registry_.render(); }

}  // namespace xks::app
