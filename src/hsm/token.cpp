#include "xks/hsm/token.hpp"

#include <array>
#include <cstdlib>
#include <cstring>

#include "pkcs11_util.hpp"
#include "xks/config/hsm_vendor.hpp"
#include "xks/crypto/hex.hpp"
#include "xks/hsm/ckr.hpp"

namespace xks::hsm {

namespace {

constexpr std::size_t kTokenLabelBytes = 32;
constexpr std::size_t kTokenSerialBytes = 16;

std::string q(std::string_view s) { return "'" + std::string{s} + "'"; }

Error internal(std::string message, std::string detail = {}) {
  return make_error(ErrorName::InternalException, std::move(message), std::move(detail));
}

std::string where(const config::HsmConfig& hsm) { return "HSM " + q(hsm.name); }

// What a failed C_Initialize usually means, as the setting to look at.
std::string initialize_fix(CK_RV rv, const config::HsmConfig& hsm) {
  const auto& profile = config::vendor_profile(hsm.vendor);
  switch (rv) {
    case CKR_ARGUMENTS_BAD:
      return hsm.init_args
                 ? "the module refused hsm.init_args: check that string against the module's "
                   "documentation"
                 : "the module needs initialization arguments: set hsm.init_args (NSS softoken: "
                   "\"configdir='sql:DIR' certPrefix='' keyPrefix='' secmod='secmod.db' flags=\")";
    case CKR_CANT_LOCK:
      return "the module cannot use the operating system's locking: set hsm.init_os_locking: "
             "false";
    case CKR_NEED_TO_CREATE_THREADS:
      return "the module needs to create its own threads; report this module to the "
             "xks-proxy project";
    default: {
      std::string fix = "the module could not start: check its own configuration and logs";
      if (!profile.token_source_hint.empty())
        fix += " (" + std::string(profile.token_source_hint) + ")";
      if (!hsm.environment.empty()) fix += "; hsm.environment is applied before it loads";
      return fix;
    }
  }
}

// Describes what the module was given, for "no token seen" answers.
std::string environment_note(const config::HsmConfig& hsm) {
  const auto& profile = config::vendor_profile(hsm.vendor);
  std::string out;
  if (!profile.token_source_hint.empty()) out = std::string(profile.token_source_hint);
  for (const auto& [name, value] : hsm.environment) {
    out += (out.empty() ? "" : "; ") + name + " is " + value + " (hsm.environment)";
  }
  if (hsm.vendor == config::HsmVendor::SoftHsm2 && hsm.environment.empty()) {
    const char* conf = std::getenv("SOFTHSM2_CONF");
    out += std::string(out.empty() ? "" : "; ") +
           (conf != nullptr ? std::string("SOFTHSM2_CONF is ") + conf + " (inherited)"
                            : std::string("SOFTHSM2_CONF is not set"));
  }
  return out;
}

std::string describe_tokens(const std::vector<TokenIdentity>& tokens) {
  if (tokens.empty()) return "no initialized token is present";
  std::string out = "tokens seen:";
  for (const auto& t : tokens) out += " " + t.describe();
  return out;
}

template <std::size_t N>
bool padded_equals(const unsigned char (&field)[N], const std::string& value) {
  std::array<unsigned char, N> padded;
  padded.fill(' ');
  std::memcpy(padded.data(), value.data(), std::min(value.size(), N));
  return value.size() <= N && std::memcmp(field, padded.data(), N) == 0;
}

}  // namespace

std::string TokenIdentity::describe() const {
  return q(label) + " (slot " + std::to_string(slot) + ", serial " + serial + ", " + manufacturer +
         " " + model + ")";
}

Result<std::shared_ptr<Pkcs11Module>> load_module(const config::HsmConfig& hsm, CK_RV* init_rv) {
  // Before dlopen: modules read their configuration's location at load or at
  // C_Initialize. The process environment is shared, so the last HSM to set a
  // variable wins; hsm.environment of two HSMs on one module must agree.
  for (const auto& [name, value] : hsm.environment) ::setenv(name.c_str(), value.c_str(), 1);
  CK_RV rv = CKR_OK;
  auto module = Pkcs11Module::load(hsm.module, {hsm.init_args, hsm.init_os_locking}, &rv);
  if (init_rv != nullptr) *init_rv = rv;
  if (module || rv == CKR_OK) return module;
  Error e = std::move(module).error();
  e.message = where(hsm) + ": module " + hsm.module.string() + ": C_Initialize failed with " +
              std::string{ckr_name(rv)} + "; " + initialize_fix(rv, hsm);
  return e;
}

Result<std::vector<TokenIdentity>> list_tokens(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm,
                                               CK_RV* rv_out) {
  CK_ULONG count = 0;
  CK_RV rv = fn->C_GetSlotList(CK_TRUE, nullptr, &count);
  std::vector<CK_SLOT_ID> slots(count);
  if (rv == CKR_OK && count > 0) rv = fn->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv_out != nullptr) *rv_out = rv;
  if (rv != CKR_OK) {
    Error e = ckr_to_error(rv, "C_GetSlotList");
    e.message = where(hsm) + ": cannot list the slots of " + hsm.module.string() + " (" +
                std::string{ckr_name(rv)} + ")";
    return e;
  }
  slots.resize(count);
  std::vector<TokenIdentity> tokens;
  for (const CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (fn->C_GetTokenInfo(slot, &info) != CKR_OK || (info.flags & CKF_TOKEN_INITIALIZED) == 0) {
      continue;
    }
    tokens.push_back({slot, detail::padded_field(info.label),
                      detail::padded_field(info.serialNumber),
                      detail::padded_field(info.manufacturerID), detail::padded_field(info.model),
                      detail::version_string(info.firmwareVersion)});
  }
  return tokens;
}

Result<TokenIdentity> find_token(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm, CK_RV* rv) {
  const int selectors = int{hsm.token_label.has_value()} + int{hsm.token_serial.has_value()} +
                        int{hsm.slot_id.has_value()};
  if (selectors != 1) {
    return internal(where(hsm) +
                    ": set exactly one of hsm.token_label, hsm.token_serial and "
                    "hsm.slot_id");
  }
  if ((hsm.token_label && hsm.token_label->size() > kTokenLabelBytes) ||
      (hsm.token_serial && hsm.token_serial->size() > kTokenSerialBytes)) {
    return internal(where(hsm) +
                    ": hsm.token_label is at most 32 and hsm.token_serial at most "
                    "16 characters");
  }
  Result<std::vector<TokenIdentity>> tokens = list_tokens(fn, hsm, rv);
  if (!tokens) return std::move(tokens).error();

  std::vector<TokenIdentity> matches;
  for (const auto& t : *tokens) {
    // Compared as PKCS#11 stores them (blank padded): a label with trailing
    // blanks in the file would otherwise match by accident.
    CK_TOKEN_INFO info{};
    bool match = false;
    if (hsm.slot_id) {
      match = t.slot == *hsm.slot_id;
    } else if (fn->C_GetTokenInfo(t.slot, &info) == CKR_OK) {
      match = hsm.token_label ? padded_equals(info.label, *hsm.token_label)
                              : padded_equals(info.serialNumber, *hsm.token_serial);
    }
    if (match) matches.push_back(t);
  }
  const std::string wanted = hsm.token_label    ? "token " + q(*hsm.token_label)
                             : hsm.token_serial ? "token with serial " + q(*hsm.token_serial)
                                                : "slot " + std::to_string(*hsm.slot_id);
  if (matches.empty()) {
    std::string message = where(hsm) + ": " + wanted + " not found in " + hsm.module.string() +
                          "; " + describe_tokens(*tokens);
    // With no token at all the selector is not what is wrong: the module looks elsewhere.
    std::string fix =
        "fix: set hsm.token_label, hsm.token_serial or hsm.slot_id to a token the "
        "module shows";
    if (tokens->empty()) {
      const std::string note = environment_note(hsm);
      if (!note.empty()) message += " (" + note + ")";
      fix =
          "fix: point the module at its tokens (hsm.environment, or the vendor client's "
          "configuration), or initialize the token";
    }
    return internal(std::move(message), std::move(fix));
  }
  if (matches.size() > 1) {
    return internal(where(hsm) + ": " + wanted +
                    " is ambiguous; use hsm.token_serial or "
                    "hsm.slot_id; " +
                    describe_tokens(matches));
  }
  return matches.front();
}

Result<void> check_gcm_mechanism(CK_FUNCTION_LIST* fn, const config::HsmConfig& hsm,
                                 const TokenIdentity& token) {
  CK_MECHANISM_INFO info{};
  const CK_RV rv = fn->C_GetMechanismInfo(token.slot, CKM_AES_GCM, &info);
  std::string missing;
  if (rv == CKR_MECHANISM_INVALID) {
    missing = "does not offer CKM_AES_GCM (C_GetMechanismInfo: CKR_MECHANISM_INVALID)";
  } else if (rv == CKR_OK && ((info.flags & CKF_ENCRYPT) == 0 || (info.flags & CKF_DECRYPT) == 0)) {
    missing = "offers CKM_AES_GCM without both encryption and decryption";
  } else {
    return {};  // offered, or the module cannot say: the health check will tell
  }
  return internal(where(hsm) + ": token " + token.describe() + " " + missing +
                      ", which every XKS Encrypt and Decrypt needs (AES-256-GCM); fix: point "
                      "hsm.module and hsm.token_label at a token or HSM firmware that supports "
                      "CKM_AES_GCM",
                  "C_GetMechanismInfo(slot " + std::to_string(token.slot) +
                      ", CKM_AES_GCM): " + std::string{ckr_name(rv)});
}

Result<KeyAttributes> read_key_attributes(CK_FUNCTION_LIST* fn, CK_SESSION_HANDLE session,
                                          CK_OBJECT_HANDLE key, CK_RV& rv_out) {
  KeyAttributes attrs;
  CK_KEY_TYPE key_type = CK_UNAVAILABLE_INFORMATION;
  CK_ULONG value_len = 0;
  struct Flag {
    CK_ATTRIBUTE_TYPE type;
    bool* out;
    bool unknown;  // what an attribute the module will not reveal counts as
    CK_BBOOL value = CK_FALSE;
  };
  std::array<Flag, 9> flags{{{CKA_ENCRYPT, &attrs.encrypt, false},
                             {CKA_DECRYPT, &attrs.decrypt, false},
                             {CKA_WRAP, &attrs.wrap, false},
                             {CKA_UNWRAP, &attrs.unwrap, false},
                             {CKA_SIGN, &attrs.sign, false},
                             {CKA_VERIFY, &attrs.verify, false},
                             {CKA_DERIVE, &attrs.derive, false},
                             {CKA_SENSITIVE, &attrs.sensitive, false},
                             {CKA_EXTRACTABLE, &attrs.extractable, true}}};
  std::vector<CK_ATTRIBUTE> tmpl;
  tmpl.push_back({CKA_KEY_TYPE, &key_type, sizeof key_type});
  tmpl.push_back({CKA_VALUE_LEN, &value_len, sizeof value_len});
  tmpl.push_back({CKA_ID, nullptr, 0});  // length query
  for (auto& f : flags) tmpl.push_back({f.type, &f.value, sizeof f.value});

  // CKR_ATTRIBUTE_SENSITIVE / _TYPE_INVALID still fill the other attributes and
  // mark the refused ones CK_UNAVAILABLE_INFORMATION.
  auto readable = [](CK_RV rv) {
    return rv == CKR_OK || rv == CKR_ATTRIBUTE_SENSITIVE || rv == CKR_ATTRIBUTE_TYPE_INVALID;
  };
  CK_RV rv = fn->C_GetAttributeValue(session, key, tmpl.data(), tmpl.size());
  rv_out = rv;
  if (!readable(rv)) return ckr_to_error(rv, "C_GetAttributeValue");
  auto available = [](const CK_ATTRIBUTE& a) { return a.ulValueLen != CK_UNAVAILABLE_INFORMATION; };

  if (available(tmpl[0])) attrs.key_type = key_type;
  attrs.is_aes = available(tmpl[0]) && key_type == CKK_AES;
  attrs.key_bytes = available(tmpl[1]) ? value_len : 0;
  for (std::size_t i = 0; i < flags.size(); ++i) {
    *flags[i].out = available(tmpl[3 + i]) ? flags[i].value == CK_TRUE : flags[i].unknown;
  }
  if (available(tmpl[2]) && tmpl[2].ulValueLen > 0) {
    Bytes id(tmpl[2].ulValueLen);
    CK_ATTRIBUTE id_attr{CKA_ID, id.data(), id.size()};
    rv = fn->C_GetAttributeValue(session, key, &id_attr, 1);
    rv_out = rv;
    if (!readable(rv)) return ckr_to_error(rv, "C_GetAttributeValue(CKA_ID)");
    if (rv == CKR_OK) {
      id.resize(id_attr.ulValueLen);
      attrs.id_hex = crypto::hex_encode(id);
    }
  }
  rv_out = CKR_OK;
  return attrs;
}

KeyTemplate safe_aes256_template(std::string label, std::vector<std::uint8_t> id, bool encrypt,
                                 bool decrypt) {
  KeyTemplate t;
  t.storage = std::make_unique<KeyTemplate::Storage>();
  auto& s = *t.storage;
  s.label = std::move(label);
  s.id = std::move(id);
  s.encrypt = encrypt ? CK_TRUE : CK_FALSE;
  s.decrypt = decrypt ? CK_TRUE : CK_FALSE;
  t.attributes = {
      {CKA_CLASS, &s.cls, sizeof s.cls},
      {CKA_KEY_TYPE, &s.type, sizeof s.type},
      {CKA_VALUE_LEN, &s.len, sizeof s.len},
      {CKA_TOKEN, &s.yes, sizeof s.yes},
      {CKA_PRIVATE, &s.yes, sizeof s.yes},
      {CKA_SENSITIVE, &s.yes, sizeof s.yes},
      {CKA_EXTRACTABLE, &s.no, sizeof s.no},
      {CKA_ENCRYPT, &s.encrypt, sizeof s.encrypt},
      {CKA_DECRYPT, &s.decrypt, sizeof s.decrypt},
      {CKA_WRAP, &s.no, sizeof s.no},
      {CKA_UNWRAP, &s.no, sizeof s.no},
      {CKA_SIGN, &s.no, sizeof s.no},
      {CKA_VERIFY, &s.no, sizeof s.no},
      {CKA_DERIVE, &s.no, sizeof s.no},
      {CKA_LABEL, s.label.data(), s.label.size()},
      {CKA_ID, s.id.data(), s.id.size()},
  };
  return t;
}

}  // namespace xks::hsm
