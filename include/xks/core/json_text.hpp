// Writing JSON text by hand, for fixed-schema output on hot paths (the access
// log line) where building a nlohmann::json tree first would cost more than the
// rest of the line.
#pragma once

#include <string>
#include <string_view>

namespace xks::core {

// Appends `text` as a JSON string literal, quotes included: `"`, `\` and
// control characters escaped, and every byte that is not part of well-formed
// UTF-8 replaced by U+FFFD, so the output is valid JSON and valid UTF-8 whatever
// `text` holds (as nlohmann's error_handler_t::replace does).
void append_json_string(std::string& out, std::string_view text);

// True when `text` is well-formed UTF-8 without control characters, `"` or `\`:
// it can be written between quotes as it is.
bool json_safe(std::string_view text) noexcept;

}  // namespace xks::core
