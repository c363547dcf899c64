#include "xks/tools/cli.hpp"

#include <algorithm>
#include <charconv>
#include <cstdlib>

namespace xks::tools {

namespace {
bool contains(const std::vector<std::string_view>& v, std::string_view s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}
}  // namespace

Args::Args(int argc, char** argv, int first, std::vector<std::string_view> valued,
           std::vector<std::string_view> flags, std::string_view command)
    : command_(command) {
  const std::string see = "; see xksctl " + command_ + " --help";
  for (int i = first; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--help" || a == "-h") {
      help_ = true;
      continue;
    }
    if (!a.starts_with("--")) {
      positional_.emplace_back(a);
      continue;
    }
    std::string_view name = a;
    std::optional<std::string_view> inline_value;
    if (const auto eq = a.find('='); eq != std::string_view::npos) {
      name = a.substr(0, eq);
      inline_value = a.substr(eq + 1);
    }
    if (contains(flags, name)) {
      if (inline_value) throw UsageError(std::string(name) + " takes no value" + see);
      flags_.emplace_back(name);
    } else if (contains(valued, name)) {
      std::string value;
      if (inline_value) {
        value = *inline_value;
      } else if (i + 1 < argc) {
        value = argv[++i];
      } else {
        throw UsageError(std::string(name) + " needs a value" + see);
      }
      if (values_.contains(name)) throw UsageError(std::string(name) + " is given twice" + see);
      values_.emplace(std::string(name), std::move(value));
    } else {
      throw UsageError("unknown option " + std::string(name) + see);
    }
  }
}

bool Args::flag(std::string_view name) const {
  return std::find(flags_.begin(), flags_.end(), name) != flags_.end();
}

std::optional<std::string> Args::get(std::string_view name) const {
  const auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

std::string Args::get_or(std::string_view name, std::string_view fallback) const {
  auto v = get(name);
  return v ? *v : std::string(fallback);
}

std::string Args::require(std::string_view name, std::string_view what) const {
  auto v = get(name);
  if (!v || v->empty()) {
    throw UsageError("missing " + std::string(name) + " (" + std::string(what) + "); see xksctl " +
                     command_ + " --help");
  }
  return *v;
}

std::optional<unsigned long long> Args::number(std::string_view name, unsigned long long min,
                                               unsigned long long max) const {
  auto v = get(name);
  if (!v) return std::nullopt;
  unsigned long long out = 0;
  const char* end = v->data() + v->size();
  auto [ptr, ec] = std::from_chars(v->data(), end, out);
  if (ec != std::errc{} || ptr != end || out < min || out > max) {
    throw UsageError(std::string(name) + " '" + *v + "' is not a whole number in " +
                     std::to_string(min) + ".." + std::to_string(max));
  }
  return out;
}

std::optional<double> Args::decimal(std::string_view name, double min, double max) const {
  auto v = get(name);
  if (!v) return std::nullopt;
  char* end = nullptr;
  const double out = std::strtod(v->c_str(), &end);
  if (v->empty() || end != v->c_str() + v->size() || !(out >= min && out <= max)) {
    throw UsageError(std::string(name) + " '" + *v + "' is not a number in " + std::to_string(min) +
                     ".." + std::to_string(max));
  }
  return out;
}

}  // namespace xks::tools
