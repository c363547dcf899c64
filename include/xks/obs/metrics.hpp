// Prometheus metrics: a small lock-light registry and the proxy's `Metrics`
// facade. Exposition is the text format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/).
//
// Hot-path rule: recording never allocates and never takes a registry-wide
// lock. Label combinations are resolved once (a `Family::with()` handle, or a
// pre-created child behind an array index in `Metrics`) and then only atomics
// are touched. Locks are taken when registering children and when scraping.
//
// Never put a secret, a PIN or key material in a label value: label values are
// exported verbatim to anyone who can scrape.
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
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/error.hpp"
#include "xks/http/router.hpp"  // http::Api: only the enum, so no link dependency

namespace xks::obs {

// ---------------------------------------------------------------------------
// Exposition helpers (exposed for tests and for custom collectors).

// A sample value as Prometheus parses it: integers without exponent (so unix
// timestamps stay readable), otherwise the shortest round-trip form; "+Inf",
// "-Inf", "NaN".
std::string format_value(double value);
// Label value escaping: backslash, double quote and newline.
std::string escape_label_value(std::string_view value);
// HELP text escaping: backslash and newline.
std::string escape_help(std::string_view help);

// ---------------------------------------------------------------------------
// Children: what a handle points to.

class Counter {
 public:
  void inc(std::uint64_t n = 1) noexcept { value_.fetch_add(n, std::memory_order_relaxed); }
  std::uint64_t value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<std::uint64_t> value_{0};
};

class Gauge {
 public:
  void set(double v) noexcept { value_.store(v, std::memory_order_relaxed); }
  void add(double d) noexcept { value_.fetch_add(d, std::memory_order_relaxed); }
  void inc() noexcept { add(1.0); }
  void dec() noexcept { add(-1.0); }
  double value() const noexcept { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Fixed buckets; `observe` is one bucket increment plus one CAS on the sum.
// Buckets are stored non-cumulative and summed at scrape, so `_count` always
// equals the `+Inf` bucket even while observations race with a scrape.
class Histogram {
 public:
  // Upper bounds, strictly ascending and finite; +Inf is implicit.
  explicit Histogram(std::span<const double> upper_bounds);

  // A value equal to a bound lands in that bound's bucket (Prometheus `le`).
  void observe(double value) noexcept;
  void observe(std::chrono::nanoseconds duration) noexcept {
    observe(std::chrono::duration<double>(duration).count());
  }

  struct Snapshot {
    std::vector<std::uint64_t> cumulative;  // one per bound, then +Inf
    double sum = 0.0;
    std::uint64_t count = 0;
  };
  Snapshot snapshot() const;
  std::span<const double> upper_bounds() const noexcept { return bounds_; }

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<std::uint64_t>[]> buckets_;  // bounds_.size() + 1
  std::atomic<double> sum_{0.0};
};

// ---------------------------------------------------------------------------
// Families: one metric name, a fixed list of label names, one child per
// combination of label values.

class Collector {
 public:
  Collector(std::string name, std::string help, std::vector<std::string> label_names);
  virtual ~Collector() = default;
  Collector(const Collector&) = delete;
  Collector& operator=(const Collector&) = delete;

  const std::string& name() const noexcept { return name_; }
  // Appends this metric's HELP, TYPE and samples; nothing if it has no samples.
  virtual void render(std::string& out) const = 0;

 protected:
  // `{a="x",b="y"` without the closing brace, or empty when there are no labels;
  // the caller appends `extra` (e.g. `le="0.5"`) and closes.
  std::string label_prefix(std::span<const std::string> values) const;
  static std::string close_labels(const std::string& prefix, std::string_view extra);
  void render_header(std::string& out, std::string_view type) const;
  void check_arity(std::size_t n) const;

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
};

enum class MetricType { Counter, Gauge, Histogram };

template <class Child>
class Family final : public Collector {
 public:
  // `bucket_bounds` is used by histogram families only.
  Family(std::string name, std::string help, std::vector<std::string> label_names,
         std::vector<double> bucket_bounds = {});

  // The child for these label values (created on first use). The reference is
  // stable until remove() of the same values: take it once, record through it.
  Child& with(std::span<const std::string> values);
  Child& with(std::initializer_list<std::string_view> values);
  // Drops a child so its series disappears (e.g. a credential removed by a
  // reload). Nobody may still hold its reference.
  void remove(std::span<const std::string> values);

  void render(std::string& out) const override;

 private:
  struct Entry {
    std::vector<std::string> values;
    std::unique_ptr<Child> child;
  };
  std::vector<double> bounds_;
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // registration order = exposition order
  std::map<std::vector<std::string>, Child*> index_;
};

using CounterFamily = Family<Counter>;
using GaugeFamily = Family<Gauge>;
using HistogramFamily = Family<Histogram>;

// A gauge whose children are evaluated at scrape time (pool occupancy, RSS).
// Callbacks run under this family's lock on the scraping thread: they must be
// cheap, thread-safe and must not call back into the registry.
class CallbackGaugeFamily final : public Collector {
 public:
  using Callback = std::function<double()>;
  using Collector::Collector;

  // Installs or replaces the callback for these label values; an empty callback
  // removes the series. Once this returns, the previous callback is no longer
  // running and will not be called again (safe to destroy what it captured).
  void set(std::span<const std::string> values, Callback callback);
  void set(std::initializer_list<std::string_view> values, Callback callback);

  void render(std::string& out) const override;

 private:
  struct Entry {
    std::vector<std::string> values;
    Callback callback;
  };
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;
};

// Owns collectors and renders them in registration order.
class Registry {
 public:
  CounterFamily& counter(std::string name, std::string help, std::vector<std::string> labels = {});
  GaugeFamily& gauge(std::string name, std::string help, std::vector<std::string> labels = {});
  HistogramFamily& histogram(std::string name, std::string help, std::vector<std::string> labels,
                             std::vector<double> bucket_bounds);
  CallbackGaugeFamily& callback_gauge(std::string name, std::string help,
                                      std::vector<std::string> labels = {});

  std::string render() const;

 private:
  template <class T, class... Args>
  T& add(Args&&... args);

  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Collector>> collectors_;
};

// ---------------------------------------------------------------------------
// The proxy's metrics.

// Bucket bounds (seconds) chosen to show KMS's 250 ms budget.
inline constexpr std::array<double, 11> kLatencyBuckets = {
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25};

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

enum class TlsHandshakeResult { Ok, Timeout, Protocol, Certificate, Other };
std::string_view to_string(TlsHandshakeResult r) noexcept;  // "ok", "timeout", ...

enum class PolicyDecision { Allow, Deny, DryRunDeny };
std::string_view to_string(PolicyDecision d) noexcept;  // "allow", "deny", "dry_run_deny"

enum class ThrottleReason { QueueFull, Quota, SessionWait };
std::string_view to_string(ThrottleReason r) noexcept;  // "queue_full", "quota", "session_wait"

// Why the server dropped (or refused) a client connection.
enum class DropCause {
  HandshakeTimeout,       // TLS not completed within handshake_timeout_ms
  HandshakeFailed,        // TLS protocol or certificate failure
  RefusedMaxConnections,  // at max_connections with no unauthenticated connection to evict
  RefusedPerSource,       // the source address is at max_unauthenticated_per_source
  Evicted,                // an idle unauthenticated connection closed to make room
  ClientSlow,             // the request body did not arrive within body_timeout_ms
};
inline constexpr std::size_t kDropCauseCount = 6;
std::string_view to_string(DropCause c) noexcept;  // "handshake_timeout", ...

// What a key version did: Encrypt (it is current) or Decrypt.
enum class KeyOp { Encrypt, Decrypt };
std::string_view to_string(KeyOp op) noexcept;  // "encrypt", "decrypt"

// One instance per process, created by the app and passed by reference. All
// methods are thread-safe. The `record_*` methods are the hot path: array
// indexing plus relaxed atomics, no allocation, no lock (credential use takes
// its key store's shared lock). Indices come from register_keystores() /
// register_hsms() and stay valid for the life of the object.
class Metrics {
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

  explicit Metrics(Options options);
  ~Metrics();
  Metrics(const Metrics&) = delete;
  Metrics& operator=(const Metrics&) = delete;

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
  void record_key_version_use(std::size_t keystore, std::string_view key_id,
                              std::uint32_t version, KeyOp op, bool ok,
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

  // -- exposition ----------------------------------------------------------
  std::string render() const;
  // For metrics that do not exist yet; register them at startup.
  Registry& registry() noexcept { return registry_; }

 private:
  struct KeystoreSlot;
  struct HsmSlot;
  KeystoreSlot* keystore_slot(std::size_t index) const noexcept;
  HsmSlot* hsm_slot(std::size_t index) const noexcept;
  std::size_t register_keystore_locked(const std::string& uri_path);
  std::size_t register_hsm_locked(const std::string& name);

  Options options_;
  Registry registry_;

  CounterFamily& requests_;
  HistogramFamily& request_duration_;
  HistogramFamily& hsm_call_duration_;
  CallbackGaugeFamily& hsm_sessions_in_use_;
  CallbackGaugeFamily& hsm_sessions_open_;
  CallbackGaugeFamily& hsm_queue_depth_;
  CallbackGaugeFamily& hsm_workers_busy_;
  GaugeFamily& hsm_health_;
  CounterFamily& tls_handshakes_;
  GaugeFamily& connections_open_;
  CounterFamily& connections_total_;
  CallbackGaugeFamily& cert_expiry_;
  CallbackGaugeFamily& cert_days_remaining_;
  GaugeFamily& credential_last_used_;
  GaugeFamily& credential_not_after_;
  GaugeFamily& credential_issued_;
  CounterFamily& reloads_;
  GaugeFamily& last_reload_successful_;
  CounterFamily& policy_decisions_;
  CounterFamily& throttled_;
  CounterFamily& connections_dropped_;
  CounterFamily& key_version_ops_;
  GaugeFamily& key_version_last_used_;
  CounterFamily& legacy_decrypts_;

  // Pre-resolved children for the label-free and enumerated metrics.
  std::array<Histogram*, kApiCount> request_duration_by_api_{};
  std::array<Counter*, 5> tls_handshakes_by_result_{};
  std::array<Counter*, 3> throttled_by_reason_{};
  std::array<Counter*, kDropCauseCount> dropped_by_cause_{};
  Gauge* connections_open_child_ = nullptr;
  Counter* connections_total_child_ = nullptr;
  Counter* reloads_ok_ = nullptr;
  Counter* reloads_refused_ = nullptr;
  Gauge* last_reload_successful_child_ = nullptr;
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

}  // namespace xks::obs
