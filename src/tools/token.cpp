#include "xks/tools/token.hpp"

#include <openssl/rand.h>

#include <array>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "xks/hsm/ckr.hpp"
#include "xks/hsm/token.hpp"

namespace xks::tools {

namespace {

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
  if (extractable)
    out.emplace_back("extractable (CKA_EXTRACTABLE=true: the key can be exported wrapped)");
  if (!sensitive)
    out.emplace_back("not sensitive (CKA_SENSITIVE=false: the key value can be read in clear)");
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
  auto loaded = hsm::load_module(hsm_);
  if (!loaded) throw std::runtime_error(loaded.error().message);
  module_ = std::move(loaded).value();
  fn_ = module_->fn();
}

void ToolToken::find_token() {
  auto found = hsm::find_token(fn_, hsm_);
  if (!found) {
    const Error& e = found.error();
    throw std::runtime_error(e.message + (e.detail.rfind("fix: ", 0) == 0 ? "; " + e.detail : ""));
  }
  identity_ = std::move(found).value();
  slot_ = identity_.slot;
  token_description_ = identity_.describe();
}

void ToolToken::check_gcm() {
  if (auto ok = hsm::check_gcm_mechanism(fn_, hsm_, identity_); !ok) {
    throw std::runtime_error(ok.error().message);
  }
}

void ToolToken::open_session(bool read_write) {
  CK_FLAGS flags = CKF_SERIAL_SESSION;
  if (read_write) flags |= CKF_RW_SESSION;
  CK_SESSION_HANDLE h = 0;
  const CK_RV rv = fn_->C_OpenSession(*slot_, flags, nullptr, nullptr, &h);
  if (rv != CKR_OK) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": C_OpenSession failed with " + ckr_text(rv) +
                             (rv == CKR_TOKEN_WRITE_PROTECTED
                                  ? "; fix: the token is write protected"
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
    throw std::runtime_error("hsm " + q(hsm_.name) + ": login refused with " + ckr_text(rv) +
                             " (one attempt, not retried)" +
                             (pin ? "; fix: put the token's user PIN in hsm.pin (" +
                                        hsm_.pin_source.describe() +
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
  CK_ATTRIBUTE a{CKA_LABEL, nullptr, 0};
  if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) == CKR_OK &&
      a.ulValueLen != CK_UNAVAILABLE_INFORMATION) {
    k.label.resize(a.ulValueLen);
    a.pValue = k.label.data();
    if (fn_->C_GetAttributeValue(*session_, handle, &a, 1) != CKR_OK) k.label.clear();
  }
  // The daemon's reading of the attributes, so that both judge a key alike.
  CK_RV rv = CKR_OK;
  auto attrs = hsm::read_key_attributes(fn_, *session_, handle, rv);
  if (!attrs) {
    throw std::runtime_error("hsm " + q(hsm_.name) + ": cannot read the attributes of key " +
                             q(k.label) + ": " + ckr_text(rv));
  }
  k.id_hex = attrs->id_hex;
  k.type = attrs->key_type;
  if (attrs->key_bytes != 0) k.value_len = attrs->key_bytes;
  k.encrypt = attrs->encrypt;
  k.decrypt = attrs->decrypt;
  k.wrap = attrs->wrap;
  k.unwrap = attrs->unwrap;
  k.sign = attrs->sign;
  k.verify = attrs->verify;
  k.derive = attrs->derive;
  k.sensitive = attrs->sensitive;
  k.extractable = attrs->extractable;
  return k;
}

std::vector<TokenKey> ToolToken::secret_keys() {
  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  std::vector<TokenKey> out;
  for (const CK_OBJECT_HANDLE h : find_objects({{CKA_CLASS, &cls, sizeof cls}}))
    out.push_back(read_key(h));
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
  hsm::KeyTemplate tmpl = hsm::safe_aes256_template(label, id, encrypt, decrypt);
  CK_MECHANISM mech{CKM_AES_KEY_GEN, nullptr, 0};
  CK_OBJECT_HANDLE h = 0;
  const CK_RV rv =
      fn_->C_GenerateKey(*session_, &mech, tmpl.attributes.data(), tmpl.attributes.size(), &h);
  if (rv != CKR_OK) {
    throw std::runtime_error("hsm " + q(hsm_.name) +
                             ": C_GenerateKey(CKM_AES_KEY_GEN) failed with " + ckr_text(rv));
  }
  return read_key(h);
}

std::chrono::microseconds ToolToken::gcm_round_trip(CK_OBJECT_HANDLE key) {
  std::array<std::uint8_t, 32> plaintext{};
  std::array<std::uint8_t, 12> iv{};
  if (RAND_bytes(plaintext.data(), plaintext.size()) != 1 ||
      RAND_bytes(iv.data(), iv.size()) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  const auto start = std::chrono::steady_clock::now();
  CK_GCM_PARAMS params{iv.data(), iv.size(), iv.size() * 8, nullptr, 0, 128};
  CK_MECHANISM mech{CKM_AES_GCM, &params, sizeof params};
  std::array<std::uint8_t, 48> sealed{};
  CK_ULONG sealed_len = sealed.size();
  CK_RV rv = fn_->C_EncryptInit(*session_, &mech, key);
  if (rv == CKR_OK)
    rv = fn_->C_Encrypt(*session_, plaintext.data(), plaintext.size(), sealed.data(), &sealed_len);
  if (rv != CKR_OK) throw std::runtime_error("C_Encrypt (AES-GCM) failed with " + ckr_text(rv));
  std::array<std::uint8_t, 48> opened{};
  CK_ULONG opened_len = opened.size();
  rv = fn_->C_DecryptInit(*session_, &mech, key);
  if (rv == CKR_OK)
    rv = fn_->C_Decrypt(*session_, sealed.data(), sealed_len, opened.data(), &opened_len);
  if (rv != CKR_OK) throw std::runtime_error("C_Decrypt (AES-GCM) failed with " + ckr_text(rv));
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);
  if (opened_len != plaintext.size() ||
      std::memcmp(opened.data(), plaintext.data(), plaintext.size()) != 0) {
    throw std::runtime_error("AES-GCM round trip returned different bytes");
  }
  return took;
}

TokenKey create_key(const config::HsmConfig& hsm, const std::string& label,
                    const std::vector<std::uint8_t>& id, bool encrypt, bool decrypt) {
  ToolToken token(hsm);
  token.open_and_login(/*read_write=*/true);
  if (!token.find_by_label(label).empty()) {
    throw std::runtime_error("hsm " + hsm.name + ": a key labelled '" + label +
                             "' already exists; choose another --label (keys are never replaced)");
  }
  TokenKey k = token.generate_aes256(label, id, encrypt, decrypt);
  std::printf(
      "created key label=%s id=%s %s usages=%s sensitive=%s extractable=%s on hsm %s (%s)\n",
      k.label.c_str(), k.id_hex.c_str(), k.type_name().c_str(), k.usages().c_str(),
      k.sensitive ? "yes" : "no", k.extractable ? "yes" : "no", hsm.name.c_str(),
      token.token_description().c_str());
  return k;
}

}  // namespace xks::tools
