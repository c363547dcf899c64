#include "softhsm_env.hpp"

#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <stdexcept>

#include "xks/config/hsm_vendor.hpp"
#include "xks/hsm/ckr.hpp"

namespace xks::hsm::test {

namespace {

void check(CK_RV rv, std::string_view what) {
  if (rv != CKR_OK) {
    throw std::runtime_error(std::string{what} + ": " + std::string{ckr_name(rv)});
  }
}

void run(const std::string& command) {
  if (std::system((command + " >/dev/null 2>&1").c_str()) != 0) {
    throw std::runtime_error("command failed: " + command);
  }
}

class SoftHsmEnvironment : public ::testing::Environment {
 public:
  void TearDown() override { SoftHsm::instance().release(); }  // without setting up
};

[[maybe_unused]] ::testing::Environment* const kEnvironment =
    ::testing::AddGlobalTestEnvironment(new SoftHsmEnvironment);  // gtest owns it

}  // namespace

SoftHsm& SoftHsm::instance() {
  static SoftHsm the_instance;
  return the_instance;
}

SoftHsm& SoftHsm::get() {
  SoftHsm& instance = SoftHsm::instance();
  if (instance.dir_.empty()) {
    instance.set_up();
  } else if (!instance.module_) {
    auto loaded = Pkcs11Module::load(kSoftHsmModule, {});
    if (!loaded) throw std::runtime_error("cannot load SoftHSM2: " + loaded.error().message);
    instance.module_ = *loaded;
  }
  return instance;
}

SoftHsm::~SoftHsm() {
  std::error_code ec;
  if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
}

void SoftHsm::release() { module_.reset(); }

void SoftHsm::set_up() {
  std::string tmpl = (std::filesystem::temp_directory_path() / "xks-hsm-test-XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  dir_ = tmpl;
  std::filesystem::create_directory(dir_ / "tokens");
  {
    std::ofstream conf(dir_ / "softhsm2.conf");
    conf << "directories.tokendir = " << (dir_ / "tokens").string() << "\n"
         << "objectstore.backend = file\n"
         << "log.level = ERROR\n"
         << "slots.removable = false\n";
  }
  setenv("SOFTHSM2_CONF", (dir_ / "softhsm2.conf").c_str(), 1);
  for (auto [label, pin] :
       {std::pair{kMainToken, kMainPin}, std::pair{kSecondToken, kSecondPin},
        std::pair{kPinChangeToken, kPinChangePin}, std::pair{kBadPinToken, kBadPinPin}}) {
    run(std::string{"softhsm2-util --init-token --free --label "} + label + " --pin " + pin +
        " --so-pin " + kSoPin);
  }

  auto loaded = Pkcs11Module::load(kSoftHsmModule, {});
  if (!loaded) throw std::runtime_error("cannot load SoftHSM2: " + loaded.error().message);
  module_ = *loaded;

  // One AES-256 value shared by both tokens, to decrypt on one HSM what the
  // other encrypted (a replicated fleet).
  Bytes shared(32);
  for (std::size_t i = 0; i < shared.size(); ++i) shared[i] = static_cast<std::uint8_t>(i * 7 + 3);

  // Keep one logged-in session per token while creating keys: every login
  // costs SoftHSM2 a PIN key derivation, and closing a token's last session
  // logs it out.
  std::vector<CK_SESSION_HANDLE> keepers;
  for (auto [label, pin] :
       {std::pair{kMainToken, kMainPin}, std::pair{kSecondToken, kSecondPin},
        std::pair{kPinChangeToken, kPinChangePin}, std::pair{kBadPinToken, kBadPinPin}}) {
    keepers.push_back(admin_session(label, pin));
  }

  create_key(kMainToken, kMainPin, {"aes-1", "01", true, true, false, false, {}});
  create_key(kMainToken, kMainPin, {"aes-enc-only", "02", true, false, false, false, {}});
  create_key(kMainToken, kMainPin, {"aes-dec-only", "03", false, true, false, false, {}});
  create_key(kMainToken, kMainPin, {"aes-wrap", "04", true, true, true, true, {}});
  create_key(kMainToken, kMainPin, {"dup", "05", true, true, false, false, {}});
  create_key(kMainToken, kMainPin, {"dup", "06", true, true, false, false, {}});
  create_key(kMainToken, kMainPin, {"health", "07", true, true, false, false, {}});
  create_key(kMainToken, kMainPin, {"shared", "08", true, true, false, false, shared});
  create_key(kSecondToken, kSecondPin, {"shared", "08", true, true, false, false, shared});
  create_key(kSecondToken, kSecondPin, {"health", "07", true, true, false, false, {}});
  create_key(kPinChangeToken, kPinChangePin, {"aes-1", "01", true, true, false, false, {}});
  create_key(kBadPinToken, kBadPinPin, {"aes-1", "01", true, true, false, false, {}});
  for (CK_SESSION_HANDLE k : keepers) (void)module_->fn()->C_CloseSession(k);
}

CK_SLOT_ID SoftHsm::slot(std::string_view token_label) const {
  CK_FUNCTION_LIST* fn = module_->fn();
  CK_ULONG count = 0;
  check(fn->C_GetSlotList(CK_TRUE, nullptr, &count), "C_GetSlotList");
  std::vector<CK_SLOT_ID> slots(count);
  check(fn->C_GetSlotList(CK_TRUE, slots.data(), &count), "C_GetSlotList");
  for (CK_SLOT_ID s : slots) {
    CK_TOKEN_INFO info{};
    if (fn->C_GetTokenInfo(s, &info) != CKR_OK) continue;
    std::string label(reinterpret_cast<const char*>(info.label), sizeof info.label);
    label.erase(label.find_last_not_of(' ') + 1);
    if (label == token_label) return s;
  }
  throw std::runtime_error("no token " + std::string{token_label});
}

config::HsmConfig SoftHsm::config(std::string_view token_label, std::string_view pin,
                                  unsigned sessions) const {
  config::HsmConfig c;
  c.name = std::string{token_label};
  c.module = kSoftHsmModule;
  c.token_label = std::string{token_label};
  c.pin = SecureString{pin};
  c.sessions = sessions;
  c.health_key = "health";
  c.vendor = config::HsmVendor::SoftHsm2;
  config::apply_vendor_defaults(c);
  return c;
}

CK_SESSION_HANDLE SoftHsm::admin_session(std::string_view token_label, std::string_view pin) {
  CK_FUNCTION_LIST* fn = module_->fn();
  CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
  check(fn->C_OpenSession(slot(token_label), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                          &s),
        "C_OpenSession");
  std::string p{pin};
  const CK_RV rv = fn->C_Login(s, CKU_USER, reinterpret_cast<unsigned char*>(p.data()), p.size());
  if (rv != CKR_USER_ALREADY_LOGGED_IN) check(rv, "C_Login");
  return s;
}

CK_OBJECT_HANDLE SoftHsm::create_key(std::string_view token_label, std::string_view pin,
                                     const KeySpec& spec) {
  CK_FUNCTION_LIST* fn = module_->fn();
  const CK_SESSION_HANDLE s = admin_session(token_label, pin);
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE type = CKK_AES;
  CK_ULONG len = 32;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  auto flag = [&](bool b) { return b ? &yes : &no; };
  Bytes id;
  for (std::size_t i = 0; i + 1 < spec.id_hex.size(); i += 2) {
    id.push_back(static_cast<std::uint8_t>(std::stoul(spec.id_hex.substr(i, 2), nullptr, 16)));
  }
  std::string label = spec.label;
  std::vector<CK_ATTRIBUTE> tmpl = {
      {CKA_CLASS, &cls, sizeof cls},
      {CKA_KEY_TYPE, &type, sizeof type},
      {CKA_TOKEN, &yes, sizeof yes},
      {CKA_PRIVATE, &yes, sizeof yes},
      {CKA_SENSITIVE, &yes, sizeof yes},
      {CKA_EXTRACTABLE, &no, sizeof no},
      {CKA_ENCRYPT, flag(spec.encrypt), sizeof yes},
      {CKA_DECRYPT, flag(spec.decrypt), sizeof yes},
      {CKA_WRAP, flag(spec.wrap), sizeof yes},
      {CKA_UNWRAP, flag(spec.unwrap), sizeof yes},
      // SoftHSM2 defaults these to true on secret keys; KMS keys need neither.
      {CKA_SIGN, &no, sizeof no},
      {CKA_VERIFY, &no, sizeof no},
      {CKA_LABEL, label.data(), label.size()},
      {CKA_ID, id.data(), id.size()},
  };
  Bytes value = spec.value.value_or(Bytes{});
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  if (spec.value) {
    tmpl.push_back({CKA_VALUE, value.data(), value.size()});
    check(fn->C_CreateObject(s, tmpl.data(), tmpl.size(), &key), "C_CreateObject");
  } else {
    tmpl.push_back({CKA_VALUE_LEN, &len, sizeof len});
    CK_MECHANISM mech{CKM_AES_KEY_GEN, nullptr, 0};
    check(fn->C_GenerateKey(s, &mech, tmpl.data(), tmpl.size(), &key), "C_GenerateKey");
  }
  (void)fn->C_CloseSession(s);
  return key;
}

void SoftHsm::destroy_keys(std::string_view token_label, std::string_view pin,
                           std::string_view label) {
  CK_FUNCTION_LIST* fn = module_->fn();
  const CK_SESSION_HANDLE s = admin_session(token_label, pin);
  std::string l{label};
  CK_ATTRIBUTE tmpl[] = {{CKA_LABEL, l.data(), l.size()}};
  check(fn->C_FindObjectsInit(s, tmpl, 1), "C_FindObjectsInit");
  CK_OBJECT_HANDLE found[16];
  CK_ULONG n = 0;
  check(fn->C_FindObjects(s, found, 16, &n), "C_FindObjects");
  check(fn->C_FindObjectsFinal(s), "C_FindObjectsFinal");
  for (CK_ULONG i = 0; i < n; ++i) check(fn->C_DestroyObject(s, found[i]), "C_DestroyObject");
  (void)fn->C_CloseSession(s);
}

void SoftHsm::change_pin_and_logout(std::string_view token_label, std::string_view old_pin,
                                    std::string_view new_pin) {
  CK_FUNCTION_LIST* fn = module_->fn();
  const CK_SESSION_HANDLE s = admin_session(token_label, old_pin);
  std::string o{old_pin}, n{new_pin};
  check(fn->C_SetPIN(s, reinterpret_cast<unsigned char*>(o.data()), o.size(),
                     reinterpret_cast<unsigned char*>(n.data()), n.size()),
        "C_SetPIN");
  check(fn->C_Logout(s), "C_Logout");  // logs out every session of this process
  (void)fn->C_CloseSession(s);
}

void SoftHsm::close_all_sessions(std::string_view token_label) {
  check(module_->fn()->C_CloseAllSessions(slot(token_label)), "C_CloseAllSessions");
}

}  // namespace xks::hsm::test
