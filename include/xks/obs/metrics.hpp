// Prometheus metrics: a small lock-light registry of counters, gauges and
// histograms in labelled families, and the text exposition format 0.0.4
// (https://prometheus.io/docs/instrumenting/exposition_formats/). What is
// measured, and under which names, is the caller's business.
//
// Hot-path rule: recording never allocates and never takes a registry-wide
// lock. Label combinations are resolved once (a `Family::with()` handle kept
// by the caller) and then only atomics are touched. Locks are taken when
// registering children and when scraping.
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
#include <initializer_list>
#include <map>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

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

// Bucket bounds (seconds) for latencies of calls that must answer well within
// a quarter of a second (KMS allows an XKS proxy 250 ms per request).
inline constexpr std::array<double, 11> kLatencyBuckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.025,
                                                           0.05,   0.1,   0.15,  0.2,   0.25};

}  // namespace xks::obs
