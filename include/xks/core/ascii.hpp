// ASCII character classes and hex digits, for the parsers and encoders that
// must not depend on the locale (<cctype> does).
#pragma once

#include <string>
#include <string_view>

namespace xks::core {

inline constexpr char kHexLower[] = "0123456789abcdef";
inline constexpr char kHexUpper[] = "0123456789ABCDEF";

constexpr bool is_digit(char c) noexcept { return c >= '0' && c <= '9'; }
constexpr bool is_lower_alnum(char c) noexcept { return (c >= 'a' && c <= 'z') || is_digit(c); }
constexpr bool is_alnum(char c) noexcept { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }

// Appends `text` between double quotes for a log line or an error message:
// '"' and '\' escaped with '\', every byte outside printable ASCII as \xHH.
void append_quoted(std::string& out, std::string_view text);

}  // namespace xks::core
