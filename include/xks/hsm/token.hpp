// The one PKCS#11 token layer that the daemon's backend and every xksctl
// subcommand use, so that the tool judges a token exactly as the daemon will:
// the module as configured (environment, C_Initialize arguments), the token
// selected by label, serial or slot, its identity, the AES-GCM mechanism
// check, a key's attributes, and the template of a new key.
#pragma once

#include <p11-kit/pkcs11.h>

#include <memory>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/result.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/pkcs11_module.hpp"

namespace xks::hsm {

struct TokenIdentity {
  CK_SLOT_ID slot = 0;
  std::string label, serial, manufacturer, model, firmware;
  // "'xks-demo' (slot 3, serial 9c1e..., SoftHSM project SoftHSM v2)"
  std::string describe() const;
};

// Applies hsm.environment, then loads and initializes hsm.module with
// hsm.init_args and hsm.init_os_locking. A failed C_Initialize names its CKR
// code and what that code usually means for the setting to fix (e.g.
// CKR_ARGUMENTS_BAD: the module needs hsm.init_args); `init_rv` receives it.
Result<std::shared_ptr<Pkcs11Module>> load_module(const config::HsmConfig& hsm,
                                                  CK_RV* init_rv = nullptr);

// The initialized tokens the module shows, in slot order. `rv` receives
// C_GetSlotList's code when that fails.
Result<std::vector<TokenIdentity>> list_tokens(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm,
                                               CK_RV* rv = nullptr);

// The one token hsm.token_label (compared blank-padded, as PKCS#11 stores it),
// hsm.token_serial or hsm.slot_id selects. Not found / ambiguous messages list
// the tokens seen; with none seen they say where the module looks for tokens.
Result<TokenIdentity> find_token(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm,
                                 CK_RV* rv = nullptr);

// C_GetMechanismInfo(CKM_AES_GCM) with CKF_ENCRYPT and CKF_DECRYPT: every XKS
// Encrypt and Decrypt needs it. A module that cannot say (e.g.
// CKR_FUNCTION_NOT_SUPPORTED) passes; one that says no is an error naming the
// token, the mechanism and the fix.
Result<void> check_gcm_mechanism(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm,
                                 const TokenIdentity& token);

// A key object's type, size, usages and protection, in one C_GetAttributeValue
// (attributes a module will not reveal count as unknown: usages false,
// sensitive false, extractable true). On failure `rv` receives the code.
Result<KeyAttributes> read_key_attributes(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                                          CK_OBJECT_HANDLE key, CK_RV& rv);

// The template of every key xksctl creates: an AES-256 token key that is
// private, sensitive, not extractable, never wraps, unwraps, signs, verifies or
// derives, with the usages asked for. Points into `storage`, which must outlive it.
struct KeyTemplate {
  struct Storage {
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE type = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE, encrypt = CK_FALSE, decrypt = CK_FALSE;
    std::string label;
    std::vector<std::uint8_t> id;
  };
  std::unique_ptr<Storage> storage;
  std::vector<CK_ATTRIBUTE> attributes;
};
KeyTemplate safe_aes256_template(std::string label, std::vector<std::uint8_t> id, bool encrypt,
                                 bool decrypt);

}  // namespace xks::hsm
