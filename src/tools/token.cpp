#include "xks/tools/token.hpp"

#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "xks/crypto/hex.hpp"
#include "xks/hsm/ckr.hpp"

namespace xks::tools {

namespace {

constexpr std::size_t kTokenLabelBytes = 32;

// CK_*_INFO text fields are blank padded, not NUL terminated.
template <std::size_t N>
std::string padded(const unsigned char (&field)[N]) {
  std::string s(N, ' ');
  std::memcpy(s.data(), field, N);
  if (const auto nul = s.find('\0'); nul != std::string::npos) s.resize(nul);
  const auto end = s.find_last_not_of(' ');
  s.resize(end == std::string::npos ? 0 : end + 1);
  return s;
}

std::string q(const std::string& s) { return "'" + s + "'"; }

}  // namespace

std::string ckr_text(CK_RV rv) {
  char code[32];
  std::snprintf(code, sizeof code, " (0x%lx)", rv);
  return std::string(hsm::ckr_name(rv)) + code;
}

std::string TokenKey::type_name() const {
  std::string name;
  if (!type) {
    name = "unknown-type";
  } else {
    switch (*type) {
      case CKK_AES: name = "AES"; break;
      case CKK_GENERIC_SECRET: name = "GENERIC_SECRET"; break;
      case CKK_DES3: name = "DES3"; break;
      case CKK_DES: name = "DES"; break;
      default: {
        char buf[32];
        std::snprintf(buf, sizeof buf, "type-0x%lx", *type);
        name = buf;
        break;
      }
    }
  }
  if (value_len) {
    name += '-';
    name += std::to_string(type && *type == CKK_AES ? *value_len * 8 : *value_len);
  }
  return name;
}

std::string TokenKey::usages() const {
  std::string out;
  const auto add = [&](bool on, const char* n) {
    if (!on) return;
    if (!out.empty()) out += ',';
    out += n;
  };
  add(encrypt, "encrypt");
  add(decrypt, "decrypt");
  add(wrap, "wrap");
  add(unwrap, "unwrap");
  add(sign, "sign");
  add(verify, "verify");
  add(derive, "derive");
  return out.empty() ? "none" : out;
}

std::vector<std::string> TokenKey::unsafe() const {
  std::vector<std::string> out;
  if (extractable) out.emplace_back("extractable (CKA_EXTRACTABLE=true: the key can be exported wrapped)");
  if (!sensitive) out.emplace_back("not sensitive (CKA_SENSITIVE=false: the key value can be read in clear)");
  if (!type || *type != CKK_AES) out.emplace_back("not AES (" + type_name() + ")");
  if (!value_len || *value_len != 32) out.emplace_back("not 32 bytes (" + type_name() + ")");
  return out;
}

ToolToken::~ToolToken() {
  if (session_ && fn_ != nullptr) {
    // Logging out is best effort: the process is about to drop the session anyway.
    if (logged_in_) (void)fn_->C_Logout(*session_);
    (void)fn_->C_CloseSession(*session_);
  }
}

std::string ToolToken::module_description() const {
  return module_ ? module_->description() : std::string{};
}

void ToolToken::load_module() {
  auto loaded = hsm::Pkcs11Module::load(hsm_.module);
  if (!loaded) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": module " + hsm_.module.string() +
                             " does not load: " + loaded.error().message +
                             "; fix: set hsm.module to the vendor's PKCS#11 library (.so)");
  }
  module_ = std::move(loaded).value();
  fn_ = module_->fn();
}

void ToolToken::find_token() {
  CK_ULONG count = 0;
  CK_RV rv = fn_->C_GetSlotList(CK_TRUE, nullptr, &count);
  std::vector<CK_SLOT_ID> slots(count);
  if (rv == CKR_OK && count > 0) rv = fn_->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": C_GetSlotList failed with " + ckr_text(rv) +
                             "; fix: check the HSM client's own configuration and connectivity");
  }
  slots.resize(count);
  std::string seen;
  std::vector<std::pair<CK_SLOT_ID, CK_TOKEN_INFO>> matches;
  for (const CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (fn_->C_GetTokenInfo(slot, &info) != CKR_OK || (info.flags & CKF_TOKEN_INITIALIZED) == 0) continue;
    const std::string label = padded(info.label);
    seen += (seen.empty() ? "" : ", ") + q(label) + " (slot " + std::to_string(slot) + ")";
    const bool match = hsm_.token_label ? label == *hsm_.token_label
                                        : (hsm_.slot_id && slot == *hsm_.slot_id);
    if (match) matches.emplace_back(slot, info);
  }
  const std::string wanted = hsm_.token_label ? "token " + q(*hsm_.token_label)
                                              : "slot " + std::to_string(hsm_.slot_id.value_or(0));
  if (matches.empty()) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": " + wanted + " not found (tokens seen: " +
                             (seen.empty() ? "none" : seen) +
                             "); fix: set hsm.token_label (or hsm.slot_id) to one of them");
  }
  if (matches.size() > 1) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": " + wanted + " is ambiguous (" + seen +
                             "); fix: use hsm.slot_id");
  }
  slot_ = matches.front().first;
  const CK_TOKEN_INFO& info = matches.front().second;
  token_description_ = q(padded(info.label)) + " slot " + std::to_string(*slot_) + ", serial " +
                       padded(info.serialNumber) + ", " + padded(info.manufacturerID) + " " +
                       padded(info.model);
  static_assert(sizeof(info.label) == kTokenLabelBytes);
}

void ToolToken::open_session(bool read_write) {
  CK_FLAGS flags = CKF_SERIAL_SESSION;
  if (read_write) flags |= CKF_RW_SESSION;
  CK_SESSION_HANDLE h = 0;
  const CK_RV rv = fn_->C_OpenSession(*slot_, flags, nullptr, nullptr, &h);
  if (rv != CKR_OK) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": C_OpenSession failed with " + ckr_text(rv) +
                             (rv == CKR_TOKEN_WRITE_PROTECTED ? "; fix: the token is write protected"
                                                              : "; fix: check the HSM's session limits"));
  }
  session_ = h;
}

CK_RV ToolToken::login() {
  if (login_attempted_) {
    // Never a second C_Login: a wrong PIN must not be tried twice.
    return logged_in_ ? CKR_OK : CKR_PIN_INCORRECT;
  }
  login_attempted_ = true;
  const std::string_view pin = hsm_.pin.view();
  CK_RV rv = fn_->C_Login(*session_, CKU_USER,
                          reinterpret_cast<CK_UTF8CHAR*>(const_cast<char*>(pin.data())),  // NOLINT
                          pin.size());
  if (rv == CKR_USER_ALREADY_LOGGED_IN) rv = CKR_OK;
  logged_in_ = rv == CKR_OK;
  return rv;
}

void ToolToken::open_and_login(bool read_write) {
  load_module();
  find_token();
  open_session(read_write);
  const CK_RV rv = login();
  if (rv != CKR_OK) {
    const bool pin = hsm::ckr_class(rv) == hsm::CkrClass::Pin;
    throw std::runtime_error(
        "hsm " + q(hsm_.name) + ": login refused with " + ckr_text(rv) + " (one attempt, not retried)" +
        (pin ? "; fix: put the token's user PIN in hsm.pin (" + hsm_.pin_source.describe() +
                   "); a locked PIN needs the security officer to reset it"
             : "; fix: check the HSM's state and the user's role"));
  }
}

std::vector<CK_OBJECT_HANDLE> ToolToken::find_objects(std::vector<CK_ATTRIBUTE> tmpl) {
  CK_RV rv = fn_->C_FindObjectsInit(*session_, tmpl.data(), tmpl.size());
  if (rv != CKR_OK) throw std::runtime_error("C_FindObjectsInit failed with " + ckr_text(rv));
  std::vector<CK_OBJECT_HANDLE> out;
  std::array<CK_OBJECT_HANDLE, 64> batch{};
  for (;;) {
    CK_ULONG n = 0;
    rv = fn_->C_FindObjects(*session_, batch.data(), batch.size(), &n);
    if (rv != CKR_OK || n == 0) break;
    out.insert(out.end(), batch.begin(), batch.begin() + static_cast<std::ptrdiff_t>(n));
  }
  (void)fn_->C_FindObjectsFinal(*session_);  // nothing to recover if it fails
  if (rv != CKR_OK) throw std::runtime_error("C_FindObjects failed with " + ckr_text(rv));
  return out;
}

TokenKey ToolToken::read_key(CK_OBJECT_HANDLE handle) {
  TokenKey k;
  k.handle = handle;
  // One attribute per call: a module answers a whole template with an error
  // if any single attribute is unavailable, which would hide the others.
  const auto get_bytes = [&](CK_ATTRIBUTE_TYPE t) -> std::optional<std::vector<std::uint8_t>> {
    CK_ATTRIBUTE a{t, nullptr, 0};
    if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) != CKR_OK ||
        a.ulValueLen == CK_UNAVAILABLE_INFORMATION) {
      return std::nullopt;
    }
    std::vector<std::uint8_t> v(a.ulValueLen);
    a.pValue = v.data();
    if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) != CKR_OK) return std::nullopt;
    v.resize(a.ulValueLen);
    return v;
  };
  const auto get_ulong = [&](CK_ATTRIBUTE_TYPE t) -> std::optional<CK_ULONG> {
    CK_ULONG v = 0;
    CK_ATTRIBUTE a{t, &v, sizeof v};
    if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) != CKR_OK) return std::nullopt;
    return v;
  };
  const auto get_bool = [&](CK_ATTRIBUTE_TYPE t, bool fallback) {
    CK_BBOOL v = CK_FALSE;
    CK_ATTRIBUTE a{t, &v, sizeof v};
    if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) != CKR_OK) return fallback;
    return v == CK_TRUE;
  };
  if (auto label = get_bytes(CKA_LABEL)) k.label.assign(label->begin(), label->end());
  if (auto id = get_bytes(CKA_ID)) k.id_hex = crypto::hex_encode(*id);
  k.type = get_ulong(CKA_KEY_TYPE);
  k.value_len = get_ulong(CKA_VALUE_LEN);
  k.encrypt = get_bool(CKA_ENCRYPT, false);
  k.decrypt = get_bool(CKA_DECRYPT, false);
  k.wrap = get_bool(CKA_WRAP, false);
  k.unwrap = get_bool(CKA_UNWRAP, false);
  k.sign = get_bool(CKA_SIGN, false);
  k.verify = get_bool(CKA_VERIFY, false);
  k.derive = get_bool(CKA_DERIVE, false);
  // Unknown counts as unsafe: assume the worst about an attribute we cannot read.
  k.sensitive = get_bool(CKA_SENSITIVE, false);
  k.extractable = get_bool(CKA_EXTRACTABLE, true);
  return k;
}

std::vector<TokenKey> ToolToken::secret_keys() {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  std::vector<TokenKey> out;
  for (const CK_OBJECT_HANDLE h : find_objects({{CKA_CLASS, &cls, sizeof cls}})) out.push_back(read_key(h));
  return out;
}

std::vector<TokenKey> ToolToken::find_by_label(const std::string& label) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  std::vector<TokenKey> out;
  for (const CK_OBJECT_HANDLE h :
       find_objects({{CKA_CLASS, &cls, sizeof cls},
                     {CKA_LABEL, const_cast<char*>(label.data()), label.size()}})) {
    out.push_back(read_key(h));
  }
  return out;
}

TokenKey ToolToken::generate_aes256(const std::string& label, const std::vector<std::uint8_t>& id,
                                    bool encrypt, bool decrypt) {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_KEY_TYPE kt = CKK_AES;
  CK_ULONG len = 32;
  CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
  CK_BBOOL enc = encrypt ? CK_TRUE : CK_FALSE, dec = decrypt ? CK_TRUE : CK_FALSE;
  std::vector<CK_ATTRIBUTE> tmpl = {
      {CKA_CLASS, &cls, sizeof cls},       {CKA_KEY_TYPE, &kt, sizeof kt},
      {CKA_VALUE_LEN, &len, sizeof len},   {CKA_TOKEN, &yes, sizeof yes},
      {CKA_PRIVATE, &yes, sizeof yes},     {CKA_SENSITIVE, &yes, sizeof yes},
      {CKA_EXTRACTABLE, &no, sizeof no},   {CKA_ENCRYPT, &enc, sizeof enc},
      {CKA_DECRYPT, &dec, sizeof dec},     {CKA_WRAP, &no, sizeof no},
      {CKA_UNWRAP, &no, sizeof no},        {CKA_SIGN, &no, sizeof no},
      {CKA_VERIFY, &no, sizeof no},        {CKA_DERIVE, &no, sizeof no},
      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
      {CKA_ID, const_cast<std::uint8_t*>(id.data()), id.size()},
  };
  CK_MECHANISM mech{CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE h = 0;
  const CK_RV rv = fn_->C_GenerateKey(*session_, &mech, tmpl.data(), tmpl.size(), &h);
  if (rv != CKR_OK) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": C_GenerateKey(CKM_AES_KEY_GEN) failed with " +
                             ckr_text(rv));
  }
  return read_key(h);
}

std::chrono::microseconds ToolToken::gcm_round_trip(CK_OBJECT_HANDLE key) {
  std::array<std::uint8_t, 32> plaintext{};
  std::array<std::uint8_t, 12> iv{};
  if (RAND_bytes(plaintext.data(), plaintext.size()) != 1 || RAND_bytes(iv.data(), iv.size()) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  const auto start = std::chrono::steady_clock::now();
  CK_GCM_PARAMS params{iv.data(), iv.size(), iv.size() * 8, nullptr, 0, 128};
  CK_MECHANISM mech{CKM_AES_GCM, &params, sizeof params};
  std::array<std::uint8_t, 48> sealed{};
  CK_ULONG sealed_len = sealed.size();
  CK_RV rv = fn_->C_EncryptInit(*session_, &mech, key);
  if (rv == CKR_OK) rv = fn_->C_Encrypt(*session_, plaintext.data(), plaintext.size(), sealed.data(), &sealed_len);
  if (rv != CKR_OK) throw std::runtime_error("C_Encrypt (AES-GCM) failed with " + ckr_text(rv));
  std::array<std::uint8_t, 48> opened{};
  CK_ULONG opened_len = opened.size();
  rv = fn_->C_DecryptInit(*session_, &mech, key);
  if (rv == CKR_OK) rv = fn_->C_Decrypt(*session_, sealed.data(), sealed_len, opened.data(), &opened_len);
  if (rv != CKR_OK) throw std::runtime_error("C_Decrypt (AES-GCM) failed with " + ckr_text(rv));
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - start);
  if (opened_len != plaintext.size() || std::memcmp(opened.data(), plaintext.data(), plaintext.size()) != 0) {
    throw std::runtime_error("AES-GCM round trip returned different bytes");
  }
  return took;
}

}  // namespace xks::tools
