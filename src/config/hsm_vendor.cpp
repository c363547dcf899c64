#include "xks/config/hsm_vendor.hpp"

#include <array>

#include "xks/hsm/ckr_names.hpp"

namespace xks::config {

namespace {

constexpr std::array<unsigned long, 2> kStandardAuthFailure = {CKR_ENCRYPTED_DATA_INVALID,
                                                               CKR_ENCRYPTED_DATA_LEN_RANGE};
// SoftHSM2 2.6 answers a GCM tag that does not verify with CKR_GENERAL_ERROR
// (pinned by tests/unit/hsm/pkcs11_backend_test.cpp).
constexpr std::array<unsigned long, 1> kSoftHsmAuthFailure = {CKR_GENERAL_ERROR};
// Entrust nShield answers it with CKR_FUNCTION_FAILED.
constexpr std::array<unsigned long, 1> kNShieldAuthFailure = {CKR_FUNCTION_FAILED};

constexpr std::string_view kUsesGivenIv =
    "it uses the IV it is given as given, so a zeroed buffer would be the IV of every "
    "encryption (each call would be refused); use caller_random";
constexpr std::string_view kNoGeneratedIv =
    "it does not generate GCM IVs (a NULL IV fails C_EncryptInit); use caller_random";
constexpr std::array<VendorProfile::RefusedIv, 2> kSoftTokenRefused = {
    {{IvMode::HsmIntoZeroBuffer, kUsesGivenIv}, {IvMode::HsmAppended, kNoGeneratedIv}}};
constexpr std::array<VendorProfile::RefusedIv, 2> kZeroBufferOnly = {
    {{IvMode::CallerRandom,
      "it generates the GCM IV itself and refuses one from the caller "
      "(CKR_MECHANISM_PARAM_INVALID); use hsm_into_zero_buffer"},
     {IvMode::HsmAppended,
      "it writes the IV it generates into a 12-byte zeroed buffer and does not append "
      "it; use hsm_into_zero_buffer"}}};
constexpr std::array<VendorProfile::RefusedIv, 1> kLunaRefused = {
    {{IvMode::HsmIntoZeroBuffer, kUsesGivenIv}}};

constexpr std::array<VendorProfile, 8> kProfiles = {{
    {HsmVendor::Generic,
     "generic",
     "a generic PKCS#11 module",
     IvMode::CallerRandom,
     {},
     {},
     PinFormat::Plain,
     false,
     ""},
    {HsmVendor::SoftHsm2, "softhsm2", "SoftHSM2", IvMode::CallerRandom, kSoftTokenRefused,
     kSoftHsmAuthFailure, PinFormat::Plain, false,
     "SoftHSM2 finds its tokens through the file named by SOFTHSM2_CONF (set it with "
     "hsm.environment), else /etc/softhsm/softhsm2.conf"},
    {HsmVendor::Nss,
     "nss",
     "NSS softoken",
     IvMode::CallerRandom,
     kSoftTokenRefused,
     {},
     PinFormat::Plain,
     true,
     "NSS softoken opens the database named by configdir in hsm.init_args"},
    {HsmVendor::CloudHsm,
     "cloudhsm",
     "AWS CloudHSM",
     IvMode::HsmIntoZeroBuffer,
     kZeroBufferOnly,
     {},
     PinFormat::UserPassword,
     false,
     "the CloudHSM client finds the cluster through its own configuration "
     "(configure-pkcs11 -a <HSM IP>)"},
    {HsmVendor::Luna,
     "luna",
     "Thales Luna",
     IvMode::HsmAppended,
     kLunaRefused,
     {},
     PinFormat::Plain,
     false,
     "the Luna client reads Chrystoki.conf (ChrystokiConfigurationPath) and sees the "
     "partitions registered with it"},
    {HsmVendor::NShield, "nshield", "Entrust nShield", IvMode::HsmIntoZeroBuffer, kZeroBufferOnly,
     kNShieldAuthFailure, PinFormat::Plain, false,
     "the nShield client reads cknfastrc and needs the hardserver running"},
    {HsmVendor::Vault,
     "vault",
     "HashiCorp Vault's PKCS#11 provider",
     IvMode::CallerRandom,
     {},
     {},
     PinFormat::Plain,
     false,
     "the Vault provider reads its configuration file (VAULT_KMIP_CONFIG, else "
     "/etc/vault-pkcs11.hcl)"},
    {HsmVendor::Utimaco,
     "utimaco",
     "Utimaco",
     IvMode::CallerRandom,
     {},
     {},
     PinFormat::Plain,
     false,
     "the Utimaco module reads its cs_pkcs11 configuration file"},
}};

}  // namespace

const VendorProfile& vendor_profile(HsmVendor vendor) noexcept {
  for (const auto& p : kProfiles) {
    if (p.vendor == vendor) return p;
  }
  return kProfiles.front();
}

std::optional<HsmVendor> vendor_from_name(std::string_view name) noexcept {
  for (const auto& p : kProfiles) {
    if (p.name == name) return p.vendor;
  }
  return std::nullopt;
}

std::span<const VendorProfile> vendor_profiles() noexcept { return kProfiles; }

std::span<const unsigned long> standard_auth_failure_codes() noexcept {
  return kStandardAuthFailure;
}

void apply_vendor_defaults(HsmConfig& hsm) {
  const VendorProfile& profile = vendor_profile(hsm.vendor);
  hsm.iv = profile.iv;
  hsm.pin_format = profile.pin_format;
  hsm.auth_failure_codes.assign(kStandardAuthFailure.begin(), kStandardAuthFailure.end());
  hsm.auth_failure_codes.insert(hsm.auth_failure_codes.end(),
                                profile.extra_auth_failure_codes.begin(),
                                profile.extra_auth_failure_codes.end());
}

std::string_view to_string(HsmVendor vendor) noexcept { return vendor_profile(vendor).name; }

}  // namespace xks::config
