// The proxy's metrics: every metric name, label and HELP text the proxy
// exports, and the recording methods the request path, the HSM layer and the
// XKS listener call. Built on the generic obs registry, which renders them.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/error.hpp"
#include "xks/http/router.hpp"
#include "xks/net/server_events.hpp"
#include "xks/obs/metrics.hpp"

namespace xks::app {

inline constexpr std::size_t kApiCount = 4;
static_assert(static_cast<std::size_t>(http::Api::Decrypt) + 1 == kApiCount,
              "http::Api changed: update kApiCount and api_label()");
// The spec's operation name, e.g. "Encrypt" (same as http::to_string).
std::string_view api_label(http::Api api) noexcept;

// Outcome of a request: nullopt means "ok", otherwise the spec's errorName.
inline constexpr std::size_t kOutcomeCount = std::size(kAllErrorNames) + 1;

enum class HsmFunction { Encrypt, Decrypt, KeyAttributes, HealthCheck, GenerateRandom };
inline constexpr std::size_t kHsmFunctionCount = 5;
std::string_view to_string(HsmFunction f) noexcept;  // "encrypt", "key_attributes", ...

enum class PolicyDecision { Allow, Deny, DryRunDeny };
std::string_view to_string(PolicyDecision d) noexcept;  // "allow", "deny", "dry_run_deny"

enum class ThrottleReason { QueueFull, Quota, SessionWait };
std::string_view to_string(ThrottleReason r) noexcept;  // "queue_full", "quota", "session_wait"

// Reported by net::Server through ServerEvents; spelled here as the metrics label them.
using net::DropCause;
using net::kDropCauseCount;
using net::TlsHandshakeResult;

// One instance per process, created by the app and passed by reference. All
// methods are thread-safe. The `record_*` methods are the hot path: array
// indexing plus relaxed atomics, no allocation, no lock (credential use takes
// its key store's shared lock). Indices come from register_keystores() /
// register_hsms() and stay valid for the life of the object.
// What a key version did: Encrypt (it is current) or Decrypt.
enum class KeyOp { Encrypt, Decrypt };
std::string_view to_string(KeyOp op) noexcept;  // "encrypt", "decrypt"

class ProxyMetrics final : public net::ServerEvents {
 public:
  struct Options {
    std::string version = "unknown";  // xks_proxy_build_info{version}
    // Wall clock for days-remaining gauges and process start time; tests fix it.
    std::function<std::chrono::system_clock::time_point()> now;
    bool process_metrics = true;  // process_start_time_seconds, process_resident_memory_bytes
  };

  static constexpr std::size_t kMaxKeystores = 256;
  static constexpr std::size_t kMaxHsms = 64;
  // Requests that never reached a key store (e.g. InvalidUriPathException):
  // keystore="unknown". Registered key stores start at index 1.
  static constexpr std::size_t kUnknownKeystore = 0;

  explicit ProxyMetrics(Options options);
  ~ProxyMetrics() override;
  ProxyMetrics(const ProxyMetrics&) = delete;
  ProxyMetrics& operator=(const ProxyMetrics&) = delete;

  // -- key stores ----------------------------------------------------------
  // Registers key stores by uri_path and returns their indices, in order.
  // Reload-safe: a uri_path seen before gets its old index and keeps its
  // counters; key stores dropped by a reload keep their (frozen) series.
  // Throws std::length_error beyond kMaxKeystores distinct paths.
  std::vector<std::size_t> register_keystores(const std::vector<std::string>& uri_paths);
  std::optional<std::size_t> keystore_index(std::string_view uri_path) const;

  // xks_proxy_requests_total{keystore,api,outcome} and
  // xks_proxy_request_duration_seconds{api}. Unknown indices are ignored.
  void record_request(std::size_t keystore, http::Api api, std::optional<ErrorName> error,
                      std::chrono::nanoseconds duration) noexcept;
  // xks_proxy_policy_decisions_total{keystore,decision}
  void record_policy_decision(std::size_t keystore, PolicyDecision decision) noexcept;

  // Replaces the key store's credential series (reload): reads access_key_id
  // and not_after only. Series of credentials no longer present disappear;
  // last-used times of those still present are kept.
  void set_credentials(std::size_t keystore, const std::vector<config::Credential>& credentials);
  // Also xks_proxy_credential_issued_timestamp_seconds for credentials whose
  // issue time is known (the secret file's mtime).
  // xks_proxy_credential_last_used_timestamp_seconds; unknown ids are ignored.
  void record_credential_use(std::size_t keystore, std::string_view access_key_id,
                             std::chrono::system_clock::time_point when) noexcept;

  // -- key versions --------------------------------------------------------
  // Replaces the key store's key version series (startup, reload): one set per
  // version of each configured key, so cardinality is bounded by the
  // configuration. Series of versions no longer listed disappear; the others
  // keep their values.
  void set_key_versions(std::size_t keystore, const std::vector<config::KeyEntry>& keys);
  // xks_proxy_key_version_operations_total{keystore,key,version,operation,outcome}
  // (outcome ok|error) and, when ok,
  // xks_proxy_key_version_last_used_timestamp_seconds{keystore,key,version,operation}.
  // Versions that are not configured are ignored.
  void record_key_version_use(std::size_t keystore, std::string_view key_id, std::uint32_t version,
                              KeyOp op, bool ok,
                              std::chrono::system_clock::time_point when) noexcept;
  // xks_proxy_legacy_decrypts_total{keystore,layout}: a ciphertext of another
  // proxy decrypted. True the first time since start for this key and layout
  // (the caller logs it once).
  bool record_legacy_decrypt(std::size_t keystore, std::string_view key_id,
                             config::LegacyLayout layout) noexcept;

  // -- HSMs ----------------------------------------------------------------
  // Registers HSMs by name (idempotent, like register_keystores). Throws
  // std::length_error beyond kMaxHsms.
  std::vector<std::size_t> register_hsms(const std::vector<std::string>& names);
  std::optional<std::size_t> hsm_index(std::string_view name) const;

  // xks_proxy_hsm_call_duration_seconds{hsm,function}
  void record_hsm_call(std::size_t hsm, HsmFunction function,
                       std::chrono::nanoseconds duration) noexcept;
  // xks_proxy_hsm_health{hsm,status}: 1 for `status` (e.g. "ACTIVE"), 0 for the
  // other statuses of that HSM. Registers the HSM if needed. Not hot path.
  void set_hsm_health(std::string_view hsm, std::string_view status);
  // xks_proxy_hsm_sessions_in_use / _open{hsm}, sampled at scrape. Pass empty
  // functions before destroying what they capture (e.g. the session pool).
  void set_hsm_session_samplers(std::string_view hsm, std::function<double()> in_use,
                                std::function<double()> open);
  // xks_proxy_hsm_queue_depth and xks_proxy_hsm_workers_busy, sampled at scrape.
  void set_worker_pool_samplers(std::function<double()> queue_depth,
                                std::function<double()> workers_busy);
  // xks_proxy_throttled_total{reason}
  void record_throttled(ThrottleReason reason) noexcept;

  // -- connections and TLS -------------------------------------------------
  void record_tls_handshake(TlsHandshakeResult result) noexcept;
  // xks_proxy_connections_total and xks_proxy_connections_open.
  void connection_opened() noexcept;
  void connection_closed() noexcept;
  // xks_proxy_connections_dropped_total{cause}
  void record_connection_dropped(DropCause cause) noexcept;
  // xks_proxy_tls_certificate_expiry_seconds (unix time of notAfter) and
  // xks_proxy_tls_certificate_days_remaining (whole days, computed at scrape,
  // negative once expired). Call again after a certificate reload.
  void set_tls_certificate_not_after(std::chrono::system_clock::time_point not_after);

  // -- configuration -------------------------------------------------------
  // xks_proxy_config_reloads_total{result="ok"|"refused"} and
  // xks_proxy_config_last_reload_successful (1 until a reload is refused, 1
  // again after the next one that applies).
  void record_reload(bool applied) noexcept;

  // -- net::ServerEvents: the XKS listener's connections ---------------------
  void on_connection_opened() noexcept override { connection_opened(); }
  void on_connection_closed() noexcept override { connection_closed(); }
  void on_tls_handshake(TlsHandshakeResult result) noexcept override {
    record_tls_handshake(result);
  }
  void on_connection_dropped(DropCause cause) noexcept override {
    record_connection_dropped(cause);
  }

  // -- exposition ----------------------------------------------------------
  std::string render() const;
  // For metrics that do not exist yet; register them at startup.
  obs::Registry& registry() noexcept { return registry_; }
  const obs::Registry& registry() const noexcept { return registry_; }

 private:
  struct KeystoreSlot;
  struct HsmSlot;
  KeystoreSlot* keystore_slot(std::size_t index) const noexcept;
  HsmSlot* hsm_slot(std::size_t index) const noexcept;
  std::size_t register_keystore_locked(const std::string& uri_path);
  std::size_t register_hsm_locked(const std::string& name);

  Options options_;
  obs::Registry registry_;

  obs::CounterFamily& requests_;
  obs::HistogramFamily& request_duration_;
  obs::HistogramFamily& hsm_call_duration_;
  obs::CallbackGaugeFamily& hsm_sessions_in_use_;
  obs::CallbackGaugeFamily& hsm_sessions_open_;
  obs::CallbackGaugeFamily& hsm_queue_depth_;
  obs::CallbackGaugeFamily& hsm_workers_busy_;
  obs::GaugeFamily& hsm_health_;
  obs::CounterFamily& tls_handshakes_;
  obs::GaugeFamily& connections_open_;
  obs::CounterFamily& connections_total_;
  obs::CallbackGaugeFamily& cert_expiry_;
  obs::CallbackGaugeFamily& cert_days_remaining_;
  obs::GaugeFamily& credential_last_used_;
  obs::GaugeFamily& credential_not_after_;
  obs::GaugeFamily& credential_issued_;
  obs::CounterFamily& reloads_;
  obs::GaugeFamily& last_reload_successful_;
  obs::CounterFamily& policy_decisions_;
  obs::CounterFamily& throttled_;
  obs::CounterFamily& connections_dropped_;
  obs::CounterFamily& key_version_ops_;
  obs::GaugeFamily& key_version_last_used_;
  obs::CounterFamily& legacy_decrypts_;

  // Pre-resolved children for the label-free and enumerated metrics.
  std::array<obs::Histogram*, kApiCount> request_duration_by_api_{};
  std::array<obs::Counter*, net::kTlsHandshakeResultCount> tls_handshakes_by_result_{};
  std::array<obs::Counter*, 3> throttled_by_reason_{};
  std::array<obs::Counter*, kDropCauseCount> dropped_by_cause_{};
  obs::Gauge* connections_open_child_ = nullptr;
  obs::Counter* connections_total_child_ = nullptr;
  obs::Counter* reloads_ok_ = nullptr;
  obs::Counter* reloads_refused_ = nullptr;
  obs::Gauge* last_reload_successful_child_ = nullptr;
  std::atomic<std::int64_t> cert_not_after_{0};

  // Serializes registration and reload-time setters; never taken by record_*.
  mutable std::mutex registration_mutex_;
  std::map<std::string, std::size_t, std::less<>> keystore_by_path_;
  std::map<std::string, std::size_t, std::less<>> hsm_by_name_;
  // Slots are published once and never freed before ~Metrics, so a reader that
  // loaded a pointer can use it without a lock.
  std::array<std::atomic<KeystoreSlot*>, kMaxKeystores> keystores_{};
  std::array<std::atomic<HsmSlot*>, kMaxHsms> hsms_{};
  std::vector<std::unique_ptr<KeystoreSlot>> keystore_storage_;
  std::vector<std::unique_ptr<HsmSlot>> hsm_storage_;
};

}  // namespace xks::app
