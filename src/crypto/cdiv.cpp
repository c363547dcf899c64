#include "xks/crypto/cdiv.hpp"

#include "xks/crypto/base64.hpp"
#include "xks/crypto/digest.hpp"

namespace xks::crypto {

std::string compute_cdiv(ByteView aad, ByteView metadata, ByteView iv, ByteView ciphertext,
                         ByteView tag) {
  const auto digest = sha256({aad, metadata, iv, ciphertext, tag});
  // Empty only if OpenSSL failed; a real CDIV is never empty, so callers can
  // test for it and answer InternalException.
  if (!digest) return {};
  return base64_encode(*digest);
}

}  // namespace xks::crypto
