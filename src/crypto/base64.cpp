#include "xks/crypto/base64.hpp"

#include <array>

namespace xks::crypto {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
constexpr std::uint8_t kInvalid = 0xff;

constexpr std::array<std::uint8_t, 256> make_decode_table() {
  std::array<std::uint8_t, 256> t{};
  for (auto& v : t) v = kInvalid;
  for (std::size_t i = 0; i < 64; ++i) {
    t[static_cast<unsigned char>(kAlphabet[i])] = static_cast<std::uint8_t>(i);
  }
  return t;
}
constexpr std::array<std::uint8_t, 256> kDecode = make_decode_table();

std::uint8_t sextet(char c) noexcept { return kDecode[static_cast<unsigned char>(c)]; }

}  // namespace

std::string base64_encode(ByteView data) {
  std::string out;
  out.reserve((data.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= data.size(); i += 3) {
    const std::uint32_t n = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) |
                            std::uint32_t{data[i + 2]};
    out.push_back(kAlphabet[(n >> 18) & 0x3f]);
    out.push_back(kAlphabet[(n >> 12) & 0x3f]);
    out.push_back(kAlphabet[(n >> 6) & 0x3f]);
    out.push_back(kAlphabet[n & 0x3f]);
  }
  const std::size_t rest = data.size() - i;
  if (rest == 1) {
    const std::uint32_t n = std::uint32_t{data[i]} << 16;
    out.push_back(kAlphabet[(n >> 18) & 0x3f]);
    out.push_back(kAlphabet[(n >> 12) & 0x3f]);
    out.append("==");
  } else if (rest == 2) {
    const std::uint32_t n = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
    out.push_back(kAlphabet[(n >> 18) & 0x3f]);
    out.push_back(kAlphabet[(n >> 12) & 0x3f]);
    out.push_back(kAlphabet[(n >> 6) & 0x3f]);
    out.push_back('=');
  }
  return out;
}

std::size_t base64_decoded_size(std::string_view text) noexcept {
  if (text.size() % 4 != 0) return text.size() / 4 * 3 + 3;  // an upper bound only
  std::size_t size = text.size() / 4 * 3;
  if (!text.empty() && text.back() == '=') --size;
  if (text.size() >= 2 && text[text.size() - 2] == '=') --size;
  return size;
}

std::optional<SecureBytes> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return std::nullopt;
  SecureBytes out;
  if (text.empty()) return out;
  // Reserve the exact size up front: no reallocation leaves partial plaintext behind
  // (the allocator would wipe it, but there is no reason to do the work twice).
  out.reserve(base64_decoded_size(text));
  const std::size_t last = text.size() - 4;
  for (std::size_t i = 0; i < last; i += 4) {
    const std::uint8_t a = sextet(text[i]), b = sextet(text[i + 1]), c = sextet(text[i + 2]),
                       d = sextet(text[i + 3]);
    if (a > 63 || b > 63 || c > 63 || d > 63) return std::nullopt;  // also catches kInvalid
    const std::uint32_t n = (std::uint32_t{a} << 18) | (std::uint32_t{b} << 12) |
                            (std::uint32_t{c} << 6) | std::uint32_t{d};
    out.push_back(static_cast<std::uint8_t>(n >> 16));
    out.push_back(static_cast<std::uint8_t>(n >> 8));
    out.push_back(static_cast<std::uint8_t>(n));
  }
  // The last quantum is the only place '=' may appear: "xx==", "xxx=" or "xxxx".
  const std::string_view q = text.substr(last);
  const std::uint8_t a = sextet(q[0]), b = sextet(q[1]);
  if (a > 63 || b > 63) return std::nullopt;
  if (q[2] == '=') {
    if (q[3] != '=') return std::nullopt;
    if ((b & 0x0f) != 0) return std::nullopt;  // non-canonical: bits past the data
    out.push_back(static_cast<std::uint8_t>((a << 2) | (b >> 4)));
    return out;
  }
  const std::uint8_t c = sextet(q[2]);
  if (c > 63) return std::nullopt;
  if (q[3] == '=') {
    if ((c & 0x03) != 0) return std::nullopt;  // non-canonical: bits past the data
    out.push_back(static_cast<std::uint8_t>((a << 2) | (b >> 4)));
    out.push_back(static_cast<std::uint8_t>(((b & 0x0f) << 4) | (c >> 2)));
    return out;
  }
  const std::uint8_t d = sextet(q[3]);
  if (d > 63) return std::nullopt;
  out.push_back(static_cast<std::uint8_t>((a << 2) | (b >> 4)));
  out.push_back(static_cast<std::uint8_t>(((b & 0x0f) << 4) | (c >> 2)));
  out.push_back(static_cast<std::uint8_t>(((c & 0x03) << 6) | d));
  return out;
}

}  // namespace xks::crypto
