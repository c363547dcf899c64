// Structured logging over spdlog: every line is one event with named fields,
// rendered as a JSON object (default) or as "event key=value ..." text, written
// to stdout (journald, container runtimes) or to a file with size- or
// time-based rotation (logging.file).
// Never pass a secret, a PIN or plaintext as a field: there is no redaction
// layer behind this API on purpose — the callers are the redaction layer.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "xks/config/config.hpp"

namespace xks::obs {

enum class Level { Trace, Debug, Info, Warn, Error, Critical };

// Installs the process-wide logger. Safe to call again (live reload): level,
// format and flush interval change in place; a changed destination (stdout or
// another file/rotation) gets a new logger. Throws std::runtime_error naming
// the file when a log file cannot be opened.
void init_logging(const config::LoggingConfig& config);

// Parses "trace|debug|info|warn|error|critical|off"; false if unknown.
bool parse_level(std::string_view text, Level& out, bool& off);

bool enabled(Level level) noexcept;

// One event. `fields` must be a JSON object (or null).
void log(Level level, std::string_view event, const nlohmann::json& fields = nullptr);

inline void info(std::string_view event, const nlohmann::json& fields = nullptr) {
  log(Level::Info, event, fields);
}
inline void warn(std::string_view event, const nlohmann::json& fields = nullptr) {
  log(Level::Warn, event, fields);
}
inline void error(std::string_view event, const nlohmann::json& fields = nullptr) {
  log(Level::Error, event, fields);
}
inline void debug(std::string_view event, const nlohmann::json& fields = nullptr) {
  log(Level::Debug, event, fields);
}

// One event built field by field, for the hot path (the access line): fields
// are written straight into a reused per-thread buffer, in the order added,
// and the line is logged when the Line goes out of scope. Does nothing when
// `level` is not enabled.
class Line {
 public:
  Line(Level level, std::string_view event);
  ~Line();
  Line(const Line&) = delete;
  Line& operator=(const Line&) = delete;

  Line& add(std::string_view key, std::string_view value);
  Line& add(std::string_view key, const char* value) { return add(key, std::string_view(value)); }
  Line& add(std::string_view key, const std::string& value) {
    return add(key, std::string_view(value));
  }
  Line& add(std::string_view key, std::int64_t value);
  Line& add(std::string_view key, const nlohmann::json& value);

 private:
  void begin_field(std::string_view key);

  Level level_;
  std::string* out_ = nullptr;  // null when the level is off
  bool json_ = true;
  bool owns_thread_buffer_ = false;
  std::string own_;  // used if this thread's buffer is already taken (a Line inside a Line)
};

// Writes buffered lines out (before exit).
void flush();

}  // namespace xks::obs
