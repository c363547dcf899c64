// A throwaway SoftHSM2 installation for the hsm tests: a temporary
// SOFTHSM2_CONF and token directory, tokens made with softhsm2-util, keys made
// through PKCS#11 from an admin session. Made on first use (tests that need no
// HSM do not pay for it, which matters when ctest runs each test in its own
// process), before the module is first initialized (SoftHSM2 reads its
// configuration then), and kept until the process exits.
#pragma once

#include <p11-kit/pkcs11.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/secure.hpp"
#include "xks/hsm/pkcs11_module.hpp"

namespace xks::hsm::test {

inline constexpr char kSoftHsmModule[] = "/usr/lib/softhsm/libsofthsm2.so";

// Tokens and their user PINs.
inline constexpr char kMainToken[] = "xks-main";
inline constexpr char kMainPin[] = "1234";
inline constexpr char kSecondToken[] = "xks-second";
inline constexpr char kSecondPin[] = "5678";
inline constexpr char kPinChangeToken[] = "xks-pin-change";
inline constexpr char kPinChangePin[] = "1111";
inline constexpr char kBadPinToken[] = "xks-bad-pin";
inline constexpr char kBadPinPin[] = "4321";
inline constexpr char kSoPin[] = "87654321";

struct KeySpec {
  std::string label;
  std::string id_hex;  // CKA_ID
  bool encrypt = true;
  bool decrypt = true;
  bool wrap = false;
  bool unwrap = false;
  std::optional<Bytes> value;  // imported (same key on two tokens) or generated
};

class SoftHsm {
 public:
  static SoftHsm& get();       // sets up on first use
  static SoftHsm& instance();  // as is, perhaps not set up
  ~SoftHsm();                  // removes the directory

  // Finalizes the module (the global test environment's TearDown), so that
  // no backend outlives the test run; get() loads it again if needed.
  void release();

  const std::shared_ptr<Pkcs11Module>& module() const { return module_; }
  CK_SLOT_ID slot(std::string_view token_label) const;

  config::HsmConfig config(std::string_view token_label, std::string_view pin,
                           unsigned sessions = 4) const;

  // Admin operations through their own logged-in session.
  CK_OBJECT_HANDLE create_key(std::string_view token_label, std::string_view pin,
                              const KeySpec& spec);
  void destroy_keys(std::string_view token_label, std::string_view pin, std::string_view label);
  void change_pin_and_logout(std::string_view token_label, std::string_view old_pin,
                             std::string_view new_pin);
  void close_all_sessions(std::string_view token_label);

 private:
  void set_up();
  CK_SESSION_HANDLE admin_session(std::string_view token_label, std::string_view pin);

  std::filesystem::path dir_;
  std::shared_ptr<Pkcs11Module> module_;
};

}  // namespace xks::hsm::test
