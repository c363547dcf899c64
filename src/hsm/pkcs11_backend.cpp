#include "xks/hsm/pkcs11_backend.hpp"

#include <openssl/crypto.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <vector>

#include "pkcs11_util.hpp"
#include "xks/hsm/ckr.hpp"

namespace xks::hsm {

namespace {

// The outcome of one attempt of an operation: a failed PKCS#11 call (rv, call)
// the recovery rules look at, or an Error that needs no recovery.
struct Step {
  CK_RV rv = CKR_OK;
  const char* call = "";
  std::optional<Error> error;

  static Step ok() { return {}; }
  static Step failed(CK_RV rv, const char* call) { return {rv, call, std::nullopt}; }
  static Step fail(Error e) { return {CKR_OK, "", std::move(e)}; }
  bool succeeded() const noexcept { return rv == CKR_OK && !error; }
};

constexpr CK_ULONG kTagBits = kGcmTagBytes * 8;

std::string q(std::string_view s) { return "'" + std::string{s} + "'"; }

// PKCS#11 takes non-const pointers for input it does not modify.
unsigned char* in_ptr(ByteView v) {
  // A zero-length input still needs a valid pointer: some modules reject NULL.
  static unsigned char empty = 0;
  return v.empty() ? &empty : const_cast<unsigned char*>(v.data());
}

Error internal(std::string message, std::string detail) {
  return make_error(ErrorName::InternalException, std::move(message), std::move(detail));
}

}  // namespace

// ---------------------------------------------------------------- construction

Result<std::unique_ptr<Pkcs11Backend>> Pkcs11Backend::open(const config::HsmConfig& config,
                                                           Options options) {
  bool transient = false;
  return open(config, std::move(options), transient);
}

Result<std::unique_ptr<Pkcs11Backend>> Pkcs11Backend::open(const config::HsmConfig& config,
                                                           Options options, bool& transient) {
  transient = false;
  // Worth retrying later: the device or the network, not the configuration.
  auto retryable = [](CK_RV rv) {
    const CkrClass c = ckr_class(rv);
    return c == CkrClass::Device || c == CkrClass::Session;
  };
  CK_RV rv = CKR_OK;
  Result<std::shared_ptr<Pkcs11Module>> module = load_module(config, &rv);
  if (!module) {
    transient = rv != CKR_OK && retryable(rv);
    return std::move(module).error();
  }
  CK_FUNCTION_LIST* fn = (*module)->fn();
  Result<TokenIdentity> token = find_token(fn, config, &rv);
  if (!token) {
    transient = rv != CKR_OK && retryable(rv);
    return std::move(token).error();
  }
  if (Result<void> gcm = check_gcm_mechanism(fn, config, *token); !gcm) {
    return std::move(gcm).error();
  }
  std::unique_ptr<Pkcs11Backend> backend{
      new Pkcs11Backend(config, options, std::move(*module), std::move(*token))};
  // Open (and log in) every session now: a wrong PIN or a session limit shows at
  // startup, not on the first KMS call.
  if (Result<void> filled = backend->pool_.fill(); !filled) {
    transient = !backend->login_refused() && retryable(backend->last_open_rv_.load());
    return std::move(filled).error();
  }
  return backend;
}

Pkcs11Backend::Pkcs11Backend(const config::HsmConfig& config, Options options,
                             std::shared_ptr<Pkcs11Module> module, TokenIdentity identity)
    : module_(std::move(module)),
      fn_(module_->fn()),
      name_(config.name),
      slot_(identity.slot),
      identity_(std::move(identity)),
      pin_(config.pin),
      iv_mode_(config.iv),
      auth_failure_codes_(config.auth_failure_codes),
      health_key_(config.health_key),
      on_login_(std::move(options.on_login)),
      on_event_(std::move(options.on_event)),
      device_errors_to_fail_(options.device_errors_to_fail == 0 ? 1
                                                                : options.device_errors_to_fail),
      backoff_(options.clock != nullptr ? *options.clock : core::steady_clock(),
               options.reinit_backoff_initial, options.reinit_backoff_max),
      pool_(config.name, config.sessions, options.lease_timeout,
            SessionPool::Hooks{[this] { return open_session(); },
                               [this](CK_SESSION_HANDLE s) { close_session(s); }}) {}

Pkcs11Backend::~Pkcs11Backend() = default;

bool Pkcs11Backend::is_auth_failure(CK_RV rv) const noexcept {
  return std::find(auth_failure_codes_.begin(), auth_failure_codes_.end(), rv) !=
         auth_failure_codes_.end();
}

// ---------------------------------------------------------------- sessions, login

Error Pkcs11Backend::login_refused_error(CK_RV rv) const {
  return internal("HSM login refused (" + std::string{ckr_name(rv)} + "); fix hsm.pin and reload",
                  "HSM " + q(name_) + " token " + q(identity_.label) +
                      ": C_Login as CKU_USER failed with " + std::string{ckr_name(rv)} +
                      "; not retried, a retry could lock the user");
}

std::optional<Error> Pkcs11Backend::login_refused() const {
  const CK_RV rv = login_refused_.load();
  if (rv == CKR_OK) return std::nullopt;
  return login_refused_error(rv);
}

Result<CK_SESSION_HANDLE> Pkcs11Backend::open_session() {
  if (const CK_RV refused = login_refused_.load(); refused != CKR_OK) {
    return login_refused_error(refused);
  }
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  CK_RV rv = fn_->C_OpenSession(slot_.load(), CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr,
                                &session);
  if (rv != CKR_OK) {
    last_open_rv_.store(rv);
    if (ckr_class(rv) == CkrClass::Device) note_device_error(rv, "C_OpenSession");
    return ckr_to_error(rv, "C_OpenSession on HSM " + q(name_));
  }
  sessions_opened_.fetch_add(1);

  // Login state belongs to the token (all sessions of this process share it), so
  // log in only when this session says we are not logged in; serialized, so a
  // wrong PIN costs exactly one attempt however many threads open sessions.
  std::lock_guard lock(login_mutex_);
  if (const CK_RV refused = login_refused_.load(); refused != CKR_OK) {
    close_session(session);
    return login_refused_error(refused);
  }
  CK_SESSION_INFO info{};
  rv = fn_->C_GetSessionInfo(session, &info);
  if (rv == CKR_OK && info.state == CKS_RW_USER_FUNCTIONS) return session;

  login_attempts_.fetch_add(1);
  rv = fn_->C_Login(session, CKU_USER,
                    reinterpret_cast<unsigned char*>(const_cast<char*>(pin_.view().data())),
                    pin_.size());
  if (on_login_) on_login_(name_, rv);
  if (rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN) return session;
  close_session(session);
  last_open_rv_.store(rv);
  if (ckr_class(rv) == CkrClass::Pin) {
    login_refused_.store(rv);
    return login_refused_error(rv);
  }
  if (ckr_class(rv) == CkrClass::Device) note_device_error(rv, "C_Login");
  Error e = ckr_to_error(rv, "C_Login on HSM " + q(name_));
  e.message = "HSM login failed on HSM " + q(name_);
  e.detail = "C_Login: " + e.detail;
  return e;
}

void Pkcs11Backend::close_session(CK_SESSION_HANDLE session) noexcept {
  // The session is being thrown away; a failure to close it changes nothing.
  (void)fn_->C_CloseSession(session);
}

// ---------------------------------------------------------------- device failures, recovery

void Pkcs11Backend::emit(HsmEvent::Kind kind, std::string detail, CK_RV rv,
                         std::chrono::milliseconds retry_in) const {
  if (!on_event_) return;
  HsmEvent e;
  e.kind = kind;
  e.hsm = name_;
  e.detail = std::move(detail);
  e.rv = rv;
  e.retry_in = retry_in;
  on_event_(e);
}

void Pkcs11Backend::note_device_error(CK_RV rv, std::string_view call) {
  device_errors_.fetch_add(1);
  const std::string what = std::string{call} + " failed with " + std::string{ckr_name(rv)} +
                           " on HSM " + q(name_) + " token " + q(identity_.label);
  emit(HsmEvent::Kind::DeviceError, what, rv);
  std::chrono::milliseconds retry_in{};
  {
    std::lock_guard lock(state_mutex_);
    if (down_.load()) return;
    if (++consecutive_device_errors_ < device_errors_to_fail_) return;
    down_rv_ = rv;
    down_reason_ =
        std::to_string(consecutive_device_errors_) + " device errors in a row, last: " + what;
    retry_in = backoff_.failed();
    down_.store(true);
  }
  emit(HsmEvent::Kind::MarkedFailed,
       "taken out after " + std::to_string(device_errors_to_fail_) +
           " device errors in a row (last: " + what + "); calls fail fast until re-initialized",
       rv, retry_in);
}

void Pkcs11Backend::note_success() {
  std::lock_guard lock(state_mutex_);
  consecutive_device_errors_ = 0;
  if (!down_.load()) backoff_.reset();
}

std::optional<Error> Pkcs11Backend::unavailable_error() {
  bool due = false;
  {
    std::lock_guard lock(state_mutex_);
    if (!down_.load()) return std::nullopt;
    due = backoff_.due();
  }
  // The first caller once due makes the attempt; the others do not wait for it.
  if (due && try_recover()) return std::nullopt;
  std::lock_guard lock(state_mutex_);
  if (!down_.load()) return std::nullopt;
  return internal("HSM " + q(name_) + " is unavailable (" + std::string{ckr_name(down_rv_)} +
                      "); re-initializing, next attempt in " +
                      std::to_string(backoff_.remaining().count()) +
                      " ms; check the HSM's reachability",
                  down_reason_);
}

CK_RV Pkcs11Backend::relocate_token() {
  // Slot ids may change across C_Initialize: find the token again by serial.
  CK_ULONG count = 0;
  CK_RV rv = fn_->C_GetSlotList(CK_TRUE, nullptr, &count);
  std::vector<CK_SLOT_ID> slots(count);
  if (rv == CKR_OK && count > 0) rv = fn_->C_GetSlotList(CK_TRUE, slots.data(), &count);
  if (rv != CKR_OK) return rv;
  slots.resize(count);
  for (CK_SLOT_ID slot : slots) {
    CK_TOKEN_INFO info{};
    if (fn_->C_GetTokenInfo(slot, &info) == CKR_OK &&
        detail::padded_field(info.serialNumber) == identity_.serial &&
        detail::padded_field(info.label) == identity_.label) {
      slot_.store(slot);
      return CKR_OK;
    }
  }
  return CKR_TOKEN_NOT_PRESENT;
}

bool Pkcs11Backend::try_recover() {
  std::unique_lock recovering(recover_mutex_, std::try_to_lock);
  if (!recovering.owns_lock()) return false;  // someone else is at it
  {
    std::lock_guard lock(state_mutex_);
    if (!down_.load()) return true;
    if (!backoff_.due()) return false;
  }
  reinit_attempts_.fetch_add(1);
  // Finalizing kills every session of the process on this library: only when
  // nobody else uses the module and none of our calls is still inside it.
  const bool whole_module =
      module_.use_count() == 1 && module_->owns_initialization() && pool_.in_use() == 0;
  emit(HsmEvent::Kind::ReinitAttempt,
       whole_module ? "closing sessions, C_Finalize + C_Initialize, reopening sessions"
                    : "closing and reopening sessions (module shared or calls in flight: no "
                      "C_Finalize)");

  pool_.invalidate();
  {
    std::unique_lock lock(keys_mutex_);
    keys_.clear();  // handles may not survive a re-initialization
  }
  CK_RV rv = CKR_OK;
  std::string failed_call;
  if (whole_module) {
    module_reinits_.fetch_add(1);
    rv = module_->reinitialize();
    failed_call = "C_Initialize";
    if (rv == CKR_OK) {
      rv = relocate_token();
      failed_call = "finding token " + q(identity_.label) + " serial " + identity_.serial;
    }
  }
  std::optional<Error> error;
  if (rv == CKR_OK) {
    // One fresh, logged-in session proves the HSM is back; the pool refills on demand.
    Result<SessionPool::Lease> lease = pool_.lease_fresh();
    if (!lease) {
      error = std::move(lease).error();
      rv = last_open_rv_.load();
    }
  } else {
    error = ckr_to_error(rv, failed_call + " on HSM " + q(name_));
  }

  std::chrono::milliseconds retry_in{};
  {
    std::lock_guard lock(state_mutex_);
    if (!error) {
      down_.store(false);
      consecutive_device_errors_ = 0;
    } else {
      retry_in = backoff_.failed();
      down_rv_ = rv == CKR_OK ? down_rv_ : rv;
      down_reason_ = "re-initialization failed: " + error->message +
                     (error->detail.empty() ? "" : "; " + error->detail);
    }
  }
  if (!error) {
    emit(HsmEvent::Kind::Recovered, "HSM " + q(name_) + " token " + q(identity_.label) +
                                        " serves again after re-initialization");
    return true;
  }
  emit(HsmEvent::Kind::ReinitFailed, error->message + "; " + error->detail, rv, retry_in);
  return false;
}

// ---------------------------------------------------------------- key handles

Result<CK_OBJECT_HANDLE> Pkcs11Backend::find_key(CK_SESSION_HANDLE session, std::string_view label,
                                                 CK_RV& rv_out, bool was_cached) {
  {
    std::shared_lock lock(keys_mutex_);
    if (auto it = keys_.find(label); it != keys_.end()) return it->second;
  }
  key_lookups_.fetch_add(1);
  CK_OBJECT_CLASS key_class = CKO_SECRET_KEY;
  CK_ATTRIBUTE tmpl[] = {
      {CKA_CLASS, &key_class, sizeof key_class},
      {CKA_LABEL, const_cast<char*>(label.data()), label.size()},
  };
  const std::string context = "C_FindObjects for key " + q(label) + " on HSM " + q(name_);
  CK_RV rv = fn_->C_FindObjectsInit(session, tmpl, std::size(tmpl));
  if (rv != CKR_OK) {
    rv_out = rv;
    return ckr_to_error(rv, context);
  }
  std::array<CK_OBJECT_HANDLE, 2> found{};
  CK_ULONG n = 0;
  rv = fn_->C_FindObjects(session, found.data(), found.size(), &n);
  // Must always end the search, or the session stays in search state.
  const CK_RV final_rv = fn_->C_FindObjectsFinal(session);
  if (rv == CKR_OK) rv = final_rv;
  if (rv != CKR_OK) {
    rv_out = rv;
    return ckr_to_error(rv, context);
  }
  if (n == 0) {
    // Private keys are invisible to a session that lost its login: that is a
    // session failure to recover from, not a missing key.
    CK_SESSION_INFO info{};
    if (fn_->C_GetSessionInfo(session, &info) == CKR_OK && info.state != CKS_RW_USER_FUNCTIONS) {
      rv_out = CKR_USER_NOT_LOGGED_IN;
      return ckr_to_error(CKR_USER_NOT_LOGGED_IN, context);
    }
    Error e = make_error(
        ErrorName::KeyNotFoundException, "No key labelled " + q(label) + " on HSM " + q(name_),
        "key label " + q(label) + ": C_FindObjects(CKO_SECRET_KEY, CKA_LABEL=" + q(label) +
            ") on HSM " + q(name_) + " token " + q(identity_.label) + " serial " +
            identity_.serial + ": no match" +
            (was_cached ? " (the key was there before: its cached handle went invalid)" : ""));
    emit(HsmEvent::Kind::KeyNotFound, e.detail);
    return e;
  }
  if (n > 1) {
    return internal("Key label " + q(label) + " is ambiguous on HSM " + q(name_) +
                        ": more than one secret key has it; labels must be unique",
                    "C_FindObjects(CKO_SECRET_KEY, CKA_LABEL=" + q(label) + ") on token " +
                        q(identity_.label) + ": 2 or more matches");
  }
  std::unique_lock lock(keys_mutex_);
  keys_.insert_or_assign(std::string{label}, found[0]);
  return found[0];
}

void Pkcs11Backend::forget_key(std::string_view label, CK_OBJECT_HANDLE stale) {
  std::unique_lock lock(keys_mutex_);
  // Only if nobody replaced it with a fresh handle in the meantime.
  if (auto it = keys_.find(label); it != keys_.end() && it->second == stale) keys_.erase(it);
}

template <class Op, class Map>
Result<void> Pkcs11Backend::with_key(std::string_view label, Op&& op, Map&& map) {
  bool session_retried = false;
  bool handle_retried = false;
  for (;;) {
    if (const CK_RV refused = login_refused_.load(); refused != CKR_OK) {
      return login_refused_error(refused);
    }
    if (down_.load()) {
      if (auto unavailable = unavailable_error()) return std::move(*unavailable);
    }
    Result<SessionPool::Lease> lease = session_retried ? pool_.lease_fresh() : pool_.lease();
    if (!lease) return std::move(lease).error();

    CK_RV find_rv = CKR_OK;
    // After a stale handle the key was there before: if it is now missing, it vanished.
    Result<CK_OBJECT_HANDLE> key = find_key(lease->handle(), label, find_rv, handle_retried);
    if (!key) {
      if (ckr_class(find_rv) == CkrClass::Device) {
        lease->discard();
        note_device_error(find_rv, "C_FindObjects");
      } else if (ckr_class(find_rv) == CkrClass::Session) {
        sessions_discarded_.fetch_add(1);
        lease->discard();
        if (!session_retried) {
          session_retried = true;
          continue;
        }
      }
      return std::move(key).error();
    }

    Step step = op(lease->handle(), *key);
    if (step.succeeded()) {
      note_success();
      return {};
    }
    if (step.error) return std::move(*step.error);
    // C_Decrypt's way of saying "the tag does not verify" (after C_DecryptInit
    // succeeded) is about the request: never a device error, or bad tags could
    // take the HSM out.
    if (std::strcmp(step.call, "C_Decrypt") == 0 && is_auth_failure(step.rv)) return map(step);
    if (ckr_class(step.rv) == CkrClass::Device) {
      // A session on a failing device is not to be trusted again.
      sessions_discarded_.fetch_add(1);
      lease->discard();
      note_device_error(step.rv, step.call);
      return map(step);
    }

    if ((step.rv == CKR_OBJECT_HANDLE_INVALID || step.rv == CKR_KEY_HANDLE_INVALID) &&
        !handle_retried) {
      // Deleted or recreated since we cached it: look the label up once more.
      stale_handles_.fetch_add(1);
      forget_key(label, *key);
      handle_retried = true;
      continue;
    }
    if (ckr_class(step.rv) == CkrClass::Session) {
      sessions_discarded_.fetch_add(1);
      lease->discard();
      if (!session_retried) {
        session_retried = true;
        continue;
      }
    }
    return map(step);
  }
}

// ---------------------------------------------------------------- operations

Result<KeyAttributes> Pkcs11Backend::key_attributes(std::string_view label) {
  KeyAttributes attrs;
  auto op = [&](CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) -> Step {
    CK_RV rv = CKR_OK;
    Result<KeyAttributes> read = read_key_attributes(fn_, session, key, rv);
    if (!read) return Step::failed(rv, "C_GetAttributeValue");
    attrs = std::move(*read);
    return Step::ok();
  };
  auto map = [&](const Step& step) {
    return ckr_to_error(step.rv,
                        std::string{step.call} + " for key " + q(label) + " on HSM " + q(name_));
  };
  if (Result<void> r = with_key(label, op, map); !r) return std::move(r).error();
  return attrs;
}

Result<GcmCiphertext> Pkcs11Backend::encrypt(std::string_view label, ByteView plaintext,
                                             ByteView aad) {
  GcmCiphertext result;
  auto op = [&](CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) -> Step {
    Bytes iv(kGcmIvBytes, 0);
    if (iv_mode_ == config::IvMode::CallerRandom) {
      if (CK_RV rv = fn_->C_GenerateRandom(session, iv.data(), iv.size()); rv != CKR_OK) {
        return Step::failed(rv, "C_GenerateRandom");
      }
    }
    // hsm_appended: pIv NULL asks the HSM to generate the IV and append it.
    const bool appended = iv_mode_ == config::IvMode::HsmAppended;
    CK_GCM_PARAMS params{appended ? nullptr : iv.data(),
                         appended ? 0 : iv.size(),
                         appended ? 0 : iv.size() * 8,
                         aad.empty() ? nullptr : in_ptr(aad),
                         aad.size(),
                         kTagBits};
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    CK_RV rv = fn_->C_EncryptInit(session, &mechanism, key);
    if (rv != CKR_OK) return Step::failed(rv, "C_EncryptInit");

    // GCM output is exactly plaintext || tag (|| IV when appended): size it so,
    // saving a size query round trip to a network HSM; still honour a module
    // asking for more.
    const std::size_t sealed = plaintext.size() + kGcmTagBytes;
    Bytes out(sealed + (appended ? kGcmLongIvBytes : 0));
    CK_ULONG out_len = out.size();
    rv = fn_->C_Encrypt(session, in_ptr(plaintext), plaintext.size(), out.data(), &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL) {  // the operation stays active: call again
      out.resize(out_len);
      rv = fn_->C_Encrypt(session, in_ptr(plaintext), plaintext.size(), out.data(), &out_len);
    }
    if (rv != CKR_OK) return Step::failed(rv, "C_Encrypt");
    const bool length_ok =
        appended ? out_len >= sealed && is_gcm_iv_size(out_len - sealed) : out_len == sealed;
    if (!length_ok) {
      return Step::fail(internal(
          appended ? "HSM " + q(name_) + " did not append a GCM IV; check hsm.iv and hsm.vendor"
                   : std::string("The HSM returned a ciphertext of unexpected length"),
          "C_Encrypt CKM_AES_GCM (iv mode " + std::string(config::to_string(iv_mode_)) +
              ") returned " + std::to_string(out_len) + " bytes for " +
              std::to_string(plaintext.size()) + " bytes of plaintext"));
    }
    if (appended) {
      iv.assign(out.begin() + static_cast<std::ptrdiff_t>(sealed),
                out.begin() + static_cast<std::ptrdiff_t>(out_len));
    }
    if (iv_mode_ != config::IvMode::CallerRandom &&
        std::all_of(iv.begin(), iv.end(), [](std::uint8_t b) { return b == 0; })) {
      // An all-zero IV means the module did not generate one; encrypting twice
      // would reuse it, which breaks GCM. Refuse rather than answer.
      return Step::fail(
          internal("HSM " + q(name_) + " did not generate a GCM IV; check hsm.iv and hsm.vendor",
                   "C_Encrypt left the IV all zero (iv mode " +
                       std::string(config::to_string(iv_mode_)) + ")"));
    }
    const auto split = static_cast<std::ptrdiff_t>(plaintext.size());
    result.ciphertext.assign(out.begin(), out.begin() + split);
    result.tag.assign(out.begin() + split, out.begin() + static_cast<std::ptrdiff_t>(sealed));
    result.iv = std::move(iv);
    OPENSSL_cleanse(out.data(), out.size());
    return Step::ok();
  };
  auto map = [&](const Step& step) {
    return ckr_to_error(step.rv, std::string{step.call} + " (AES-GCM) with key " + q(label) +
                                     " on HSM " + q(name_));
  };
  if (Result<void> r = with_key(label, op, map); !r) return std::move(r).error();
  return result;
}

Result<SecureBytes> Pkcs11Backend::decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                                           ByteView tag, ByteView aad) {
  if (!is_gcm_iv_size(iv.size()) || tag.size() != kGcmTagBytes) {
    // The spec's sizes: anything else cannot be a ciphertext of an XKS proxy.
    return make_error(ErrorName::InvalidCiphertextException,
                      "The IV must be 12 or 16 bytes and the authentication tag 16 bytes",
                      "decrypt with key " + q(label) + ": iv " + std::to_string(iv.size()) +
                          " bytes, tag " + std::to_string(tag.size()) + " bytes");
  }
  Bytes input;
  input.reserve(ciphertext.size() + tag.size());
  input.insert(input.end(), ciphertext.begin(), ciphertext.end());
  input.insert(input.end(), tag.begin(), tag.end());

  SecureBytes plaintext;
  auto op = [&](CK_SESSION_HANDLE session, CK_OBJECT_HANDLE key) -> Step {
    CK_GCM_PARAMS params{const_cast<unsigned char*>(iv.data()), iv.size(),  iv.size() * 8,
                         aad.empty() ? nullptr : in_ptr(aad),   aad.size(), kTagBits};
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    CK_RV rv = fn_->C_DecryptInit(session, &mechanism, key);
    if (rv != CKR_OK) return Step::failed(rv, "C_DecryptInit");
    // Some modules want room for the tag too before they know it verifies.
    plaintext.assign(input.size(), 0);
    CK_ULONG out_len = plaintext.size();
    rv = fn_->C_Decrypt(session, input.data(), input.size(), plaintext.data(), &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL) {
      plaintext.assign(out_len, 0);
      rv = fn_->C_Decrypt(session, input.data(), input.size(), plaintext.data(), &out_len);
    }
    if (rv != CKR_OK) return Step::failed(rv, "C_Decrypt");
    plaintext.resize(out_len);
    return Step::ok();
  };
  auto map = [&](const Step& step) {
    const std::string context =
        std::string{step.call} + " (AES-GCM) with key " + q(label) + " on HSM " + q(name_);
    Error e = ckr_to_error(step.rv, context);
    if (std::strcmp(step.call, "C_Decrypt") == 0 && is_auth_failure(step.rv)) {
      e.name = ErrorName::InvalidCiphertextException;
      e.message = "The ciphertext, IV, authentication tag, AAD or metadata do not verify";
      e.detail = context + ": " + e.detail + " (read as a failed tag check)";
    }
    return e;
  };
  if (Result<void> r = with_key(label, op, map); !r) return std::move(r).error();
  return plaintext;
}

// ---------------------------------------------------------------- health, stats

std::vector<SessionCounts> Pkcs11Backend::session_counts() const {
  return {SessionCounts{name_, pool_.in_use(), pool_.open_count()}};
}

std::vector<EkmHealth> Pkcs11Backend::check_health() {
  EkmHealth h;
  h.id = identity_.label + " " + identity_.serial;
  h.model = identity_.manufacturer + " " + identity_.model + " firmware " + identity_.firmware;
  h.vendor = identity_.manufacturer;

  if (auto refused = login_refused()) {
    h.status = HealthStatus::Unavailable;
    h.detail = refused->message + "; " + refused->detail;
    return {h};
  }
  if (down_.load()) {
    if (auto unavailable = unavailable_error()) {
      h.status = HealthStatus::Unavailable;
      h.detail = unavailable->message + "; " + unavailable->detail;
      return {h};
    }
  }
  if (health_key_.empty()) {
    h.status = HealthStatus::Degraded;
    h.detail = "hsm.health_key is not set: no deep check possible";
    return {h};
  }

  // A fixed probe: it must not carry anything of value, and must look like a
  // real request (non-empty plaintext and AAD).
  static constexpr std::string_view kProbe = "xks-proxy health probe, not a secret";
  static constexpr std::string_view kProbeAad = "xks-proxy health";
  const auto start = std::chrono::steady_clock::now();
  Result<GcmCiphertext> ct = encrypt(health_key_, as_bytes(kProbe), as_bytes(kProbeAad));
  Result<SecureBytes> pt =
      ct ? decrypt(health_key_, ct->ciphertext, ct->iv, ct->tag, as_bytes(kProbeAad))
         : Result<SecureBytes>{ct.error()};
  h.latency = std::chrono::duration_cast<std::chrono::microseconds>(
      std::chrono::steady_clock::now() - start);

  if (!pt) {
    const Error& e = pt.error();
    // Busy is not broken: every session is serving real traffic.
    h.status = e.name == ErrorName::ThrottlingException ? HealthStatus::Degraded
                                                        : HealthStatus::Unavailable;
    h.detail = "health key " + q(health_key_) + ": " + std::string{to_string(e.name)} + ": " +
               e.message + (e.detail.empty() ? "" : "; " + e.detail);
  } else if (as_chars(*pt) != kProbe) {
    h.status = HealthStatus::Unavailable;
    h.detail = "health key " + q(health_key_) + ": round trip returned different plaintext";
  } else {
    h.status = HealthStatus::Active;
  }
  return {h};
}

Pkcs11Stats Pkcs11Backend::stats() const {
  Pkcs11Stats s;
  s.login_attempts = login_attempts_.load();
  s.sessions_opened = sessions_opened_.load();
  s.sessions_discarded = sessions_discarded_.load();
  s.key_lookups = key_lookups_.load();
  s.stale_handles = stale_handles_.load();
  s.device_errors = device_errors_.load();
  s.reinit_attempts = reinit_attempts_.load();
  s.module_reinits = module_reinits_.load();
  s.down = down_.load();
  s.sessions_in_use = pool_.in_use();
  s.sessions_open = pool_.open_count();
  return s;
}

}  // namespace xks::hsm
