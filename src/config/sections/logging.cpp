// The logging section: its parse, its entry in the startup description and its
// reload rules.
#include "../loader.hpp"
#include "../reload_rules.hpp"
#include "sections.hpp"

namespace xks::config::detail {

LogFileConfig Loader::parse_log_file(const YAML::Node& n, const std::string& path) const {
  const Section s(*this, n, path, {"path", "rotate", "max_size_mb", "daily_at", "max_files"});
  LogFileConfig out;
  const std::string p = nonempty_string(
      s, "path", "write where the log goes, e.g. path: /var/log/xks-proxy/xks-proxy.log");
  out.path = resolve(p);
  std::error_code ec;
  const fs::path dir = out.path.parent_path();
  if (!fs::is_directory(dir, ec)) {
    fail(s.path("path"), "the folder " + quote(dir.string()) + " does not exist",
         "create it, writable by the proxy's user (install -d -o xks-proxy " + dir.string() +
             "; the systemd unit's LogsDirectory= creates /var/log/xks-proxy)");
  }
  if (fs::is_directory(out.path, ec)) {
    fail(s.path("path"), quote(out.path.string()) + " is a folder",
         "name a file inside it, e.g. " + (out.path / "xks-proxy.log").string());
  }
  if (s.has("rotate")) {
    const std::string v = string_value(s.get("rotate"), s.path("rotate"));
    if (v == "size") {
      out.rotate = LogFileConfig::Rotate::Size;
    } else if (v == "daily") {
      out.rotate = LogFileConfig::Rotate::Daily;
    } else {
      fail(s.path("rotate"), quote(v) + " is not a rotation", "use size or daily");
    }
  }
  const bool daily = out.rotate == LogFileConfig::Rotate::Daily;
  if (daily && s.has("max_size_mb")) {
    fail(s.path("max_size_mb"), "only applies to rotate: size", "delete it, or set rotate: size");
  }
  if (!daily && s.has("daily_at")) {
    fail(s.path("daily_at"), "only applies to rotate: daily", "delete it, or set rotate: daily");
  }
  opt_uint(s, "max_size_mb", out.max_size_mb, 1, 1'000'000,
           "the current file is rotated once it reaches this many MiB");
  opt_uint(s, "max_files", out.max_files, 1, 10'000, "older files beyond this many are deleted");
  if (s.has("daily_at")) {
    const std::string v = string_value(s.get("daily_at"), s.path("daily_at"));
    const auto digit = [&](std::size_t i) {
      return v[i] >= '0' && v[i] <= '9' ? v[i] - '0' : -100;
    };
    const int h = v.size() == 5 && v[2] == ':' ? digit(0) * 10 + digit(1) : -1;
    const int m = v.size() == 5 && v[2] == ':' ? digit(3) * 10 + digit(4) : -1;
    if (h < 0 || h > 23 || m < 0 || m > 59) {
      fail(s.path("daily_at"), quote(v) + " is not a time of day",
           "write it as \"HH:MM\" (24-hour, the proxy's local time zone), e.g. \"00:00\"");
    }
    out.daily_hour = h;
    out.daily_minute = m;
  }
  return out;
}

void Loader::parse_logging(const YAML::Node& n, LoggingConfig& out) const {
  const Section s(*this, n, "logging", {"level", "format", "file", "flush_interval_ms"});
  if (s.has("level")) {
    const std::string v = string_value(s.get("level"), s.path("level"));
    static constexpr std::string_view kLevels[] = {"trace", "debug",    "info", "warn",
                                                   "error", "critical", "off"};
    if (std::find(std::begin(kLevels), std::end(kLevels), v) == std::end(kLevels)) {
      fail(s.path("level"), quote(v) + " is not a log level",
           "use one of trace, debug, info, warn, error, critical, off");
    }
    out.level = v;
  }
  if (s.has("format")) {
    const std::string v = string_value(s.get("format"), s.path("format"));
    if (v == "json") {
      out.format = LoggingConfig::Format::Json;
    } else if (v == "text") {
      out.format = LoggingConfig::Format::Text;
    } else {
      fail(s.path("format"), quote(v) + " is not a log format", "use json or text");
    }
  }
  opt_millis(s, "flush_interval_ms", out.flush_interval, 0, 10'000,
             "lines wait in memory at most this long before they are written (0 = at once)");
  if (s.has("file")) out.file = parse_log_file(s.get("file"), s.path("file"));
}

// ---------------------------------------------------------------- describe

nlohmann::json describe_logging(const LoggingConfig& logging) {
  nlohmann::json j = {{"level", logging.level},
                      {"format", logging.format == LoggingConfig::Format::Json ? "json" : "text"},
                      {"flush_interval_ms", millis(logging.flush_interval)}};
  if (const auto& f = logging.file) {
    nlohmann::json file = {{"path", f->path.string()}, {"max_files", f->max_files}};
    if (f->rotate == LogFileConfig::Rotate::Daily) {
      char at[8];
      std::snprintf(at, sizeof at, "%02d:%02d", f->daily_hour, f->daily_minute);
      file["rotate"] = "daily";
      file["daily_at"] = at;
    } else {
      file["rotate"] = "size";
      file["max_size_mb"] = f->max_size_mb;
    }
    j["file"] = std::move(file);
  } else {
    j["output"] = "stdout";
  }
  return j;
}

// ------------------------------------------------------------ reload rules

namespace {
const Rule kRules[] = {
    {"logging.level", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "logging.level", a.logging.level, b.logging.level);
     },
     nullptr},
    {"logging.format", kLive,
     [](const Config& a, const Config& b, Details& d) {
       if (a.logging.format != b.logging.format) d.push_back("logging.format");
     },
     nullptr},
    {"logging.file", kLive,
     [](const Config& a, const Config& b, Details& d) {
       if (a.logging.file != b.logging.file) {
         d.push_back("logging.file: " +
                     (b.logging.file ? b.logging.file->path.string() : std::string("stdout")));
       }
     },
     nullptr},
    {"logging.flush_interval_ms", kLive,
     [](const Config& a, const Config& b, Details& d) {
       value(d, "logging.flush_interval_ms", a.logging.flush_interval, b.logging.flush_interval);
     },
     nullptr},
};
}  // namespace

std::span<const Rule> logging_rules() { return kRules; }

}  // namespace xks::config::detail
