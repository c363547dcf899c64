#include "xks/api/json_writer.hpp"

#include <array>
#include <cstdint>
#include <cstring>

namespace xks::api {
namespace {

constexpr char kAlphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

// The two characters of every 12-bit value: two lookups per 3 input bytes.
constexpr std::array<std::array<char, 2>, 4096> make_pair_table() {
  std::array<std::array<char, 2>, 4096> t{};
  for (std::size_t v = 0; v < t.size(); ++v) t[v] = {kAlphabet[v >> 6], kAlphabet[v & 0x3f]};
  return t;
}
constexpr std::array<std::array<char, 2>, 4096> kPairs = make_pair_table();

}  // namespace

char* base64_encode_to(ByteView data, char* out) noexcept {
  const std::uint8_t* d = data.data();
  const std::size_t n = data.size();
  std::size_t i = 0;
  for (; i + 3 <= n; i += 3) {
    const std::uint32_t v =
        (std::uint32_t{d[i]} << 16) | (std::uint32_t{d[i + 1]} << 8) | std::uint32_t{d[i + 2]};
    std::memcpy(out, kPairs[v >> 12].data(), 2);
    std::memcpy(out + 2, kPairs[v & 0xfff].data(), 2);
    out += 4;
  }
  const std::size_t rest = n - i;
  if (rest != 0) {
    std::uint32_t v = std::uint32_t{d[i]} << 16;
    if (rest == 2) v |= std::uint32_t{d[i + 1]} << 8;
    out[0] = kAlphabet[v >> 18];
    out[1] = kAlphabet[(v >> 12) & 0x3f];
    out[2] = rest == 2 ? kAlphabet[(v >> 6) & 0x3f] : '=';
    out[3] = '=';
    out += 4;
  }
  return out;
}

}  // namespace xks::api
