// The AAD given to AES-GCM and the ciphertextMetadata this proxy emits.
// Spec, Encrypt: AAD = u16_be(len(aad)) || aad || u8(len(metadata)) || metadata,
// lengths 0 for absent fields. This binds ciphertextMetadata to the tag.
#pragma once

#include <optional>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"

namespace xks::crypto {

inline constexpr std::size_t kMaxAadBytes = 65535;      // what a u16 length can frame
inline constexpr std::size_t kMaxMetadataBytes = 20;    // spec: at most 20 bytes

// Frames aad and metadata as above. Precondition: sizes within the limits above.
Bytes frame_aad(ByteView aad, ByteView metadata);

// ciphertextMetadata written by this proxy on every Encrypt: records the format
// version, so the AAD layout can change later without orphaning ciphertexts.
// Version 1 = the framing above. Layout: "xks" followed by one version byte.
Bytes current_ciphertext_metadata();

// The AAD layout version a ciphertextMetadata value says was used, or nullopt if
// it is not one this proxy wrote (then Decrypt answers InvalidCiphertextException).
std::optional<unsigned> ciphertext_metadata_version(ByteView metadata) noexcept;

}  // namespace xks::crypto
