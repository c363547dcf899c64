// Ciphertext Data Integrity Value, spec Appendix C:
// Base64(SHA-256(aad || metadata || iv || ciphertext || tag)) over the decoded
// bytes, no length prefixes; absent fields are empty.
#pragma once

#include <string>

#include "xks/core/secure.hpp"

namespace xks::crypto {

// Returns an empty string only if OpenSSL fails (never for valid input): the
// caller answers InternalException then.
std::string compute_cdiv(ByteView aad, ByteView metadata, ByteView iv, ByteView ciphertext,
                         ByteView tag);

}  // namespace xks::crypto
