// KeyBackend on one PKCS#11 token (one configured HSM): a pool of logged-in
// sessions, a cache of key handles by label, AES-GCM via CKM_AES_GCM.
//
// Recovery rules:
//  - a stale key handle (key deleted or recreated) is dropped and the label is
//    looked up once more;
//  - a broken session (closed, logged out, operation left active) is discarded and
//    the operation retried once on a fresh, logged-in session;
//  - a login refused for the PIN (incorrect, locked, expired, bad length) is never
//    retried: the backend latches "login refused" and fails every call fast with
//    InternalException, health UNAVAILABLE, until a new backend (a configuration
//    reload opens one while an HSM is unavailable);
//  - a device error (CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
//    CKR_CRYPTOKI_NOT_INITIALIZED, ...) discards the session; `device_errors_to_fail`
//    of them in a row take the HSM out: every call fails fast (InternalException,
//    no HSM call, no wait) while it is re-initialized with exponential backoff
//    (reinit_backoff_initial doubling to reinit_backoff_max): sessions closed and
//    reopened, and C_Finalize + C_Initialize too when this backend is the only
//    user of the module and no call is in flight. The attempt, once due, is made
//    by check_health() or by the first call to arrive (the others still fail
//    fast); a successful operation resets the backoff;
//  - a label that finds no key is KeyNotFoundException naming the label, the
//    HSM and the token, and an HsmEvent::KeyNotFound;
//  - after a successful C_DecryptInit, C_Decrypt's hsm.auth_failure_codes mean
//    the tag does not verify: InvalidCiphertextException, and never a device
//    error, a failover, a re-initialization or a health change, whatever the
//    code's class elsewhere.
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
#include "xks/core/backoff.hpp"
#include "xks/core/result.hpp"
#include "xks/hsm/events.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/pkcs11_module.hpp"
#include "xks/hsm/session_pool.hpp"
#include "xks/hsm/token.hpp"

namespace xks::hsm {

// Counters for metrics and tests.
struct Pkcs11Stats {
  std::uint64_t login_attempts = 0;  // C_Login calls
  std::uint64_t sessions_opened = 0;
  std::uint64_t sessions_discarded = 0;  // broken sessions thrown away
  std::uint64_t key_lookups = 0;         // C_FindObjects searches (cache misses)
  std::uint64_t stale_handles = 0;       // cached handles found invalid
  std::uint64_t device_errors = 0;       // calls failed with a device-class CKR
  std::uint64_t reinit_attempts = 0;
  std::uint64_t module_reinits = 0;  // of which with C_Finalize + C_Initialize
  bool down = false;                 // taken out after repeated device errors
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
    // Failures, recoveries, vanished keys (events.hpp); may be empty.
    HsmEventHook on_event;
    // Device errors in a row that take the HSM out.
    unsigned device_errors_to_fail = 3;
    std::chrono::milliseconds reinit_backoff_initial{100};
    std::chrono::milliseconds reinit_backoff_max{30000};
    // Times the re-initialization backoff; null: the steady clock. Must
    // outlive the backend.
    const core::Clock* clock = nullptr;
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
  // Same, and on failure `transient` says whether it is worth retrying later: the
  // device or network failed (device/session-class CKR), as opposed to the
  // configuration (module file, not a PKCS#11 module, token not found, PIN refused).
  static Result<std::unique_ptr<Pkcs11Backend>> open(const config::HsmConfig& config,
                                                     Options options, bool& transient);

  ~Pkcs11Backend() override;
  Pkcs11Backend(const Pkcs11Backend&) = delete;
  Pkcs11Backend& operator=(const Pkcs11Backend&) = delete;

  Result<KeyAttributes> key_attributes(std::string_view label) override;
  Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext, ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
  std::vector<SessionCounts> session_counts() const override;
  // One entry: encrypt+decrypt round trip on hsm.health_key.
  std::vector<EkmHealth> check_health() override;
  // Takes the PIN of the entry named like this HSM and clears a latched PIN
  // refusal: the next session logs in once with it.

  const std::string& name() const noexcept { return name_; }
  CK_SLOT_ID slot_id() const noexcept { return slot_.load(); }
  // True while taken out after repeated device errors.
  bool is_down() const noexcept { return down_.load(); }
  // Set when a login was refused for the PIN (see above); empty otherwise.
  std::optional<Error> login_refused() const;
  Pkcs11Stats stats() const;

 private:
  Pkcs11Backend(const config::HsmConfig& config, Options options,
                std::shared_ptr<Pkcs11Module> module, TokenIdentity identity);
  // True when C_Decrypt's `rv` is one of hsm.auth_failure_codes.
  bool is_auth_failure(CK_RV rv) const noexcept;

  Result<CK_SESSION_HANDLE> open_session();
  void emit(HsmEvent::Kind kind, std::string detail, CK_RV rv = CKR_OK,
            std::chrono::milliseconds retry_in = {}) const;
  // Device-error bookkeeping and the re-initialization (see the recovery rules).
  void note_device_error(CK_RV rv, std::string_view call);
  void note_success();
  std::optional<Error> unavailable_error();  // set while down (may run a due attempt)
  bool try_recover();                        // true when the HSM is back
  CK_RV relocate_token();
  void close_session(CK_SESSION_HANDLE session) noexcept;
  Error login_refused_error(CK_RV rv) const;

  // On a failed PKCS#11 call, rv_out receives its code (for the recovery rules).
  // `was_cached`: the label had a handle until now (a miss means the key vanished).
  Result<CK_OBJECT_HANDLE> find_key(CK_SESSION_HANDLE session, std::string_view label,
                                    CK_RV& rv_out, bool was_cached = false);
  void forget_key(std::string_view label, CK_OBJECT_HANDLE stale);

  // Runs `op(session, key)` with the recovery rules above. `op` returns CK_RV
  // and fills its own outputs; `map` turns a final failure into an Error.
  template <class Op, class Map>
  Result<void> with_key(std::string_view label, Op&& op, Map&& map);

  std::shared_ptr<Pkcs11Module> module_;
  CK_FUNCTION_LIST* fn_;
  const std::string name_;
  std::atomic<CK_SLOT_ID> slot_;
  const TokenIdentity identity_;
  SecureString pin_;  // guarded by login_mutex_
  const config::IvMode iv_mode_;
  const std::vector<unsigned long> auth_failure_codes_;
  const std::string health_key_;
  const std::function<void(std::string_view, CK_RV)> on_login_;
  const HsmEventHook on_event_;
  const unsigned device_errors_to_fail_;
  std::atomic<CK_RV> last_open_rv_{CKR_OK};  // why the last session open failed

  // Device-failure state.
  std::atomic<bool> down_{false};
  std::mutex recover_mutex_;        // one re-initialization at a time (try_lock)
  mutable std::mutex state_mutex_;  // guards the fields below
  unsigned consecutive_device_errors_ = 0;
  CK_RV down_rv_ = CKR_OK;
  std::string down_reason_;
  core::Backoff backoff_;  // of the re-initialization attempts

  std::mutex login_mutex_;  // one C_Login at a time, per token
  std::atomic<CK_RV> login_refused_{CKR_OK};

  mutable std::shared_mutex keys_mutex_;
  std::map<std::string, CK_OBJECT_HANDLE, std::less<>> keys_;

  std::atomic<std::uint64_t> login_attempts_{0};
  std::atomic<std::uint64_t> sessions_opened_{0};
  std::atomic<std::uint64_t> sessions_discarded_{0};
  std::atomic<std::uint64_t> key_lookups_{0};
  std::atomic<std::uint64_t> stale_handles_{0};
  std::atomic<std::uint64_t> device_errors_{0};
  std::atomic<std::uint64_t> reinit_attempts_{0};
  std::atomic<std::uint64_t> module_reinits_{0};

  // Last: destroyed first, closing its sessions while module_ is still loaded.
  SessionPool pool_;
};

}  // namespace xks::hsm
