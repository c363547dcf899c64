// The XKS operations over a KeyBackend. Synchronous: every method may block on
// the HSM, so callers run them on the HSM worker pool, never on an I/O thread.
// Errors from the backend (KeyNotFound, InvalidKeyUsage from CKR_KEY_FUNCTION_
// NOT_PERMITTED, InvalidCiphertext, Throttling, DependencyTimeout, Internal) are
// passed through unchanged unless noted.
#pragma once

#include <vector>

#include "xks/api/dto.hpp"
#include "xks/config/config.hpp"
#include "xks/core/result.hpp"
#include "xks/hsm/key_backend.hpp"

namespace xks::api {

enum class KeyUse { Encrypt, Decrypt };

class XksService {
 public:
  // The backend must outlive the service.
  explicit XksService(hsm::KeyBackend& backend) noexcept : backend_(backend) {}

  // Spec GetKeyMetadata. keyUsage comes from the HSM's attributes, keyStatus from
  // the configuration (DISABLED when the entry is disabled). keySpec says what
  // the key is: AES_256, AES_<bits> for another AES length, NOT_AES otherwise
  // (KMS refuses CreateKey unless it is AES_256, naming the key spec as the
  // reason).
  Result<KeyMetadataResponse> get_key_metadata(const config::KeyEntry& key);

  // Spec Encrypt. AAD framed with the current ciphertextMetadata; with a CDIV
  // request the result is decrypted again and compared to the plaintext before
  // answering (Appendix C), so CDIV on an encrypt-only key is InvalidKeyUsage.
  // Disabled key: InvalidStateException, without touching the HSM.
  Result<EncryptResponse> encrypt(const config::KeyEntry& key, const EncryptRequest& request);

  // Spec Decrypt. ciphertextMetadata selects the AAD layout; absent or unknown
  // metadata, or a 16-byte IV (this proxy only writes 12-byte IVs), is
  // InvalidCiphertextException without a decrypt in the HSM. Order of checks:
  // key state, then key usage, then the ciphertext (a key without DECRYPT is
  // InvalidKeyUsageException whatever the ciphertext).
  Result<DecryptResponse> decrypt(const config::KeyEntry& key, const DecryptRequest& request);

  // For an Encrypt or Decrypt request refused before the HSM saw it (a body
  // that does not parse, a ciphertext that cannot be ours): the key's own error
  // when it has one (InvalidState when disabled, KeyNotFound, InvalidKeyUsage
  // when it lacks the usage), else `request_error`. Costs one attribute lookup,
  // on this error path only.
  Error key_error_first(const config::KeyEntry& key, KeyUse use, Error request_error);

 private:
  hsm::KeyBackend& backend_;
};

// The GetHealthStatus body from the (cached) deep check of every HSM.
// ekmVendor is the first HSM's vendor; at most 10 HSMs are listed (spec limit),
// and an empty list becomes one UNAVAILABLE entry (spec: at least one).
// fleet_size 0 is reported as 1 (spec: greater than zero).
HealthResponse make_health_response(const std::vector<hsm::EkmHealth>& ekms, unsigned fleet_size);

}  // namespace xks::api
