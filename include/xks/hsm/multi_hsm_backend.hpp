// KeyBackend over several HSMs holding the same keys under the same labels (a
// replicated fleet, one Pkcs11Backend each). Each call goes to the healthy HSM
// with the fewest calls in flight; a failure of the HSM itself (InternalException,
// DependencyTimeoutException, ThrottlingException) is retried once on another
// HSM, and the failing one (unless merely busy) is marked failed until a
// successful call or health check. A failure about the request (bad tag, key
// usage, key not found, validation) is answered as is: another HSM would say
// the same. With one HSM this is a thin pass-through.
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/backoff.hpp"
#include "xks/hsm/events.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/pkcs11_backend.hpp"

namespace xks::hsm {

// A member of a fleet that did not open at startup for a reason worth retrying
// (device or network, never configuration). It fails every call fast with
// InternalException naming the reason, reports UNAVAILABLE (with the reason) from
// check_health(), and each check_health() whose backoff has elapsed tries to open
// it again (backoff: reinit_backoff_initial doubling to reinit_backoff_max of the
// options); once open, it forwards everything to the real backend.
class DeferredHsm final : public KeyBackend {
 public:
  // Opens the real backend; on failure sets `transient` (see Pkcs11Backend::open).
  using Opener =
      std::function<Result<std::unique_ptr<KeyBackend>>(const config::HsmConfig&, bool& transient)>;

  DeferredHsm(config::HsmConfig config, Error first_error, Opener opener,
              HsmEventHook on_event = {},
              std::chrono::milliseconds backoff_initial = std::chrono::milliseconds{100},
              std::chrono::milliseconds backoff_max = std::chrono::milliseconds{30000},
              const core::Clock& clock = core::steady_clock());

  Result<KeyAttributes> key_attributes(std::string_view label) override;
  Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext, ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
  // The real backend's counts once open; before, none open or in use.
  std::vector<SessionCounts> session_counts() const override;
  std::vector<EkmHealth> check_health() override;

  bool is_open() const;
  const std::string& name() const noexcept { return name_; }

 private:
  std::shared_ptr<KeyBackend> real() const;
  Error not_open_error() const;
  void try_open();

  const std::string name_;
  const Opener opener_;
  const HsmEventHook on_event_;

  std::mutex open_mutex_;  // one attempt at a time
  mutable std::mutex mutex_;
  config::HsmConfig config_;
  std::shared_ptr<KeyBackend> real_;
  Error last_error_;
  // Gives up when a retry fails for a configuration reason.
  core::Backoff backoff_;
};

class MultiHsmBackend final : public KeyBackend {
 public:
  // One backend per HSM, in configuration order; at least one.
  explicit MultiHsmBackend(std::vector<std::unique_ptr<KeyBackend>> members);

  // Opens a Pkcs11Backend per entry of `hsms`. Fails (with that HSM's error,
  // its name in the message) if any of them does not open: starting with part
  // of a fleet silently missing is worse than a clear startup error. A caller
  // that wants to start degraded opens the members itself and uses the
  // constructor.
  static Result<std::unique_ptr<MultiHsmBackend>> open(const std::vector<config::HsmConfig>& hsms,
                                                       const Pkcs11Backend::Options& options = {});

  // Starts degraded if need be: opens every HSM it can; one that fails for a
  // device or network reason becomes a DeferredHsm (UNAVAILABLE in health, retried
  // from check_health with backoff; options.on_event gets OpenDeferred / Opened).
  // A configuration failure of any HSM (module missing, not a PKCS#11 module,
  // token not found, PIN refused) still fails the whole fleet, with that HSM's
  // message: the daemon must exit and say what to fix.
  static Result<std::unique_ptr<MultiHsmBackend>> open_fleet(
      const std::vector<config::HsmConfig>& hsms, const Pkcs11Backend::Options& options = {});

  Result<KeyAttributes> key_attributes(std::string_view label) override;
  Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext, ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
  // Every member's, in configuration order.
  std::vector<SessionCounts> session_counts() const override;
  // One entry per HSM, in configuration order. Also updates which HSMs are
  // marked failed: UNAVAILABLE marks, ACTIVE or DEGRADED clears.
  std::vector<EkmHealth> check_health() override;

  std::size_t size() const noexcept { return members_.size(); }
  bool is_marked_failed(std::size_t index) const;

  // True for failures of the HSM rather than of the request.
  static bool is_hsm_failure(const Error& e) noexcept;

 private:
  struct Member {
    std::unique_ptr<KeyBackend> backend;
    std::atomic<unsigned> outstanding{0};
    std::atomic<bool> failed{false};
  };

  Member* pick(const Member* exclude);
  template <class Call>
  auto dispatch(Call&& call) -> decltype(call(std::declval<KeyBackend&>()));

  std::vector<std::unique_ptr<Member>> members_;
};

}  // namespace xks::hsm
