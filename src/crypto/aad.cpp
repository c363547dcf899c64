#include "xks/crypto/aad.hpp"

#include <cassert>

namespace xks::crypto {
namespace {

constexpr std::uint8_t kMetadataMagic[] = {'x', 'k', 's'};
constexpr std::uint8_t kCurrentLayoutVersion = 1;

}  // namespace

Bytes frame_aad(ByteView aad, ByteView metadata) {
  // Callers validate sizes first (they answer ValidationException); a silently
  // truncated length would make a framing two inputs could share.
  assert(aad.size() <= kMaxAadBytes);
  assert(metadata.size() <= kMaxMetadataBytes);
  Bytes out;
  out.reserve(2 + aad.size() + 1 + metadata.size());
  out.push_back(static_cast<std::uint8_t>(aad.size() >> 8));
  out.push_back(static_cast<std::uint8_t>(aad.size() & 0xff));
  out.insert(out.end(), aad.begin(), aad.end());
  out.push_back(static_cast<std::uint8_t>(metadata.size()));
  out.insert(out.end(), metadata.begin(), metadata.end());
  return out;
}

Bytes current_ciphertext_metadata() {
  Bytes out(std::begin(kMetadataMagic), std::end(kMetadataMagic));
  out.push_back(kCurrentLayoutVersion);
  return out;
}

std::optional<unsigned> ciphertext_metadata_version(ByteView metadata) noexcept {
  // Returns any version byte behind the magic, not only the current one, so that
  // a build meeting a newer layout can say "unsupported layout version N"
  // rather than "not ours". Version 0 was never written.
  if (metadata.size() != sizeof(kMetadataMagic) + 1) return std::nullopt;
  for (std::size_t i = 0; i < sizeof(kMetadataMagic); ++i) {
    if (metadata[i] != kMetadataMagic[i]) return std::nullopt;
  }
  const unsigned version = metadata[sizeof(kMetadataMagic)];
  if (version == 0) return std::nullopt;
  return version;
}

}  // namespace xks::crypto
