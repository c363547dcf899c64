#include "xks/crypto/hex.hpp"
#include "xks/core/ascii.hpp"

namespace xks::crypto {
namespace {

constexpr const char* kHexDigits = core::kHexLower;

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

void hex_encode_append(std::string& out, ByteView data) {
  out.reserve(out.size() + 2 * data.size());
  for (const std::uint8_t b : data) {
    out.push_back(kHexDigits[b >> 4]);
    out.push_back(kHexDigits[b & 0x0f]);
  }
}

std::string hex_encode(ByteView data) {
  std::string out;
  hex_encode_append(out, data);
  return out;
}

bool hex_decode_into(std::string_view text, std::span<std::uint8_t> out) noexcept {
  if (text.size() != 2 * out.size()) return false;
  for (std::size_t i = 0; i < out.size(); ++i) {
    const int hi = hex_value(text[2 * i]);
    const int lo = hex_value(text[2 * i + 1]);
    if (hi < 0 || lo < 0) return false;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return true;
}

std::optional<Bytes> hex_decode(std::string_view text) {
  if (text.size() % 2 != 0) return std::nullopt;
  Bytes out(text.size() / 2);
  if (!hex_decode_into(text, out)) return std::nullopt;
  return out;
}

}  // namespace xks::crypto
