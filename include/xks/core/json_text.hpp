// Writing JSON text by hand, for fixed-schema output on hot paths (the access
// log line) where building a nlohmann::json tree first would cost more than the
// rest of the line.
#pragma once

#include <string>
#include <string_view>

namespace xks::core {

// Appends `text` as a JSON string literal, quotes included, byte for byte as
// nlohmann::json::dump(-1, ' ', false, error_handler_t::replace) writes it: '"'
// and '\' escaped, control characters (0x00-0x1f) as \b \t \n \f \r or \u00xx,
// valid UTF-8 copied as is, and each ill-formed UTF-8 sequence (its maximal
// prefix, the Unicode "substitution of maximal subparts" practice) replaced by
// U+FFFD. The result is always valid JSON and valid UTF-8, whatever `text`
// holds (HSM labels, request fields and error messages need not be UTF-8).
void append_json_string(std::string& out, std::string_view text);

// True when `text` is well-formed UTF-8 without control characters, `"` or `\`:
// it can be written between quotes as it is.
bool json_safe(std::string_view text) noexcept;

}  // namespace xks::core
