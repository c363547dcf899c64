// Pieces for writing fixed-schema JSON response bodies straight into one
// std::string (dto.cpp), instead of building a nlohmann::json tree and dumping it.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "xks/core/json_text.hpp"
#include "xks/core/secure.hpp"

namespace xks::api {

// JSON string literals are written by core::append_json_string (the access log
// uses it too): byte for byte as nlohmann's dump with error_handler_t::replace.
using core::append_json_string;

// Length of the standard Base64 encoding (RFC 4648 section 4, padded) of n bytes.
constexpr std::size_t base64_encoded_size(std::size_t n) noexcept { return 4 * ((n + 2) / 3); }

// Writes the standard Base64 encoding of `data` at `out`, which must have room
// for base64_encoded_size(data.size()) characters; returns the end of what it
// wrote. No intermediate buffer, so plaintext encoded here exists only at `out`.
char* base64_encode_to(ByteView data, char* out) noexcept;

}  // namespace xks::api
