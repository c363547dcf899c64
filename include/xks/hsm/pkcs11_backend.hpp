// KeyBackend on one PKCS#11 token (one configured HSM): a pool of logged-in
// sessions, a cache of key handles by label, AES-GCM via CKM_AES_GCM.
//
// Recovery rules (xks-api-notes.md, "Lessons"):
//  - a stale key handle (key deleted or recreated) is dropped and the label is
//    looked up once more;
//  - a broken session (closed, logged out, operation left active) is discarded and
//    the operation retried once on a fresh, logged-in session;
//  - a login refused for the PIN (incorrect, locked, expired, bad length) is never
//    retried: the backend latches "login refused" and fails every call fast with
//    InternalException, health UNAVAILABLE, until a new backend is constructed
//    (configuration reload).
// Thread-safe: any number of threads may call it at once; at most `sessions`
// calls touch the HSM concurrently, the others wait up to lease_timeout.
#pragma once

#include <p11-kit/pkcs11.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

#include "xks/config/config.hpp"
#include "xks/core/result.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/pkcs11_module.hpp"
#include "xks/hsm/session_pool.hpp"

namespace xks::hsm {

// Counters for metrics and tests (design.md, Style 8).
struct Pkcs11Stats {
  std::uint64_t login_attempts = 0;      // C_Login calls
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_discarded = 0;  // broken sessions thrown away
  std::uint64_t key_lookups = 0;         // C_FindObjects searches (cache misses)
  std::uint64_t stale_handles = 0;       // cached handles found invalid
  std::size_t sessions_in_use = 0;
  std::size_t sessions_open = 0;
};

class Pkcs11Backend final : public KeyBackend {
 public:
  struct Options {
    // How long a call waits for a free session before ThrottlingException.
    // Well below KMS's 250 ms so the answer still arrives in time.
    std::chrono::milliseconds lease_timeout{100};
    // Called after every C_Login with its result (never the PIN), for the log
    // and metrics: this module does not log by itself.
    std::function<void(std::string_view hsm_name, CK_RV rv)> on_login;
  };

  // Loads the module, finds the token (by label, else by slot id), opens and
  // logs in `sessions` sessions. Returns an error rather than throwing so that a
  // fleet of HSMs can start with one of them down; the composition root throws
  // if it needs this one. Messages (InternalException) say what to fix: module
  // not found / not a PKCS#11 module, token not found (listing the tokens seen),
  // login refused (CKR name, PIN never shown), session limits.
  static Result<std::unique_ptr<Pkcs11Backend>> open(const config::HsmConfig& config,
                                                     Options options);
  static Result<std::unique_ptr<Pkcs11Backend>> open(const config::HsmConfig& config) {
    return open(config, Options{});
  }

  ~Pkcs11Backend() override;
  Pkcs11Backend(const Pkcs11Backend&) = delete;
  Pkcs11Backend& operator=(const Pkcs11Backend&) = delete;

  Result<KeyAttributes> key_attributes(std::string_view label) override;
  Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
  // One entry: encrypt+decrypt round trip on hsm.health_key.
  std::vector<EkmHealth> check_health() override;

  const std::string& name() const noexcept { return name_; }
  CK_SLOT_ID slot_id() const noexcept { return slot_; }
  // Set when a login was refused for the PIN (see above); empty otherwise.
  std::optional<Error> login_refused() const;
  Pkcs11Stats stats() const;

 private:
  struct TokenIdentity {
    std::string label, serial, manufacturer, model, firmware;
  };
  Pkcs11Backend(const config::HsmConfig& config, Options options,
                std::shared_ptr<Pkcs11Module> module, CK_SLOT_ID slot, TokenIdentity identity);

  Result<CK_SESSION_HANDLE> open_session();
  void close_session(CK_SESSION_HANDLE session) noexcept;
  Error login_refused_error(CK_RV rv) const;

  // On a failed PKCS#11 call, rv_out receives its code (for the recovery rules).
  Result<CK_OBJECT_HANDLE> find_key(CK_SESSION_HANDLE session, std::string_view label,
                                    CK_RV& rv_out);
  void forget_key(std::string_view label, CK_OBJECT_HANDLE stale);

  // Runs `op(session, key)` with the recovery rules above. `op` returns CK_RV
  // and fills its own outputs; `map` turns a final failure into an Error.
  template <class Op, class Map>
  Result<void> with_key(std::string_view label, Op&& op, Map&& map);

  std::shared_ptr<Pkcs11Module> module_;
  CK_FUNCTION_LIST* fn_;
  const std::string name_;
  const CK_SLOT_ID slot_;
  const TokenIdentity identity_;
  const SecureString pin_;
  const config::IvMode iv_mode_;
  const std::string health_key_;
  const std::function<void(std::string_view, CK_RV)> on_login_;

  std::mutex login_mutex_;                 // one C_Login at a time, per token
  std::atomic<CK_RV> login_refused_{CKR_OK};

  mutable std::shared_mutex keys_mutex_;
  std::map<std::string, CK_OBJECT_HANDLE, std::less<>> keys_;

  std::atomic<std::uint64_t> login_attempts_{0};
  std::atomic<std::uint64_t> sessions_opened_{0};
  std::atomic<std::uint64_t> sessions_discarded_{0};
  std::atomic<std::uint64_t> key_lookups_{0};
  std::atomic<std::uint64_t> stale_handles_{0};

  // Last: destroyed first, closing its sessions while module_ is still loaded.
  SessionPool pool_;
};

}  // namespace xks::hsm
