// SHA-256 and HMAC-SHA-256 over OpenSSL 3, with the EVP_MD / EVP_MAC objects
// fetched once per process: an implicit fetch per call takes a global lock and
// a name lookup, which shows at KMS's request rates.
#pragma once

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>

#include "xks/core/secure.hpp"

namespace xks::crypto {

inline constexpr std::size_t kSha256Size = 32;
using Sha256 = std::array<std::uint8_t, kSha256Size>;

// std::nullopt only when OpenSSL itself fails (allocation failure); callers on
// the request path turn that into InternalException.
std::optional<Sha256> sha256(ByteView data) noexcept;

// SHA-256 of the concatenation of parts, without copying them together.
std::optional<Sha256> sha256(std::initializer_list<ByteView> parts) noexcept;

// HMAC-SHA-256 (RFC 2104). An empty key is allowed.
std::optional<Sha256> hmac_sha256(ByteView key, ByteView data) noexcept;

}  // namespace xks::crypto
