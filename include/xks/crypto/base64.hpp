// Standard Base64 (RFC 4648 section 4, with padding, not URL-safe) as the spec
// requires for every binary field.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "xks/core/secure.hpp"

namespace xks::crypto {

std::string base64_encode(ByteView data);

// Strict decoding: only A-Z a-z 0-9 + /, '=' padding to a multiple of 4, no
// whitespace, non-canonical trailing bits rejected. std::nullopt if invalid.
// Decodes into a wiping buffer because the input may be plaintext.
std::optional<SecureBytes> base64_decode(std::string_view text);

// Decoded length of a valid encoding, without decoding (for size checks). For
// input whose length is not a multiple of 4 it is an upper bound only.
std::size_t base64_decoded_size(std::string_view text) noexcept;

}  // namespace xks::crypto
