// A PKCS#11 token as xksctl sees it: one session, one login, and the key
// inventory the daemon's backend never needs (every secret key with all its
// attributes, key generation). Step by step so that `doctor` can report
// which step failed: module, token, login.
#pragma once

#include <p11-kit/pkcs11.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/hsm/pkcs11_module.hpp"
#include "xks/hsm/token.hpp"

namespace xks::tools {

struct TokenKey {
  CK_OBJECT_HANDLE handle = 0;
  std::string label;
  std::string id_hex;
  std::optional<CK_KEY_TYPE> type;
  std::optional<CK_ULONG> value_len;
  bool encrypt = false, decrypt = false, wrap = false, unwrap = false;
  bool sign = false, verify = false, derive = false;
  bool sensitive = false, extractable = true;

  bool is_aes_256() const noexcept {
    return type && *type == CKK_AES && value_len && *value_len == 32;
  }
  std::string type_name() const;  // "AES-256", "AES-128", "DES3", "GENERIC_SECRET-32"...
  std::string usages() const;     // "encrypt,decrypt" or "none"
  // Why this key must not back a key store ("extractable", "not sensitive",
  // "not AES", "not 32 bytes"), empty when safe.
  std::vector<std::string> unsafe() const;
};

class ToolToken {
 public:
  explicit ToolToken(config::HsmConfig hsm) : hsm_(std::move(hsm)) {}
  ~ToolToken();
  ToolToken(const ToolToken&) = delete;
  ToolToken& operator=(const ToolToken&) = delete;

  // Each step throws std::runtime_error whose message says what to fix.
  void load_module();
  void find_token();  // after load_module
  // Throws unless the token offers CKM_AES_GCM (as the daemon checks at startup).
  void check_gcm();                    // after find_token
  void open_session(bool read_write);  // after find_token
  // C_Login as CKU_USER, exactly once per ToolToken: a refused PIN is never
  // retried (five wrong PINs lock a CloudHSM user). Returns the CKR code;
  // CKR_USER_ALREADY_LOGGED_IN counts as success.
  CK_RV login();
  // Every step at once, throwing on a refused login too (for keys create|list).
  void open_and_login(bool read_write);

  std::vector<TokenKey> secret_keys();
  std::vector<TokenKey> find_by_label(const std::string& label);
  TokenKey generate_aes256(const std::string& label, const std::vector<std::uint8_t>& id,
                           bool encrypt, bool decrypt);
  // AES-GCM encrypt then decrypt of 32 random bytes; returns the time both took.
  std::chrono::microseconds gcm_round_trip(CK_OBJECT_HANDLE key);

  const config::HsmConfig& config() const noexcept { return hsm_; }
  std::string module_description() const;
  std::string token_description() const { return token_description_; }

 private:
  TokenKey read_key(CK_OBJECT_HANDLE handle);
  std::vector<CK_OBJECT_HANDLE> find_objects(std::vector<CK_ATTRIBUTE> tmpl);

  config::HsmConfig hsm_;
  std::shared_ptr<hsm::Pkcs11Module> module_;
  CK_FUNCTION_LIST* fn_ = nullptr;
  std::optional<CK_SLOT_ID> slot_;
  hsm::TokenIdentity identity_;
  std::string token_description_;
  std::optional<CK_SESSION_HANDLE> session_;
  bool login_attempted_ = false;
  bool logged_in_ = false;
};

// "CKR_PIN_INCORRECT (0xa0)".
std::string ckr_text(CK_RV rv);

// Creates an AES-256 key with the safe template on `hsm` under a label no key
// has yet (throws otherwise, naming the fix) and prints what was created.
TokenKey create_key(const config::HsmConfig& hsm, const std::string& label,
                    const std::vector<std::uint8_t>& id, bool encrypt, bool decrypt);

}  // namespace xks::tools
