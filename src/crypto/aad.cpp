#include "xks/crypto/aad.hpp"

#include <cassert>

#include "xks/crypto/digest.hpp"

namespace xks::crypto {
namespace {

constexpr std::uint8_t kMetadataMagic[] = {'x', 'k', 's'};
constexpr std::uint8_t kCurrentLayoutVersion = 1;
constexpr std::uint8_t kVersionedLayout = 2;
constexpr std::size_t kVersionedMetadataBytes = sizeof(kMetadataMagic) + 1 + 4;

bool has_magic(ByteView metadata) noexcept {
  if (metadata.size() < sizeof(kMetadataMagic) + 1) return false;
  for (std::size_t i = 0; i < sizeof(kMetadataMagic); ++i) {
    if (metadata[i] != kMetadataMagic[i]) return false;
  }
  return true;
}

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

Bytes ciphertext_metadata_for(std::uint32_t key_version) {
  assert(key_version >= 1);
  if (key_version == 1) return current_ciphertext_metadata();
  Bytes out(std::begin(kMetadataMagic), std::end(kMetadataMagic));
  out.push_back(kVersionedLayout);
  for (int shift = 24; shift >= 0; shift -= 8) {
    out.push_back(static_cast<std::uint8_t>((key_version >> static_cast<unsigned>(shift)) & 0xffU));
  }
  return out;
}

ParsedMetadata parse_ciphertext_metadata(ByteView metadata) noexcept {
  using Kind = ParsedMetadata::Kind;
  if (!has_magic(metadata)) return {};
  const unsigned layout = metadata[sizeof(kMetadataMagic)];
  // Layout 0 was never written; layout 1 is exactly 4 bytes. Anything else with
  // those bytes is someone else's metadata (the rules of ciphertext_metadata_version).
  if (layout == 0) return {};
  if (layout == kCurrentLayoutVersion) {
    if (metadata.size() != sizeof(kMetadataMagic) + 1) return {};
    return {Kind::Ours, layout, 1};
  }
  if (layout != kVersionedLayout) return {Kind::UnknownLayout, layout, 0};
  if (metadata.size() != kVersionedMetadataBytes) return {Kind::Malformed, layout, 0};
  std::uint32_t v = 0;
  for (std::size_t i = sizeof(kMetadataMagic) + 1; i < kVersionedMetadataBytes; ++i) {
    v = (v << 8U) | metadata[i];
  }
  // Version 1 is only ever written in layout 1: one encoding per version.
  if (v < 2) return {Kind::Malformed, layout, 0};
  return {Kind::Ours, layout, v};
}

Bytes frame_aad_aws_sample(const std::optional<Bytes>& aad, ByteView metadata) {
  assert(!aad || aad->size() <= kMaxAadBytes);
  assert(metadata.size() <= kMaxMetadataBytes);
  const std::size_t n = aad ? aad->size() : 0;
  Bytes out;
  out.reserve(2 + 32 + 1 + metadata.size());
  out.push_back(static_cast<std::uint8_t>(n >> 8U));
  out.push_back(static_cast<std::uint8_t>(n & 0xffU));
  if (aad) {
    const auto digest = sha256(*aad);
    if (!digest) return {};
    out.insert(out.end(), digest->begin(), digest->end());
  }
  out.push_back(static_cast<std::uint8_t>(metadata.size()));
  out.insert(out.end(), metadata.begin(), metadata.end());
  return out;
}

}  // namespace xks::crypto
