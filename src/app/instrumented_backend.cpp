#include "xks/app/instrumented_backend.hpp"

#include "xks/core/blocking_pool.hpp"

namespace xks::app {

template <class F>
auto InstrumentedBackend::timed(HsmFunction function, F&& f) {
  const auto start = core::SteadyClock::now();
  auto result = f();
  metrics_.record_hsm_call(hsm_, function, core::SteadyClock::now() - start);
  return result;
}

Result<hsm::KeyAttributes> InstrumentedBackend::key_attributes(std::string_view label) {
  return timed(HsmFunction::KeyAttributes, [&] { return inner_->key_attributes(label); });
}

Result<hsm::GcmCiphertext> InstrumentedBackend::encrypt(std::string_view label, ByteView plaintext,
                                                        ByteView aad) {
  return timed(HsmFunction::Encrypt, [&] { return inner_->encrypt(label, plaintext, aad); });
}

Result<SecureBytes> InstrumentedBackend::decrypt(std::string_view label, ByteView ciphertext,
                                                 ByteView iv, ByteView tag, ByteView aad) {
  return timed(HsmFunction::Decrypt,
               [&] { return inner_->decrypt(label, ciphertext, iv, tag, aad); });
}

std::vector<hsm::EkmHealth> InstrumentedBackend::check_health() {
  return timed(HsmFunction::HealthCheck, [&] { return inner_->check_health(); });
}

}  // namespace xks::app
