#include "xks/obs/log.hpp"

#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <mutex>

namespace xks::obs {
namespace {

std::atomic<bool> g_json{true};
std::mutex g_init_mutex;

spdlog::level::level_enum to_spdlog(Level level) {
  switch (level) {
    case Level::Trace: return spdlog::level::trace;
    case Level::Debug: return spdlog::level::debug;
    case Level::Info: return spdlog::level::info;
    case Level::Warn: return spdlog::level::warn;
    case Level::Error: return spdlog::level::err;
    case Level::Critical: return spdlog::level::critical;
  }
  return spdlog::level::info;
}

std::shared_ptr<spdlog::logger> make_logger() {
  // stdout: systemd's journal and container runtimes collect it. One mutex'ed
  // sink; lines are never interleaved.
  auto logger = std::make_shared<spdlog::logger>(
      "xks", std::make_shared<spdlog::sinks::stdout_sink_mt>());
  logger->flush_on(spdlog::level::warn);
  return logger;
}

std::string render_text_value(const nlohmann::json& v) {
  if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    if (s.find_first_of(" \"=") == std::string::npos && !s.empty()) return s;
    return v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
  }
  return v.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

}  // namespace

bool parse_level(std::string_view text, Level& out, bool& off) {
  off = false;
  if (text == "trace") out = Level::Trace;
  else if (text == "debug") out = Level::Debug;
  else if (text == "info") out = Level::Info;
  else if (text == "warn" || text == "warning") out = Level::Warn;
  else if (text == "error") out = Level::Error;
  else if (text == "critical") out = Level::Critical;
  else if (text == "off") { out = Level::Critical; off = true; }
  else return false;
  return true;
}

void init_logging(const config::LoggingConfig& config) {
  std::lock_guard lock(g_init_mutex);
  auto logger = spdlog::get("xks");
  if (!logger) {
    logger = make_logger();
    spdlog::register_logger(logger);
    spdlog::set_default_logger(logger);
  }
  const bool json = config.format == config::LoggingConfig::Format::Json;
  g_json.store(json);
  if (json) {
    logger->set_pattern(R"({"ts":"%Y-%m-%dT%H:%M:%S.%fZ","level":"%l",%v})",
                        spdlog::pattern_time_type::utc);
  } else {
    logger->set_pattern("%Y-%m-%dT%H:%M:%S.%fZ %l %v", spdlog::pattern_time_type::utc);
  }
  Level level = Level::Info;
  bool off = false;
  if (!parse_level(config.level, level, off)) level = Level::Info;
  logger->set_level(off ? spdlog::level::off : to_spdlog(level));
}

bool enabled(Level level) noexcept {
  auto logger = spdlog::default_logger_raw();
  return logger != nullptr && logger->should_log(to_spdlog(level));
}

void log(Level level, std::string_view event, const nlohmann::json& fields) {
  auto* logger = spdlog::default_logger_raw();
  if (logger == nullptr || !logger->should_log(to_spdlog(level))) return;
  std::string line;
  line.reserve(256);
  if (g_json.load(std::memory_order_relaxed)) {
    // The pattern supplies the braces and ts/level; we append the members.
    line += "\"event\":";
    line += nlohmann::json(event).dump();
    if (fields.is_object()) {
      for (const auto& [key, value] : fields.items()) {
        line += ',';
        line += nlohmann::json(key).dump();
        line += ':';
        line += value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      }
    }
  } else {
    line += event;
    if (fields.is_object()) {
      for (const auto& [key, value] : fields.items()) {
        line += ' ';
        line += key;
        line += '=';
        line += render_text_value(value);
      }
    }
  }
  logger->log(to_spdlog(level), std::string_view(line));
}

void flush() {
  if (auto* logger = spdlog::default_logger_raw()) logger->flush();
}

}  // namespace xks::obs
