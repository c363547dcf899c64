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
#include <memory>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/pkcs11_backend.hpp"

namespace xks::hsm {

class MultiHsmBackend final : public KeyBackend {
 public:
  // One backend per HSM, in configuration order; at least one.
  explicit MultiHsmBackend(std::vector<std::unique_ptr<KeyBackend>> members);

  // Opens a Pkcs11Backend per entry of `hsms`. Fails (with that HSM's error,
  // its name in the message) if any of them does not open: starting with part
  // of a fleet silently missing is worse than a clear startup error. A caller
  // that wants to start degraded opens the members itself and uses the
  // constructor.
  static Result<std::unique_ptr<MultiHsmBackend>> open(
      const std::vector<config::HsmConfig>& hsms, const Pkcs11Backend::Options& options = {});

  Result<KeyAttributes> key_attributes(std::string_view label) override;
  Result<GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
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
