#include "xks/obs/log.hpp"

#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/daily_file_sink.h>
#include <spdlog/sinks/rotating_file_sink.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "xks/core/json_text.hpp"

namespace xks::obs {
namespace {

using config::LogFileConfig;
using config::LoggingConfig;

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

// stdout as one write(2) per line (or per batch when buffering): no stdio
// buffer in between, so a line is never split between two writes.
class StdoutSink final : public spdlog::sinks::base_sink<std::mutex> {
 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    spdlog::memory_buf_t formatted;
    formatter_->format(msg, formatted);
    pending_.append(formatted.data(), formatted.size());
    // The logger's flush_on level decides what is written at once; a large
    // backlog is written regardless.
    if (pending_.size() >= kMaxPending) flush_();
  }
  void flush_() override {
    std::size_t done = 0;
    while (done < pending_.size()) {
      const ssize_t n = ::write(STDOUT_FILENO, pending_.data() + done, pending_.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;  // stdout gone (EPIPE, full disk): drop rather than block the proxy
      done += static_cast<std::size_t>(n);
    }
    pending_.clear();
  }

 private:
  static constexpr std::size_t kMaxPending = 64 * 1024;
  std::string pending_;
};

// Log files hold ARNs, principals and key labels: readable by the proxy's
// user and group only, whatever the umask.
spdlog::file_event_handlers private_files() {
  spdlog::file_event_handlers handlers;
  handlers.after_open = [](const spdlog::filename_t&, std::FILE* file) {
    if (file != nullptr) ::fchmod(::fileno(file), 0640);
  };
  return handlers;
}

spdlog::sink_ptr make_sink(const std::optional<LogFileConfig>& file) {
  if (!file) return std::make_shared<StdoutSink>();
  try {
    if (file->rotate == LogFileConfig::Rotate::Daily) {
      return std::make_shared<spdlog::sinks::daily_file_sink_mt>(
          file->path.string(), file->daily_hour, file->daily_minute, false,
          static_cast<std::uint16_t>(file->max_files), private_files());
    }
    return std::make_shared<spdlog::sinks::rotating_file_sink_mt>(
        file->path.string(), file->max_size_mb * 1024 * 1024, file->max_files, false,
        private_files());
  } catch (const spdlog::spdlog_ex& e) {
    throw std::runtime_error("logging.file.path: cannot open " + file->path.string() + ": " +
                             e.what() + " (check that the folder is writable by the proxy's user)");
  }
}

// The process-wide logger and what it was built for. Loggers replaced by a
// reload are kept alive: other threads may still hold the raw pointer that
// spdlog::default_logger_raw() gave them.
struct State {
  std::mutex mutex;
  std::vector<std::shared_ptr<spdlog::logger>> loggers;  // back() is current
  std::optional<LogFileConfig> destination;
  std::atomic<bool> json{true};
  std::atomic<spdlog::logger*> current{nullptr};

  // Writes buffered lines every flush_interval (when it is not 0).
  std::mutex flusher_mutex;
  std::condition_variable flusher_cv;
  std::chrono::milliseconds flush_interval{0};
  bool stopping = false;
  std::thread flusher;

  ~State() {
    {
      std::lock_guard lock(flusher_mutex);
      stopping = true;
    }
    flusher_cv.notify_all();
    if (flusher.joinable()) flusher.join();
    if (auto* logger = current.load()) logger->flush();
  }

  void flusher_loop() {
    std::unique_lock lock(flusher_mutex);
    while (!stopping) {
      if (flush_interval.count() == 0) {
        flusher_cv.wait(lock);
        continue;
      }
      flusher_cv.wait_for(lock, flush_interval);
      if (auto* logger = current.load()) logger->flush();
    }
  }

  void set_flush_interval(std::chrono::milliseconds interval) {
    {
      std::lock_guard lock(flusher_mutex);
      flush_interval = interval;
      if (interval.count() != 0 && !flusher.joinable()) {
        flusher = std::thread([this] { flusher_loop(); });
      }
    }
    flusher_cv.notify_all();
  }
};

State& state() {
  static State s;
  return s;
}

// Strings without spaces, quotes or '=' are written bare in text lines.
void append_text_value(std::string& out, std::string_view v) {
  if (!v.empty() && v.find_first_of(" \"=") == std::string_view::npos && core::json_safe(v)) {
    out += v;
  } else {
    core::append_json_string(out, v);
  }
}

thread_local std::string t_line;
thread_local bool t_line_taken = false;

}  // namespace

bool parse_level(std::string_view text, Level& out, bool& off) {
  off = false;
  if (text == "trace")
    out = Level::Trace;
  else if (text == "debug")
    out = Level::Debug;
  else if (text == "info")
    out = Level::Info;
  else if (text == "warn" || text == "warning")
    out = Level::Warn;
  else if (text == "error")
    out = Level::Error;
  else if (text == "critical")
    out = Level::Critical;
  else if (text == "off") {
    out = Level::Critical;
    off = true;
  } else
    return false;
  return true;
}

void init_logging(const LoggingConfig& config) {
  auto& s = state();
  std::lock_guard lock(s.mutex);
  std::shared_ptr<spdlog::logger> logger;
  if (!s.loggers.empty() && s.destination == config.file) {
    logger = s.loggers.back();
  } else {
    logger = std::make_shared<spdlog::logger>("xks", make_sink(config.file));
    if (!s.loggers.empty()) s.loggers.back()->flush();
    s.loggers.push_back(logger);
    s.destination = config.file;
    spdlog::drop("xks");
    spdlog::register_logger(logger);
    spdlog::set_default_logger(logger);
    s.current.store(logger.get());
  }
  const bool json = config.format == LoggingConfig::Format::Json;
  s.json.store(json);
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
  // Warnings and errors are always written at once; the rest too unless the
  // operator chose to buffer for at most flush_interval.
  logger->flush_on(config.flush_interval.count() == 0 ? spdlog::level::trace : spdlog::level::warn);
  s.set_flush_interval(config.flush_interval);
}

bool enabled(Level level) noexcept {
  auto* logger = state().current.load(std::memory_order_acquire);
  return logger != nullptr && logger->should_log(to_spdlog(level));
}

Line::Line(Level level, std::string_view event) : level_(level) {
  if (!enabled(level)) return;
  if (!t_line_taken) {
    t_line_taken = true;
    owns_thread_buffer_ = true;
    out_ = &t_line;
  } else {
    out_ = &own_;
  }
  out_->clear();
  json_ = state().json.load(std::memory_order_relaxed);
  if (json_) {
    // The pattern supplies the braces and ts/level; we append the members.
    *out_ += "\"event\":";
    core::append_json_string(*out_, event);
  } else {
    *out_ += event;
  }
}

Line::~Line() {
  if (out_ == nullptr) return;
  if (auto* logger = state().current.load(std::memory_order_acquire)) {
    try {
      logger->log(to_spdlog(level_), std::string_view(*out_));
    } catch (...) {  // spdlog reports its own errors; a log line never throws
    }
  }
  // Keep the buffer's capacity for the next line, but not a huge one.
  if (out_->capacity() > 16 * 1024) std::string().swap(*out_);
  if (owns_thread_buffer_) t_line_taken = false;
}

void Line::begin_field(std::string_view key) {
  if (json_) {
    *out_ += ',';
    core::append_json_string(*out_, key);
    *out_ += ':';
  } else {
    *out_ += ' ';
    *out_ += key;
    *out_ += '=';
  }
}

Line& Line::add(std::string_view key, std::string_view value) {
  if (out_ == nullptr) return *this;
  begin_field(key);
  if (json_) {
    core::append_json_string(*out_, value);
  } else {
    append_text_value(*out_, value);
  }
  return *this;
}

Line& Line::add(std::string_view key, std::int64_t value) {
  if (out_ == nullptr) return *this;
  begin_field(key);
  char digits[24];
  const auto [end, ec] = std::to_chars(std::begin(digits), std::end(digits), value);
  out_->append(digits, end);
  return *this;
}

Line& Line::add(std::string_view key, const nlohmann::json& value) {
  if (out_ == nullptr) return *this;
  if (value.is_string()) return add(key, std::string_view(value.get_ref<const std::string&>()));
  begin_field(key);
  *out_ += value.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  return *this;
}

void log(Level level, std::string_view event, const nlohmann::json& fields) {
  Line line(level, event);
  if (!fields.is_object()) return;
  for (const auto& [key, value] : fields.items()) line.add(key, value);
}

void flush() {
  if (auto* logger = state().current.load()) logger->flush();
}

}  // namespace xks::obs
