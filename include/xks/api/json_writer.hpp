// Pieces for writing fixed-schema JSON response bodies straight into one
// std::string (dto.cpp), instead of building a nlohmann::json tree and dumping it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "xks/core/secure.hpp"

namespace xks::api {

// Appends `s` as a JSON string literal, quotes included, byte for byte as
// nlohmann::json::dump(-1, ' ', false, error_handler_t::replace) writes it: '"'
// and '\' escaped, control characters (0x00-0x1f) as \b \t \n \f \r or \u00xx,
// valid UTF-8 copied as is, and each ill-formed UTF-8 sequence (its maximal
// prefix, as the Unicode "substitution of maximal subparts" practice) replaced by
// U+FFFD. The result is always valid JSON and valid UTF-8, whatever `s` holds
// (HSM labels and models are not guaranteed to be UTF-8).
void append_json_string(std::string& out, std::string_view s);

// Length of the standard Base64 encoding (RFC 4648 section 4, padded) of n bytes.
constexpr std::size_t base64_encoded_size(std::size_t n) noexcept { return 4 * ((n + 2) / 3); }

// Writes the standard Base64 encoding of `data` at `out`, which must have room
// for base64_encoded_size(data.size()) characters; returns the end of what it
// wrote. No intermediate buffer, so plaintext encoded here exists only at `out`.
char* base64_encode_to(ByteView data, char* out) noexcept;

}  // namespace xks::api
