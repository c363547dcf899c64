// The XKS operations over a KeyBackend. Synchronous: every method may block on
// the HSM, so callers run them on the HSM worker pool, never on an I/O thread.
// Errors from the backend (KeyNotFound, InvalidKeyUsage from CKR_KEY_FUNCTION_
// NOT_PERMITTED, InvalidCiphertext, Throttling, DependencyTimeout, Internal) are
// passed through unchanged unless noted.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "xks/api/dto.hpp"
#include "xks/config/config.hpp"
#include "xks/core/result.hpp"
#include "xks/hsm/key_backend.hpp"

namespace xks::api {

enum class KeyUse { Encrypt, Decrypt };

// Which version of an external key a request used, for metrics and the access
// log. Written by the HSM worker and read by the connection, possibly while the
// worker still runs (a deadline answered first): hence atomics.
struct KeyVersionUse {
  std::atomic<std::uint32_t> version{0};  // 0: none chosen (yet)
  std::atomic<int> legacy{-1};            // the config::LegacyLayout that decrypted, or -1
  std::optional<config::LegacyLayout> legacy_layout() const noexcept {
    const int l = legacy.load(std::memory_order_relaxed);
    if (l < 0) return std::nullopt;
    return static_cast<config::LegacyLayout>(l);
  }
};

class XksService {
 public:
  // The backend must outlive the service.
  explicit XksService(hsm::KeyBackend& backend) noexcept : backend_(backend) {}

  // Spec GetKeyMetadata. keyUsage comes from the HSM's attributes (of the current
  // version's key), keyStatus from
  // the configuration (DISABLED when the entry is disabled). keySpec says what
  // the key is: AES_256, AES_<bits> for another AES length, NOT_AES otherwise
  // (KMS refuses CreateKey unless it is AES_256, naming the key spec as the
  // reason).
  Result<KeyMetadataResponse> get_key_metadata(const config::KeyEntry& key);

  // Spec Encrypt, with the key's current version: its HSM key, and its number
  // in ciphertextMetadata (crypto::ciphertext_metadata_for). AAD framed with that
  // metadata; with a CDIV request the result is decrypted again and compared to
  // the plaintext before answering (Appendix C), so CDIV on an encrypt-only key
  // is InvalidKeyUsage. Disabled key: InvalidStateException, without touching
  // the HSM. `use` (optional) receives the version.
  Result<EncryptResponse> encrypt(const config::KeyEntry& key, const EncryptRequest& request,
                                  KeyVersionUse* use = nullptr);

  // Spec Decrypt. ciphertextMetadata selects the key version and AAD layout. A
  // version the key does not list, or a metadata layout this build does not
  // know, is InvalidCiphertextException; a retired version (enabled: false) is
  // InvalidStateException; neither reaches the HSM. Metadata that is not this
  // proxy's is tried, with version 1, under each of the key store's legacy
  // layouts in order (one HSM decrypt each) and is otherwise
  // InvalidCiphertextException without a decrypt in the HSM. Order of checks:
  // key state, then key usage, then the ciphertext (a key without DECRYPT is
  // InvalidKeyUsageException whatever the ciphertext). `use` (optional)
  // receives the version, and the legacy layout that decrypted.
  Result<DecryptResponse> decrypt(const config::KeyEntry& key, const DecryptRequest& request,
                                  KeyVersionUse* use = nullptr);

  // For an Encrypt or Decrypt request refused before the HSM saw it (a body
  // that does not parse, a ciphertext that cannot be ours): the key's own error
  // when it has one (InvalidState when disabled, KeyNotFound, InvalidKeyUsage
  // when it lacks the usage), else `request_error`. Costs one attribute lookup,
  // on this error path only.
  Error key_error_first(const config::KeyEntry& key, KeyUse use, Error request_error);

 private:
  Error key_error_first(const config::KeyEntry& key, std::string_view label, KeyUse use,
                        Error request_error);
  Result<DecryptResponse> decrypt_legacy(const config::KeyEntry& key, const DecryptRequest& request,
                                         KeyVersionUse* use);

  hsm::KeyBackend& backend_;
};

// The GetHealthStatus body from the (cached) deep check of every HSM.
// ekmVendor is the first HSM's vendor; at most 10 HSMs are listed (spec limit),
// and an empty list becomes one UNAVAILABLE entry (spec: at least one).
// fleet_size 0 is reported as 1 (spec: greater than zero).
HealthResponse make_health_response(const std::vector<hsm::EkmHealth>& ekms, unsigned fleet_size);

}  // namespace xks::api
