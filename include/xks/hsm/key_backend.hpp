// The seam between the XKS operations and the key manager.
// Implemented by the PKCS#11 backend (real HSMs, SoftHSM2) and by fakes in unit
// tests. Every method may block on the HSM: callers run them on the HSM worker
// pool (xks::core::BlockingPool), never on an I/O thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"

namespace xks::hsm {

inline constexpr std::size_t kGcmIvBytes = 12;      // every IV this proxy hands out
inline constexpr std::size_t kGcmLongIvBytes = 16;  // also allowed by the spec (some HSMs' IVs)
inline constexpr std::size_t kGcmTagBytes = 16;

// The spec allows 12- and 16-byte IVs.
constexpr bool is_gcm_iv_size(std::size_t n) noexcept {
  return n == kGcmIvBytes || n == kGcmLongIvBytes;
}

// What the HSM says about a key object (read from its PKCS#11 attributes).
struct KeyAttributes {
  std::optional<unsigned long> key_type;  // CKA_KEY_TYPE, when the module reveals it
  bool is_aes = false;                    // CKA_KEY_TYPE == CKK_AES
  std::size_t key_bytes = 0;              // CKA_VALUE_LEN
  bool encrypt = false;                   // CKA_ENCRYPT
  bool decrypt = false;                   // CKA_DECRYPT
  bool wrap = false;                      // CKA_WRAP
  bool unwrap = false;                    // CKA_UNWRAP
  bool sign = false;                      // CKA_SIGN
  bool verify = false;                    // CKA_VERIFY
  bool derive = false;                    // CKA_DERIVE
  bool sensitive = false;                 // CKA_SENSITIVE
  bool extractable = true;                // CKA_EXTRACTABLE
  std::string id_hex;                     // CKA_ID, hex (for operators' logs)

  bool is_aes_256() const noexcept { return is_aes && key_bytes == 32; }
  // The spec's keyUsage strings (ENCRYPT, DECRYPT, WRAP, UNWRAP, SIGN, VERIFY,
  // DERIVE), at most 10, in that order.
  std::vector<std::string> key_usage() const;
};

struct GcmCiphertext {
  Bytes ciphertext;  // same length as the plaintext
  Bytes iv;          // kGcmIvBytes, or kGcmLongIvBytes from an HSM that makes those
  Bytes tag;         // kGcmTagBytes
};

enum class HealthStatus { Active, Degraded, Unavailable };
std::string_view to_string(HealthStatus s) noexcept;  // ACTIVE | DEGRADED | UNAVAILABLE

// One key manager (HSM / token) as GetHealthStatus reports it.
// Occupancy of one HSM's session pool (for metrics).
struct SessionCounts {
  std::string hsm;         // the configured HSM name
  std::size_t in_use = 0;  // leased right now
  std::size_t open = 0;    // open: idle, leased or being opened
};

struct EkmHealth {
  std::string id;      // e.g. token label and serial number
  std::string model;   // e.g. manufacturer, model, firmware version
  std::string vendor;  // token manufacturerID (ekmVendor)
  HealthStatus status = HealthStatus::Unavailable;
  std::string detail;                    // log-only: why it is not ACTIVE
  std::chrono::microseconds latency{0};  // of the probe's encrypt+decrypt
};

class KeyBackend {
 public:
  virtual ~KeyBackend() = default;

  // Attributes of the key labelled `label`. KeyNotFoundException if no such key.
  virtual Result<KeyAttributes> key_attributes(std::string_view label) = 0;

  // AES-GCM with a 16-byte tag; `aad` is passed to the HSM as is (the caller
  // frames it). The IV (12 bytes, or 16 from an HSM that generates those) comes
  // from the configured IV mode.
  virtual Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                        ByteView aad) = 0;

  // InvalidCiphertextException when the tag does not verify, or when the IV is
  // not 12 or 16 bytes or the tag not 16.
  virtual Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                                      ByteView tag, ByteView aad) = 0;

  // One entry per HSM that has a session pool, in configuration order; cheap
  // (no HSM call), callable from any thread. Default: none (fakes).
  virtual std::vector<SessionCounts> session_counts() const { return {}; }

  // Deep check: a real encrypt+decrypt on the configured health key of every HSM,
  // one entry per HSM.
  virtual std::vector<EkmHealth> check_health() = 0;
};

}  // namespace xks::hsm
