#include "xks/obs/metrics.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <iterator>
#include <stdexcept>
#include <type_traits>
#include <utility>

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
  const auto it =
      std::isnan(value) ? bounds_.end() : std::lower_bound(bounds_.begin(), bounds_.end(), value);
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
  const auto it = std::find_if(entries_.begin(), entries_.end(),
                               [&](const Entry& e) { return e.values == key; });
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
    out +=
        name_ + close_labels(label_prefix(e.values), {}) + ' ' + format_value(e.callback()) + '\n';
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
    if (c->name() == ref.name())
      throw std::invalid_argument("metric registered twice: " + ref.name());
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

}  // namespace xks::obs
