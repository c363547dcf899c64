// Base16 as SigV4 uses it: lower-case on output; either case accepted on input.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "xks/core/secure.hpp"

namespace xks::crypto {

std::string hex_encode(ByteView data);

// Appends to out, so that callers building a larger string avoid a temporary.
void hex_encode_append(std::string& out, ByteView data);

// std::nullopt on odd length or a non-hex character.
std::optional<Bytes> hex_decode(std::string_view text);

// Decodes into a fixed-size buffer; false unless text is exactly 2*out.size()
// hex digits. No allocation, for fixed-size values such as signatures.
bool hex_decode_into(std::string_view text, std::span<std::uint8_t> out) noexcept;

}  // namespace xks::crypto
