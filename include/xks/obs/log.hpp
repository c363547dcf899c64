// Structured logging over spdlog: every line is one event with named fields,
// rendered as a JSON object (default) or as "event key=value ..." text.
// Never pass a secret, a PIN or plaintext as a field: there is no redaction
// layer behind this API on purpose — the callers are the redaction layer.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "xks/config/config.hpp"

namespace xks::obs {

enum class Level { Trace, Debug, Info, Warn, Error, Critical };

// Installs the process-wide logger (stdout). Safe to call again to change the
// level or format (live reload).
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

// Flushes buffered lines (before exit).
void flush();

}  // namespace xks::obs
