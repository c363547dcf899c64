// libFuzzer target for the strict Base64 decoder (every binary field of every
// request goes through it). Invariants: no crash, decoding is exact (re-encoding
// what was accepted gives back the input byte for byte), and the size
// prediction matches.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "xks/crypto/base64.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);  // NOLINT
  const auto decoded = xks::crypto::base64_decode(text);
  if (decoded) {
    if (xks::crypto::base64_encode(*decoded) != text) std::abort();
    if (xks::crypto::base64_decoded_size(text) != decoded->size()) std::abort();
  }
  // Encoding arbitrary bytes always decodes back to them.
  const std::string encoded = xks::crypto::base64_encode(xks::ByteView(data, size));
  const auto back = xks::crypto::base64_decode(encoded);
  if (!back || back->size() != size || !std::equal(back->begin(), back->end(), data)) std::abort();
  return 0;
}
