// A KeyBackend decorator that times every HSM call into the metrics
// (xks_proxy_hsm_call_duration_seconds{hsm,function}).
#pragma once

#include <memory>

#include "xks/app/proxy_metrics.hpp"
#include "xks/hsm/key_backend.hpp"

namespace xks::app {

class InstrumentedBackend final : public hsm::KeyBackend {
 public:
  InstrumentedBackend(std::unique_ptr<hsm::KeyBackend> inner, ProxyMetrics& metrics,
                      std::size_t hsm_index)
      : inner_(std::move(inner)), metrics_(metrics), hsm_(hsm_index) {}

  Result<hsm::KeyAttributes> key_attributes(std::string_view label) override;
  Result<hsm::GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                     ByteView aad) override;
  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override;
  std::vector<hsm::EkmHealth> check_health() override;
  std::vector<hsm::SessionCounts> session_counts() const override {
    return inner_->session_counts();
  }

 private:
  template <class F>
  auto timed(HsmFunction function, F&& f);

  std::unique_ptr<hsm::KeyBackend> inner_;
  ProxyMetrics& metrics_;
  const std::size_t hsm_;
};

}  // namespace xks::app
