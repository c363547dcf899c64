// What each HSM family is documented to do through PKCS#11, as the defaults of
// the hsm settings that depend on it (hsm.vendor). docs/configuration.md gives
// the source of every fact; an explicit setting always wins over a default,
// except where the family is known to make it unsafe or unusable.
#pragma once

#include <optional>
#include <span>
#include <string_view>

#include "xks/config/config.hpp"

namespace xks::config {

struct VendorProfile {
  // An IV mode this family is known to mishandle, and why (refused at startup).
  struct RefusedIv {
    IvMode mode;
    std::string_view why;
  };

  HsmVendor vendor;
  std::string_view name;    // as written in hsm.vendor
  std::string_view family;  // for messages: "AWS CloudHSM"
  IvMode iv;
  std::span<const RefusedIv> refused_iv;
  // Added to the standard "tag does not verify" codes (CKR_ENCRYPTED_DATA_INVALID,
  // CKR_ENCRYPTED_DATA_LEN_RANGE) for C_Decrypt.
  std::span<const unsigned long> extra_auth_failure_codes;
  PinFormat pin_format;
  bool needs_init_args;
  // Where the module finds its tokens, for "no token seen" messages; may be empty.
  std::string_view token_source_hint;
};

const VendorProfile& vendor_profile(HsmVendor vendor) noexcept;
std::optional<HsmVendor> vendor_from_name(std::string_view name) noexcept;
std::span<const VendorProfile> vendor_profiles() noexcept;

// Sets hsm.vendor's defaults: IV mode, tag-failure codes, PIN format.
void apply_vendor_defaults(HsmConfig& hsm);

// The codes every vendor uses for a failed tag check.
std::span<const unsigned long> standard_auth_failure_codes() noexcept;

}  // namespace xks::config
