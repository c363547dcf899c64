#include "xks/obs/metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <fstream>
#include <iterator>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <tuple>
#include <type_traits>

namespace xks::obs {

// ---------------------------------------------------------------------------
// Exposition helpers

std::string format_value(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  std::array<char, 64> buf{};
  std::to_chars_result r{};
  // Integral values (counts, unix timestamps, bytes) print without exponent;
  // 2^53 is where doubles stop representing every integer.
  if (value == std::trunc(value) && std::fabs(value) < 9007199254740992.0) {
    r = std::to_chars(buf.data(), buf.data() + buf.size(), static_cast<std::int64_t>(value));
  } else if (std::fabs(value) < 1.0) {
    // %g style keeps bucket bounds as Prometheus clients spell them ("0.0005",
    // not "5e-04"), so `le` labels match other exporters' and people's queries.
    r = std::to_chars(buf.data(), buf.data() + buf.size(), value, std::chars_format::general);
  } else {
    r = std::to_chars(buf.data(), buf.data() + buf.size(), value);
  }
  return std::string(buf.data(), r.ptr);
}

std::string escape_label_value(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (const char c : value) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

std::string escape_help(std::string_view help) {
  std::string out;
  out.reserve(help.size());
  for (const char c : help) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out += c;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------
// Histogram

Histogram::Histogram(std::span<const double> upper_bounds)
    : bounds_(upper_bounds.begin(), upper_bounds.end()),
      buckets_(std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1)) {
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    if (!std::isfinite(bounds_[i]) || (i > 0 && !(bounds_[i - 1] < bounds_[i]))) {
      throw std::invalid_argument("histogram bounds must be finite and strictly ascending");
    }
  }
}

void Histogram::observe(double value) noexcept {
  // First bound >= value: `le` is inclusive. NaN compares false everywhere and
  // would land in the first bucket; +Inf is where Prometheus clients put it.
  const auto it = std::isnan(value) ? bounds_.end()
                                    : std::lower_bound(bounds_.begin(), bounds_.end(), value);
  const auto index = static_cast<std::size_t>(std::distance(bounds_.begin(), it));
  buckets_[index].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.reserve(bounds_.size() + 1);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i <= bounds_.size(); ++i) {
    running += buckets_[i].load(std::memory_order_relaxed);
    s.cumulative.push_back(running);
  }
  s.count = running;
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// ---------------------------------------------------------------------------
// Collector and families

Collector::Collector(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {}

std::string Collector::label_prefix(std::span<const std::string> values) const {
  if (values.empty()) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out += ',';
    out += label_names_[i];
    out += "=\"";
    out += escape_label_value(values[i]);
    out += '"';
  }
  return out;
}

std::string Collector::close_labels(const std::string& prefix, std::string_view extra) {
  if (prefix.empty() && extra.empty()) return {};
  std::string out = prefix.empty() ? std::string("{") : prefix;
  if (!extra.empty()) {
    if (!prefix.empty()) out += ',';
    out += extra;
  }
  out += '}';
  return out;
}

void Collector::render_header(std::string& out, std::string_view type) const {
  out += "# HELP ";
  out += name_;
  out += ' ';
  out += escape_help(help_);
  out += "\n# TYPE ";
  out += name_;
  out += ' ';
  out += type;
  out += '\n';
}

void Collector::check_arity(std::size_t n) const {
  if (n != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": expected " +
                                std::to_string(label_names_.size()) + " label values, got " +
                                std::to_string(n));
  }
}

template <class Child>
Family<Child>::Family(std::string name, std::string help, std::vector<std::string> label_names,
                      std::vector<double> bucket_bounds)
    : Collector(std::move(name), std::move(help), std::move(label_names)),
      bounds_(std::move(bucket_bounds)) {}

template <class Child>
Child& Family<Child>::with(std::span<const std::string> values) {
  check_arity(values.size());
  std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard lock(mutex_);
  if (const auto it = index_.find(key); it != index_.end()) return *it->second;
  std::unique_ptr<Child> child;
  if constexpr (std::is_same_v<Child, Histogram>) {
    child = std::make_unique<Histogram>(bounds_);
  } else {
    child = std::make_unique<Child>();
  }
  Child& ref = *child;
  index_.emplace(key, &ref);
  entries_.push_back(Entry{std::move(key), std::move(child)});
  return ref;
}

template <class Child>
Child& Family<Child>::with(std::initializer_list<std::string_view> values) {
  const std::vector<std::string> v(values.begin(), values.end());
  return with(std::span<const std::string>(v));
}

template <class Child>
void Family<Child>::remove(std::span<const std::string> values) {
  const std::vector<std::string> key(values.begin(), values.end());
  std::lock_guard lock(mutex_);
  if (index_.erase(key) == 0) return;
  std::erase_if(entries_, [&](const Entry& e) { return e.values == key; });
}

template <class Child>
void Family<Child>::render(std::string& out) const {
  std::lock_guard lock(mutex_);
  if (entries_.empty()) return;
  if constexpr (std::is_same_v<Child, Counter>) {
    render_header(out, "counter");
    for (const auto& e : entries_) {
      out += name_ + close_labels(label_prefix(e.values), {}) + ' ' +
             std::to_string(e.child->value()) + '\n';
    }
  } else if constexpr (std::is_same_v<Child, Gauge>) {
    render_header(out, "gauge");
    for (const auto& e : entries_) {
      out += name_ + close_labels(label_prefix(e.values), {}) + ' ' +
             format_value(e.child->value()) + '\n';
    }
  } else {
    render_header(out, "histogram");
    for (const auto& e : entries_) {
      const auto prefix = label_prefix(e.values);
      const auto snap = e.child->snapshot();
      for (std::size_t i = 0; i < snap.cumulative.size(); ++i) {
        const auto le = i < bounds_.size() ? format_value(bounds_[i]) : std::string("+Inf");
        out += name_ + "_bucket" + close_labels(prefix, "le=\"" + le + '"') + ' ' +
               std::to_string(snap.cumulative[i]) + '\n';
      }
      const auto labels = close_labels(prefix, {});
      out += name_ + "_sum" + labels + ' ' + format_value(snap.sum) + '\n';
      out += name_ + "_count" + labels + ' ' + std::to_string(snap.count) + '\n';
    }
  }
}

template class Family<Counter>;
template class Family<Gauge>;
template class Family<Histogram>;

void CallbackGaugeFamily::set(std::span<const std::string> values, Callback callback) {
  check_arity(values.size());
  std::vector<std::string> key(values.begin(), values.end());
  Callback old;  // destroyed after the lock is released, outside render()
  std::lock_guard lock(mutex_);
  const auto it =
      std::find_if(entries_.begin(), entries_.end(), [&](const Entry& e) { return e.values == key; });
  if (it == entries_.end()) {
    if (callback) entries_.push_back(Entry{std::move(key), std::move(callback)});
  } else if (callback) {
    old = std::exchange(it->callback, std::move(callback));
  } else {
    old = std::move(it->callback);
    entries_.erase(it);
  }
}

void CallbackGaugeFamily::set(std::initializer_list<std::string_view> values, Callback callback) {
  const std::vector<std::string> v(values.begin(), values.end());
  set(std::span<const std::string>(v), std::move(callback));
}

void CallbackGaugeFamily::render(std::string& out) const {
  std::lock_guard lock(mutex_);
  if (entries_.empty()) return;
  render_header(out, "gauge");
  for (const auto& e : entries_) {
    out += name_ + close_labels(label_prefix(e.values), {}) + ' ' + format_value(e.callback()) +
           '\n';
  }
}

// ---------------------------------------------------------------------------
// Registry

template <class T, class... Args>
T& Registry::add(Args&&... args) {
  auto collector = std::make_unique<T>(std::forward<Args>(args)...);
  T& ref = *collector;
  std::lock_guard lock(mutex_);
  for (const auto& c : collectors_) {
    if (c->name() == ref.name()) throw std::invalid_argument("metric registered twice: " + ref.name());
  }
  collectors_.push_back(std::move(collector));
  return ref;
}

CounterFamily& Registry::counter(std::string name, std::string help,
                                 std::vector<std::string> labels) {
  return add<CounterFamily>(std::move(name), std::move(help), std::move(labels));
}

GaugeFamily& Registry::gauge(std::string name, std::string help, std::vector<std::string> labels) {
  return add<GaugeFamily>(std::move(name), std::move(help), std::move(labels));
}

HistogramFamily& Registry::histogram(std::string name, std::string help,
                                     std::vector<std::string> labels,
                                     std::vector<double> bucket_bounds) {
  // Validate the bounds now rather than at the first child.
  (void)Histogram(bucket_bounds);
  return add<HistogramFamily>(std::move(name), std::move(help), std::move(labels),
                              std::move(bucket_bounds));
}

CallbackGaugeFamily& Registry::callback_gauge(std::string name, std::string help,
                                              std::vector<std::string> labels) {
  return add<CallbackGaugeFamily>(std::move(name), std::move(help), std::move(labels));
}

std::string Registry::render() const {
  std::string out;
  out.reserve(16 * 1024);
  std::lock_guard lock(mutex_);
  for (const auto& c : collectors_) c->render(out);
  return out;
}

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

std::string_view to_string(TlsHandshakeResult r) noexcept {
  switch (r) {
    case TlsHandshakeResult::Ok: return "ok";
    case TlsHandshakeResult::Timeout: return "timeout";
    case TlsHandshakeResult::Protocol: return "protocol";
    case TlsHandshakeResult::Certificate: return "certificate";
    case TlsHandshakeResult::Other: return "other";
  }
  return "other";
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

std::string_view to_string(DropCause c) noexcept {
  switch (c) {
    case DropCause::HandshakeTimeout: return "handshake_timeout";
    case DropCause::HandshakeFailed: return "handshake_failed";
    case DropCause::RefusedMaxConnections: return "refused_max_connections";
    case DropCause::RefusedPerSource: return "refused_per_source";
    case DropCause::Evicted: return "evicted";
    case DropCause::ClientSlow: return "client_slow";
  }
  return "handshake_failed";
}

// ---------------------------------------------------------------------------
// Metrics

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

struct Metrics::KeystoreSlot {
  // One configured version of one key; sorted by (key, version).
  struct KeyVersion {
    std::string key;
    std::uint32_t version = 0;
    std::array<std::array<Counter*, 2>, 2> ops{};  // [KeyOp][ok]
    std::array<Gauge*, 2> last_used{};             // [KeyOp]
    std::array<std::atomic<bool>, 2> legacy_logged{};  // [LegacyLayout]
  };
  struct Credential {
    std::string access_key_id;
    Gauge* last_used = nullptr;
    Gauge* not_after = nullptr;  // null when the credential has no not_after
    Gauge* issued = nullptr;     // null when the issue time is unknown
  };
  std::string uri_path;
  std::array<std::array<Counter*, kOutcomeCount>, kApiCount> requests{};
  std::array<Counter*, kPolicyDecisions.size()> policy{};
  // Per key store, so a reload of one never blocks requests to another; readers
  // only take it shared.
  mutable std::shared_mutex credentials_mutex;
  std::vector<Credential> credentials;
  std::array<Counter*, 2> legacy{};  // [LegacyLayout]
  mutable std::shared_mutex key_versions_mutex;
  std::vector<std::unique_ptr<KeyVersion>> key_versions;
};

struct Metrics::HsmSlot {
  std::string name;
  std::array<Histogram*, kHsmFunctionCount> calls{};
  // Guarded by registration_mutex_ (set_hsm_health only).
  std::vector<std::pair<std::string, Gauge*>> health;
};

Metrics::Metrics(Options options)
    : options_(std::move(options)),
      requests_(registry_.counter("xks_proxy_requests_total",
                                  "XKS API requests by key store, API and outcome (ok or the "
                                  "spec's errorName).",
                                  {"keystore", "api", "outcome"})),
      request_duration_(registry_.histogram(
          "xks_proxy_request_duration_seconds",
          "Time from the request's arrival to its response, by API; KMS allows 250 ms.", {"api"},
          {kLatencyBuckets.begin(), kLatencyBuckets.end()})),
      hsm_call_duration_(registry_.histogram("xks_proxy_hsm_call_duration_seconds",
                                             "Duration of PKCS#11 calls by HSM and function.",
                                             {"hsm", "function"},
                                             {kLatencyBuckets.begin(), kLatencyBuckets.end()})),
      hsm_sessions_in_use_(registry_.callback_gauge("xks_proxy_hsm_sessions_in_use",
                                                    "PKCS#11 sessions leased right now.", {"hsm"})),
      hsm_sessions_open_(registry_.callback_gauge("xks_proxy_hsm_sessions_open",
                                                  "PKCS#11 sessions open (idle or leased).",
                                                  {"hsm"})),
      hsm_queue_depth_(registry_.callback_gauge("xks_proxy_hsm_queue_depth",
                                                "HSM jobs waiting for a worker.")),
      hsm_workers_busy_(registry_.callback_gauge("xks_proxy_hsm_workers_busy",
                                                 "HSM workers running a job.")),
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
    registry_
        .gauge("process_start_time_seconds", "Start time of the process since unix epoch.")
        .with({})
        .set(started ? *started : unix_seconds(options_.now()));
    registry_
        .callback_gauge("process_resident_memory_bytes", "Resident memory size in bytes.")
        .set({}, resident_memory_bytes);
  }

  std::lock_guard lock(registration_mutex_);
  register_keystore_locked("unknown");  // kUnknownKeystore
}

Metrics::~Metrics() = default;

Metrics::KeystoreSlot* Metrics::keystore_slot(std::size_t index) const noexcept {
  return index < kMaxKeystores ? keystores_[index].load(std::memory_order_acquire) : nullptr;
}

Metrics::HsmSlot* Metrics::hsm_slot(std::size_t index) const noexcept {
  return index < kMaxHsms ? hsms_[index].load(std::memory_order_acquire) : nullptr;
}

std::size_t Metrics::register_keystore_locked(const std::string& uri_path) {
  if (const auto it = keystore_by_path_.find(uri_path); it != keystore_by_path_.end()) {
    return it->second;
  }
  const auto index = keystore_storage_.size();
  if (index >= kMaxKeystores) {
    throw std::length_error("metrics: more than " + std::to_string(kMaxKeystores) +
                            " key stores");
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
      slot->legacy[static_cast<std::size_t>(l)] = &legacy_decrypts_.with({uri_path, config::to_string(l)});
    }
  }
  keystores_[index].store(slot.get(), std::memory_order_release);
  keystore_storage_.push_back(std::move(slot));
  keystore_by_path_.emplace(uri_path, index);
  return index;
}

std::vector<std::size_t> Metrics::register_keystores(const std::vector<std::string>& uri_paths) {
  std::vector<std::size_t> indices;
  indices.reserve(uri_paths.size());
  std::lock_guard lock(registration_mutex_);
  for (const auto& path : uri_paths) indices.push_back(register_keystore_locked(path));
  return indices;
}

std::optional<std::size_t> Metrics::keystore_index(std::string_view uri_path) const {
  std::lock_guard lock(registration_mutex_);
  const auto it = keystore_by_path_.find(uri_path);
  if (it == keystore_by_path_.end()) return std::nullopt;
  return it->second;
}

void Metrics::record_request(std::size_t keystore, http::Api api, std::optional<ErrorName> error,
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

void Metrics::record_policy_decision(std::size_t keystore, PolicyDecision decision) noexcept {
  const auto d = static_cast<std::size_t>(decision);
  if (auto* slot = keystore_slot(keystore); slot != nullptr && d < slot->policy.size()) {
    slot->policy[d]->inc();
  }
}

void Metrics::set_credentials(std::size_t keystore,
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
      if (kept->not_after == nullptr && old.not_after != nullptr) credential_not_after_.remove(labels);
      if (kept->issued == nullptr && old.issued != nullptr) credential_issued_.remove(labels);
    }
  }
  slot->credentials = std::move(next);
}

void Metrics::record_credential_use(std::size_t keystore, std::string_view access_key_id,
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

void Metrics::set_key_versions(std::size_t keystore, const std::vector<config::KeyEntry>& keys) {
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
        e->ops[o][0] = &key_version_ops_.with({slot->uri_path, k.id, number, to_string(op), "error"});
        e->last_used[o] = &key_version_last_used_.with({slot->uri_path, k.id, number, to_string(op)});
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
  const auto it = std::lower_bound(entries.begin(), entries.end(), std::pair{key, version},
                                   [](const auto& e, const std::pair<std::string_view, std::uint32_t>& x) {
                                     const std::string_view k = e->key;
                                     return k < x.first || (k == x.first && e->version < x.second);
                                   });
  return it != entries.end() && (*it)->key == key && (*it)->version == version ? it->get() : nullptr;
}
}  // namespace

void Metrics::record_key_version_use(std::size_t keystore, std::string_view key_id,
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

bool Metrics::record_legacy_decrypt(std::size_t keystore, std::string_view key_id,
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

std::size_t Metrics::register_hsm_locked(const std::string& name) {
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

std::vector<std::size_t> Metrics::register_hsms(const std::vector<std::string>& names) {
  std::vector<std::size_t> indices;
  indices.reserve(names.size());
  std::lock_guard lock(registration_mutex_);
  for (const auto& name : names) indices.push_back(register_hsm_locked(name));
  return indices;
}

std::optional<std::size_t> Metrics::hsm_index(std::string_view name) const {
  std::lock_guard lock(registration_mutex_);
  const auto it = hsm_by_name_.find(name);
  if (it == hsm_by_name_.end()) return std::nullopt;
  return it->second;
}

void Metrics::record_hsm_call(std::size_t hsm, HsmFunction function,
                              std::chrono::nanoseconds duration) noexcept {
  const auto f = static_cast<std::size_t>(function);
  if (auto* slot = hsm_slot(hsm); slot != nullptr && f < kHsmFunctionCount) {
    slot->calls[f]->observe(duration);
  }
}

void Metrics::record_reload(bool applied) noexcept {
  (applied ? reloads_ok_ : reloads_refused_)->inc();
  last_reload_successful_child_->set(applied ? 1.0 : 0.0);
}

void Metrics::set_hsm_health(std::string_view hsm, std::string_view status) {
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

void Metrics::set_hsm_session_samplers(std::string_view hsm, std::function<double()> in_use,
                                       std::function<double()> open) {
  hsm_sessions_in_use_.set({hsm}, std::move(in_use));
  hsm_sessions_open_.set({hsm}, std::move(open));
}

void Metrics::set_worker_pool_samplers(std::function<double()> queue_depth,
                                       std::function<double()> workers_busy) {
  hsm_queue_depth_.set({}, std::move(queue_depth));
  hsm_workers_busy_.set({}, std::move(workers_busy));
}

void Metrics::record_throttled(ThrottleReason reason) noexcept {
  const auto r = static_cast<std::size_t>(reason);
  if (r < throttled_by_reason_.size()) throttled_by_reason_[r]->inc();
}

void Metrics::record_tls_handshake(TlsHandshakeResult result) noexcept {
  const auto r = static_cast<std::size_t>(result);
  if (r < tls_handshakes_by_result_.size()) tls_handshakes_by_result_[r]->inc();
}

void Metrics::connection_opened() noexcept {
  connections_total_child_->inc();
  connections_open_child_->inc();
}

void Metrics::connection_closed() noexcept { connections_open_child_->dec(); }

void Metrics::record_connection_dropped(DropCause cause) noexcept {
  const auto c = static_cast<std::size_t>(cause);
  if (c < dropped_by_cause_.size()) dropped_by_cause_[c]->inc();
}

void Metrics::set_tls_certificate_not_after(std::chrono::system_clock::time_point not_after) {
  const auto seconds =
      std::chrono::duration_cast<std::chrono::seconds>(not_after.time_since_epoch()).count();
  cert_not_after_.store(static_cast<std::int64_t>(seconds), std::memory_order_relaxed);
  // Sampled so days_remaining counts down between reloads without a timer.
  cert_expiry_.set({}, [this] {
    return static_cast<double>(cert_not_after_.load(std::memory_order_relaxed));
  });
  cert_days_remaining_.set({}, [this] {
    const auto now = std::chrono::duration_cast<std::chrono::seconds>(
                         options_.now().time_since_epoch())
                         .count();
    const auto left = cert_not_after_.load(std::memory_order_relaxed) - now;
    return std::floor(static_cast<double>(left) / 86400.0);
  });
}

std::string Metrics::render() const { return registry_.render(); }

}  // namespace xks::obs
