// The AAD given to AES-GCM and the ciphertextMetadata this proxy emits.
// Spec, Encrypt: AAD = u16_be(len(aad)) || aad || u8(len(metadata)) || metadata,
// lengths 0 for absent fields. This binds ciphertextMetadata to the tag.
#pragma once

#include <cstdint>
#include <optional>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"

namespace xks::crypto {

inline constexpr std::size_t kMaxAadBytes = 65535;    // what a u16 length can frame
inline constexpr std::size_t kMaxMetadataBytes = 20;  // spec: at most 20 bytes

// Frames aad and metadata as above. Precondition: sizes within the limits above.
Bytes frame_aad(ByteView aad, ByteView metadata);

// ciphertextMetadata written by this proxy on every Encrypt: records the format
// version, so the AAD layout can change later without orphaning ciphertexts.
// Version 1 = the framing above. Layout: "xks" followed by one version byte.
// It is also the metadata of key version 1 (ciphertext_metadata_for(1)).
Bytes current_ciphertext_metadata();

// The ciphertextMetadata of a ciphertext made with version `key_version` (>= 1)
// of an external key. Both layouts use the framing above:
//   layout 1: "xks" 0x01                      -> key version 1 (4 bytes; every
//             ciphertext written before keys had versions carries it)
//   layout 2: "xks" 0x02 u32_be(key_version)  -> key version >= 2 (8 bytes)
// Version 1 keeps the 4-byte form so that a proxy without key versions can still
// decrypt what a key that was never rotated produces.
Bytes ciphertext_metadata_for(std::uint32_t key_version);

// What a ciphertextMetadata value says.
struct ParsedMetadata {
  enum class Kind {
    Ours,           // layout 1 or 2: `key_version` is set
    NotOurs,        // absent, foreign, or no "xks" + layout byte (legacy layouts may apply)
    UnknownLayout,  // "xks" with a layout byte this build does not know (a newer proxy)
    Malformed,      // "xks" 0x02 of the wrong length, or naming key version 0 or 1
  };
  Kind kind = Kind::NotOurs;
  unsigned layout = 0;            // set for Ours, UnknownLayout, Malformed
  std::uint32_t key_version = 0;  // set for Ours
};
ParsedMetadata parse_ciphertext_metadata(ByteView metadata) noexcept;

// The AAD layout version a ciphertextMetadata value says was used, or nullopt if
// it is not one this proxy wrote (then Decrypt answers InvalidCiphertextException).
std::optional<unsigned> ciphertext_metadata_version(ByteView metadata) noexcept;

// The AAD the AWS sample proxy (aws-samples/aws-kms-xks-proxy) gives AES-GCM:
//   u16_be(len(aad)) || SHA-256(aad) || u8(len(metadata)) || metadata
// where the digest is present whenever the AAD field is, even when it is empty,
// and absent (with length 0) when the field is absent. `metadata` is the
// request's ciphertextMetadata as given (the sample binds whatever static value
// its configuration returned on Encrypt; absent counts as empty).
// Precondition: sizes within kMaxAadBytes and kMaxMetadataBytes. Empty only if
// OpenSSL's SHA-256 fails.
Bytes frame_aad_aws_sample(const std::optional<Bytes>& aad, ByteView metadata);

}  // namespace xks::crypto
