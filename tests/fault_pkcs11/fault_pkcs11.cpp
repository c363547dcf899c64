// xks_fault_pkcs11: a PKCS#11 module for tests that forwards every function of
// CK_FUNCTION_LIST to a real module and injects faults on demand.
//
// Environment:
//   XKS_FAULT_TARGET   the real module (default /usr/lib/softhsm/libsofthsm2.so)
//   XKS_FAULT_CONTROL  control file; re-read when its mtime/size/inode changes
//                      (checked with one stat() at most every 2 ms)
//   XKS_FAULT_STATS    file the call counts are written to ("C_Login 1" per line,
//                      written atomically by rename, at most every 5 ms and at
//                      C_Finalize)
//   XKS_FAULT_PROFILE  luna | luna_fips16 | cloudhsm | nshield: behave as that HSM
//                      family is documented to (below); standard: only the bad-tag
//                      code below; unset or empty: forward as is
//
// Control file, one directive per line ('#' starts a comment):
//   hide_label=LABEL
//       C_FindObjects finds nothing for a template with CKA_LABEL=LABEL, and
//       C_EncryptInit / C_DecryptInit / C_GetAttributeValue on an object
//       labelled LABEL answer CKR_KEY_HANDLE_INVALID / CKR_OBJECT_HANDLE_INVALID:
//       the key has "vanished" even for a caller that cached its handle.
//   FUNCTION|* [token=LABEL] [latency_ms=N] [hang] [rv=CKR_NAME|0xHEX]
//              [count=N] [prob=P] [logout]
//       latency_ms  sleep N ms before the call
//       hang        block until the control file changes
//       rv          answer this code instead of calling the real function, on
//                   every call, or the next `count` calls after the control file
//                   was (re)read, or with probability `prob`
//       logout      with rv: also C_Logout the session first (the token loses
//                   its login, as after an HSM restart)
//       token       only for calls on a session/slot of the token so labelled
//   e.g. "C_Encrypt latency_ms=300", "C_Decrypt rv=CKR_DEVICE_ERROR count=3",
//        "C_Login rv=CKR_PIN_INCORRECT", "C_OpenSession token=hsm-b rv=CKR_DEVICE_ERROR".
// An injected error on C_Encrypt/C_Decrypt still ends the real operation (as a
// real failing call does), so the session is not left with an active operation.
//
// Vendor profiles. This is an EMULATION: the cryptography is the target's
// (SoftHSM2's); only the documented interface behaviour of each family around it
// is reproduced, so a profile proves that the proxy copes with that behaviour,
// not that it works with the vendor's library. The sources are the AWS KMS XKS
// sample proxy's configuration files (github.com/aws-samples/aws-kms-xks-proxy,
// xks-axum/configuration/settings_*.toml, section [hsm_capabilities]) and how
// that proxy's Encrypt handler (xks-axum/src/xks_proxy/handlers/encrypt.rs) uses
// them.
//   luna       settings_luna.toml: "Luna HSM supports IV being explicitly
//              specified or explicitly omitted (with null pointer). If explicitly
//              specified, the IV will be used. If omitted, the IV will be
//              generated but not returned in the mechanism parameter but appended
//              to the ciphertext after the authentication tag."
//              (can_generate_iv = true, is_zero_iv_required = false).
//              C_EncryptInit(CKM_AES_GCM) with pIv NULL or ulIvLen 0 draws a
//              12-byte IV (target's C_GenerateRandom, else /dev/urandom) and
//              initialises the target with it; the next single-part C_Encrypt on
//              that session returns ciphertext || tag || IV, and its length query
//              (NULL output) and CKR_BUFFER_TOO_SMALL answer count the IV bytes.
//              A caller-given IV is used as given.
//   luna_fips16  the same with a 16-byte IV: Luna firmware before 7.9.3 in FIPS
//              mode generates 16-byte GCM IVs (config/examples/thales-luna.yaml
//              cites Thales's CKM_AES_GCM documentation). SoftHSM2 accepts a
//              16-byte GCM IV on C_EncryptInit and C_DecryptInit alike.
//   cloudhsm   settings_cloudhsm.toml: "CloudHSM always generate IV but requires
//              the input IV to be all zeros" (can_generate_iv = true,
//              is_zero_iv_required = true); the sample's handler passes 12 zero
//              bytes "necessary for CloudHSM" and reads the IV back from the
//              buffer. C_EncryptInit(CKM_AES_GCM) answers CKR_MECHANISM_PARAM_INVALID
//              unless pIv is non-NULL, ulIvLen is 12 and the 12 bytes are zero;
//              then it draws the IV, writes it into the caller's pIv buffer (before
//              C_EncryptInit returns) and initialises the target with it.
//              C_Login: the sample's user_pin = "xks_proxy:1234567", i.e. the PIN
//              is "<crypto user>:<password>". A PIN without ':' is answered
//              CKR_PIN_INCORRECT; the target is given only the password.
//   nshield    settings_nshield.toml: "nShield HSM requires to generate the IV"
//              (can_generate_iv = true, is_zero_iv_required = true): the IV is
//              handled as for cloudhsm. A failed GCM tag check is answered
//              CKR_FUNCTION_FAILED: reported behaviour of nShield from this
//              project's issue tracker (no public vendor source found). SoftHSM2
//              answers a failed tag check CKR_GENERAL_ERROR, so every
//              CKR_GENERAL_ERROR from C_Decrypt / C_DecryptFinal becomes
//              CKR_FUNCTION_FAILED.
//   Failed tag check, every profile but nshield: SoftHSM2's CKR_GENERAL_ERROR from
//              C_Decrypt / C_DecryptFinal becomes CKR_ENCRYPTED_DATA_INVALID, the
//              code the proxy's default auth_failure_codes (and NSS softoken) use.
//              No source states Luna's or CloudHSM's code: this is the assumption
//              that they follow that default, not a documented fact.
//   standard   that mapping alone, for families with no documented behaviour to
//              emulate (e.g. HashiCorp Vault's provider, Utimaco).
// What a profile did is counted in the stats file: profile_ivs_generated,
// profile_iv_refused (bad IV parameter refused), profile_logins_split (cloudhsm
// PINs split at ':'), profile_login_refused, profile_tag_failures_mapped.
// Calls the module makes itself (C_GenerateRandom for an IV) are not counted.
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace {

enum class Arg { None, Slot, Session };  // what the first parameter is

// Every function of CK_FUNCTION_LIST but C_GetFunctionList, in list order.
// An X-macro list, one function a line.
// clang-format off
#define XKS_FAULT_FUNCTIONS(X) \
  X(C_Initialize, None) \
  X(C_Finalize, None) \
  X(C_GetInfo, None) \
  X(C_GetSlotList, None) \
  X(C_GetSlotInfo, Slot) \
  X(C_GetTokenInfo, Slot) \
  X(C_GetMechanismList, Slot) \
  X(C_GetMechanismInfo, Slot) \
  X(C_InitToken, Slot) \
  X(C_InitPIN, Session) \
  X(C_SetPIN, Session) \
  X(C_OpenSession, Slot) \
  X(C_CloseSession, Session) \
  X(C_CloseAllSessions, Slot) \
  X(C_GetSessionInfo, Session) \
  X(C_GetOperationState, Session) \
  X(C_SetOperationState, Session) \
  X(C_Login, Session) \
  X(C_Logout, Session) \
  X(C_CreateObject, Session) \
  X(C_CopyObject, Session) \
  X(C_DestroyObject, Session) \
  X(C_GetObjectSize, Session) \
  X(C_GetAttributeValue, Session) \
  X(C_SetAttributeValue, Session) \
  X(C_FindObjectsInit, Session) \
  X(C_FindObjects, Session) \
  X(C_FindObjectsFinal, Session) \
  X(C_EncryptInit, Session) \
  X(C_Encrypt, Session) \
  X(C_EncryptUpdate, Session) \
  X(C_EncryptFinal, Session) \
  X(C_DecryptInit, Session) \
  X(C_Decrypt, Session) \
  X(C_DecryptUpdate, Session) \
  X(C_DecryptFinal, Session) \
  X(C_DigestInit, Session) \
  X(C_Digest, Session) \
  X(C_DigestUpdate, Session) \
  X(C_DigestKey, Session) \
  X(C_DigestFinal, Session) \
  X(C_SignInit, Session) \
  X(C_Sign, Session) \
  X(C_SignUpdate, Session) \
  X(C_SignFinal, Session) \
  X(C_SignRecoverInit, Session) \
  X(C_SignRecover, Session) \
  X(C_VerifyInit, Session) \
  X(C_Verify, Session) \
  X(C_VerifyUpdate, Session) \
  X(C_VerifyFinal, Session) \
  X(C_VerifyRecoverInit, Session) \
  X(C_VerifyRecover, Session) \
  X(C_DigestEncryptUpdate, Session) \
  X(C_DecryptDigestUpdate, Session) \
  X(C_SignEncryptUpdate, Session) \
  X(C_DecryptVerifyUpdate, Session) \
  X(C_GenerateKey, Session) \
  X(C_GenerateKeyPair, Session) \
  X(C_WrapKey, Session) \
  X(C_UnwrapKey, Session) \
  X(C_DeriveKey, Session) \
  X(C_SeedRandom, Session) \
  X(C_GenerateRandom, Session) \
  X(C_GetFunctionStatus, Session) \
  X(C_CancelFunction, Session) \
  X(C_WaitForSlotEvent, None)
// clang-format on

enum Fn : std::size_t {
#define XKS_ENUM(name, kind) k_##name,
  XKS_FAULT_FUNCTIONS(XKS_ENUM)
#undef XKS_ENUM
      kFnCount
};

constexpr std::array<const char*, kFnCount> kNames = {
#define XKS_NAME(name, kind) #name,
    XKS_FAULT_FUNCTIONS(XKS_NAME)
#undef XKS_NAME
};

struct CkrName {
  const char* name;
  CK_RV rv;
};
constexpr CkrName kCkrNames[] = {
    {"CKR_OK", CKR_OK},
    {"CKR_CANCEL", CKR_CANCEL},
    {"CKR_HOST_MEMORY", CKR_HOST_MEMORY},
    {"CKR_SLOT_ID_INVALID", CKR_SLOT_ID_INVALID},
    {"CKR_GENERAL_ERROR", CKR_GENERAL_ERROR},
    {"CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED},
    {"CKR_ARGUMENTS_BAD", CKR_ARGUMENTS_BAD},
    {"CKR_DEVICE_ERROR", CKR_DEVICE_ERROR},
    {"CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY},
    {"CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED},
    {"CKR_ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID},
    {"CKR_FUNCTION_CANCELED", CKR_FUNCTION_CANCELED},
    {"CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID},
    {"CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID},
    {"CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE},
    {"CKR_PIN_INCORRECT", CKR_PIN_INCORRECT},
    {"CKR_PIN_EXPIRED", CKR_PIN_EXPIRED},
    {"CKR_PIN_LOCKED", CKR_PIN_LOCKED},
    {"CKR_SESSION_CLOSED", CKR_SESSION_CLOSED},
    {"CKR_SESSION_COUNT", CKR_SESSION_COUNT},
    {"CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID},
    {"CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT},
    {"CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED},
    {"CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN},
    {"CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED},
};

struct Rule {
  std::string fn;     // a function name or "*"
  std::string token;  // empty: any
  long latency_ms = 0;
  bool hang = false;
  std::optional<CK_RV> rv;
  long remaining = -1;  // calls left that get rv; -1: unlimited
  double prob = 1.0;
  bool logout = false;
};

enum class Profile { None, Standard, Luna, LunaFips16, CloudHsm, NShield };

struct FileId {
  timespec mtime{};
  off_t size = -1;
  ino_t ino = 0;
  bool operator==(const FileId& o) const {
    return mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec && size == o.size &&
           ino == o.ino;
  }
};

using Clock = std::chrono::steady_clock;

// Everything the module knows. Leaked on purpose: a worker thread of the host
// may still be inside a call while the process exits.
struct State {
  std::mutex mutex;
  CK_FUNCTION_LIST* target = nullptr;
  void* target_handle = nullptr;
  CK_FUNCTION_LIST list{};

  std::string control_path;
  std::string stats_path;
  FileId control_id;
  Clock::time_point last_stat{};
  std::vector<Rule> rules;
  std::set<std::string> hidden;
  bool any_token_rule = false;
  std::mt19937_64 rng{std::random_device{}()};

  Profile profile = Profile::None;
  // luna: the IV a session's active GCM encryption was given by this module,
  // appended to that encryption's output.
  std::map<CK_SESSION_HANDLE, std::vector<unsigned char>> appended_iv;
  std::atomic<unsigned long> ivs_generated{0};
  std::atomic<unsigned long> iv_refused{0};
  std::atomic<unsigned long> logins_split{0};
  std::atomic<unsigned long> login_refused{0};
  std::atomic<unsigned long> tag_failures_mapped{0};

  std::map<CK_SESSION_HANDLE, CK_SLOT_ID> session_slot;
  std::map<CK_SLOT_ID, std::string> slot_label;
  std::set<CK_SESSION_HANDLE> hidden_search;

  std::array<std::atomic<unsigned long>, kFnCount> calls{};
  std::atomic<unsigned long> reloads{0};
  std::atomic<bool> dirty{false};

  std::mutex flusher_mutex;
  std::condition_variable flusher_cv;
  std::thread flusher;
  bool flusher_stop = false;
};

State& state() {
  static auto* s = new State;  // NOLINT: leaked, see State
  return *s;
}

void note(const std::string& msg) { std::fprintf(stderr, "xks_fault_pkcs11: %s\n", msg.c_str()); }

std::optional<CK_RV> parse_rv(const std::string& v) {
  for (const auto& c : kCkrNames) {
    if (v == c.name) return c.rv;
  }
  if (v.rfind("0x", 0) == 0 || v.rfind("0X", 0) == 0) {
    char* end = nullptr;
    const unsigned long n = std::strtoul(v.c_str() + 2, &end, 16);
    if (end != nullptr && *end == '\0') return n;
  }
  return std::nullopt;
}

FileId stat_control(const std::string& path) {
  FileId id;
  struct stat st {};
  if (!path.empty() && ::stat(path.c_str(), &st) == 0) {
    id.mtime = st.st_mtim;
    id.size = st.st_size;
    id.ino = st.st_ino;
  }
  return id;
}

// Caller holds s.mutex.
void load_control(State& s) {
  s.rules.clear();
  s.hidden.clear();
  s.any_token_rule = false;
  s.reloads.fetch_add(1);
  std::ifstream in(s.control_path);
  std::string line;
  int lineno = 0;
  while (std::getline(in, line)) {
    ++lineno;
    if (const auto hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string first;
    if (!(words >> first)) continue;
    if (first.rfind("hide_label=", 0) == 0) {
      s.hidden.insert(first.substr(std::strlen("hide_label=")));
      continue;
    }
    Rule r;
    r.fn = first;
    bool ok = first == "*";
    for (const char* n : kNames) ok = ok || first == n;
    if (!ok) {
      note("control line " + std::to_string(lineno) + ": unknown function " + first);
      continue;
    }
    std::string w;
    while (words >> w) {
      const auto eq = w.find('=');
      const std::string key = w.substr(0, eq);
      const std::string val = eq == std::string::npos ? "" : w.substr(eq + 1);
      if (key == "hang") {
        r.hang = true;
      } else if (key == "logout") {
        r.logout = true;
      } else if (key == "latency_ms") {
        r.latency_ms = std::strtol(val.c_str(), nullptr, 10);
      } else if (key == "count") {
        r.remaining = std::strtol(val.c_str(), nullptr, 10);
      } else if (key == "prob") {
        r.prob = std::strtod(val.c_str(), nullptr);
      } else if (key == "token") {
        r.token = val;
        s.any_token_rule = true;
      } else if (key == "rv") {
        r.rv = parse_rv(val);
        if (!r.rv) note("control line " + std::to_string(lineno) + ": unknown rv " + val);
      } else {
        note("control line " + std::to_string(lineno) + ": unknown setting " + key);
      }
    }
    s.rules.push_back(std::move(r));
  }
}

// Caller holds s.mutex. Re-reads the control file if it changed.
void maybe_reload(State& s, bool force_stat) {
  if (s.control_path.empty()) return;
  const auto now = Clock::now();
  if (!force_stat && now - s.last_stat < std::chrono::milliseconds(2)) return;
  s.last_stat = now;
  const FileId id = stat_control(s.control_path);
  if (id == s.control_id) return;
  s.control_id = id;
  load_control(s);
}

void write_stats(State& s) {
  if (s.stats_path.empty()) return;
  s.dirty = false;
  std::string text;
  for (std::size_t i = 0; i < kFnCount; ++i) {
    const unsigned long n = s.calls[i].load();
    if (n != 0) text += std::string{kNames[i]} + " " + std::to_string(n) + "\n";
  }
  text += "control_reloads " + std::to_string(s.reloads.load()) + "\n";
  if (s.profile != Profile::None) {
    text += "profile_ivs_generated " + std::to_string(s.ivs_generated.load()) + "\n";
    text += "profile_iv_refused " + std::to_string(s.iv_refused.load()) + "\n";
    text += "profile_logins_split " + std::to_string(s.logins_split.load()) + "\n";
    text += "profile_login_refused " + std::to_string(s.login_refused.load()) + "\n";
    text += "profile_tag_failures_mapped " + std::to_string(s.tag_failures_mapped.load()) + "\n";
  }
  const std::string tmp = s.stats_path + ".tmp";
  if (FILE* f = std::fopen(tmp.c_str(), "w")) {
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    std::rename(tmp.c_str(), s.stats_path.c_str());
  }
}

void start_flusher(State& s) {
  if (s.stats_path.empty()) return;
  std::lock_guard lock(s.flusher_mutex);
  if (s.flusher.joinable()) return;
  s.flusher_stop = false;
  s.flusher = std::thread([&s] {
    std::unique_lock l(s.flusher_mutex);
    while (!s.flusher_stop) {
      s.flusher_cv.wait_for(l, std::chrono::milliseconds(5));
      if (s.dirty) write_stats(s);
    }
    write_stats(s);
  });
}

void stop_flusher(State& s) {
  std::thread t;
  {
    std::lock_guard lock(s.flusher_mutex);
    s.flusher_stop = true;
    t = std::move(s.flusher);
  }
  s.flusher_cv.notify_all();
  if (t.joinable()) t.join();
}

// Caller holds s.mutex. The token label of a slot, asked once.
const std::string& label_of(State& s, CK_SLOT_ID slot) {
  auto it = s.slot_label.find(slot);
  if (it == s.slot_label.end()) {
    CK_TOKEN_INFO info{};
    std::string label;
    if (s.target->C_GetTokenInfo(slot, &info) == CKR_OK) {
      label.assign(reinterpret_cast<const char*>(info.label), sizeof info.label);
      label.erase(label.find_last_not_of(' ') + 1);
    }
    it = s.slot_label.emplace(slot, label).first;
  }
  return it->second;
}

// Caller holds s.mutex: the label of an object, or "" (only asked with hide_label set).
std::string object_label(State& s, CK_SESSION_HANDLE session, CK_OBJECT_HANDLE object) {
  CK_ATTRIBUTE a{CKA_LABEL, nullptr, 0};
  if (s.target->C_GetAttributeValue(session, object, &a, 1) != CKR_OK || a.ulValueLen > 1024) {
    return {};
  }
  std::string label(a.ulValueLen, '\0');
  a.pValue = label.data();
  if (s.target->C_GetAttributeValue(session, object, &a, 1) != CKR_OK) return {};
  return label;
}

bool template_hides(State& s, const CK_ATTRIBUTE* tmpl, CK_ULONG count) {
  for (CK_ULONG i = 0; tmpl != nullptr && i < count; ++i) {
    if (tmpl[i].type == CKA_LABEL && tmpl[i].pValue != nullptr) {
      const std::string label(static_cast<const char*>(tmpl[i].pValue), tmpl[i].ulValueLen);
      if (s.hidden.count(label) != 0) return true;
    }
  }
  return false;
}

struct Decision {
  long latency_ms = 0;
  bool hang = false;
  std::optional<CK_RV> rv;
  bool logout = false;
};

Decision decide(State& s, std::size_t fn, Arg kind, CK_ULONG first) {
  std::lock_guard lock(s.mutex);
  maybe_reload(s, false);
  Decision d;
  if (s.rules.empty()) return d;
  std::string token;
  bool token_known = false;
  for (auto& r : s.rules) {
    if (r.fn != "*" && r.fn != kNames[fn]) continue;
    if (!r.token.empty()) {
      if (!token_known) {
        token_known = true;
        if (kind == Arg::Slot) {
          token = label_of(s, first);
        } else if (kind == Arg::Session) {
          if (auto it = s.session_slot.find(first); it != s.session_slot.end()) {
            token = label_of(s, it->second);
          }
        }
      }
      if (token != r.token) continue;
    }
    d.latency_ms = std::max(d.latency_ms, r.latency_ms);
    d.hang = d.hang || r.hang;
    if (r.rv && !d.rv && r.remaining != 0) {
      const bool hit =
          r.prob >= 1.0 || std::uniform_real_distribution<double>(0, 1)(s.rng) < r.prob;
      if (hit) {
        d.rv = r.rv;
        d.logout = r.logout;
        if (r.remaining > 0) --r.remaining;
      }
    }
  }
  return d;
}

void hang_until_control_changes(State& s) {
  FileId start;
  {
    std::lock_guard lock(s.mutex);
    start = s.control_id;
  }
  for (;;) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    std::lock_guard lock(s.mutex);
    maybe_reload(s, true);
    if (!(s.control_id == start)) return;
  }
}

// ---- vendor profiles (see the header comment) ---------------------------------

bool appends_iv(Profile p) { return p == Profile::Luna || p == Profile::LunaFips16; }

const CK_GCM_PARAMS* gcm_params(const CK_MECHANISM* m) {
  if (m == nullptr || m->mechanism != CKM_AES_GCM || m->pParameter == nullptr ||
      m->ulParameterLen != sizeof(CK_GCM_PARAMS)) {
    return nullptr;
  }
  return static_cast<const CK_GCM_PARAMS*>(m->pParameter);
}

// A fresh IV of n bytes from the target's RNG on this session, else /dev/urandom.
bool draw_iv(State& s, CK_SESSION_HANDLE session, std::vector<unsigned char>& iv, std::size_t n) {
  iv.assign(n, 0);
  if (s.target->C_GenerateRandom(session, iv.data(), n) == CKR_OK) return true;
  FILE* f = std::fopen("/dev/urandom", "rb");
  if (f == nullptr) return false;
  const bool ok = std::fread(iv.data(), 1, n, f) == n;
  std::fclose(f);
  return ok;
}

void forget_iv(State& s, CK_SESSION_HANDLE session) {
  std::lock_guard lock(s.mutex);
  s.appended_iv.erase(session);
}

CK_RV profile_encrypt_init(State& s, CK_SESSION_HANDLE session, CK_MECHANISM* mechanism,
                           CK_OBJECT_HANDLE key) {
  forget_iv(s, session);  // a new operation replaces any earlier one
  const CK_GCM_PARAMS* given = gcm_params(mechanism);
  if (given == nullptr) return s.target->C_EncryptInit(session, mechanism, key);
  std::vector<unsigned char> iv;
  if (appends_iv(s.profile)) {
    if (given->pIv != nullptr && given->ulIvLen != 0) {
      return s.target->C_EncryptInit(session, mechanism, key);  // used as given
    }
    if (!draw_iv(s, session, iv, s.profile == Profile::LunaFips16 ? 16 : 12)) {
      return CKR_DEVICE_ERROR;
    }
  } else {
    const bool zero_buffer =
        given->pIv != nullptr && given->ulIvLen == 12 &&
        std::all_of(given->pIv, given->pIv + 12, [](unsigned char b) { return b == 0; });
    if (!zero_buffer) {
      s.iv_refused.fetch_add(1);
      s.dirty = true;
      return CKR_MECHANISM_PARAM_INVALID;
    }
    if (!draw_iv(s, session, iv, 12)) return CKR_DEVICE_ERROR;
  }
  CK_GCM_PARAMS params = *given;
  params.pIv = iv.data();
  params.ulIvLen = iv.size();
  params.ulIvBits = iv.size() * 8;
  CK_MECHANISM with_iv = *mechanism;
  with_iv.pParameter = &params;
  const CK_RV rv = s.target->C_EncryptInit(session, &with_iv, key);
  if (rv != CKR_OK) return rv;
  s.ivs_generated.fetch_add(1);
  s.dirty = true;
  if (appends_iv(s.profile)) {
    std::lock_guard lock(s.mutex);
    s.appended_iv[session] = std::move(iv);
  } else {
    std::memcpy(given->pIv, iv.data(), iv.size());
  }
  return rv;
}

// luna: single-part C_Encrypt of an operation whose IV this module drew returns
// ciphertext || tag || IV; sizes (NULL output, CKR_BUFFER_TOO_SMALL) include the IV.
CK_RV profile_encrypt(State& s, CK_SESSION_HANDLE session, CK_BYTE* data, CK_ULONG data_len,
                      CK_BYTE* out, CK_ULONG* out_len) {
  std::vector<unsigned char> iv;
  {
    std::lock_guard lock(s.mutex);
    if (auto it = s.appended_iv.find(session); it != s.appended_iv.end()) iv = it->second;
  }
  if (iv.empty() || out_len == nullptr) {
    return s.target->C_Encrypt(session, data, data_len, out, out_len);
  }
  CK_ULONG needed = 0;
  CK_RV rv = s.target->C_Encrypt(session, data, data_len, nullptr, &needed);
  if (rv != CKR_OK) {
    forget_iv(s, session);  // any error but CKR_BUFFER_TOO_SMALL ends the operation
    return rv;
  }
  const CK_ULONG total = needed + iv.size();
  if (out == nullptr) {
    *out_len = total;  // a length query; the operation stays active
    return CKR_OK;
  }
  if (*out_len < total) {
    *out_len = total;
    return CKR_BUFFER_TOO_SMALL;  // the operation stays active
  }
  CK_ULONG got = *out_len - iv.size();
  rv = s.target->C_Encrypt(session, data, data_len, out, &got);
  forget_iv(s, session);
  if (rv != CKR_OK) return rv;
  std::memcpy(out + got, iv.data(), iv.size());
  *out_len = got + iv.size();
  return CKR_OK;
}

// cloudhsm: the PIN is "<crypto user>:<password>"; the target knows only the password.
CK_RV profile_login(State& s, CK_SESSION_HANDLE session, CK_USER_TYPE user, CK_UTF8CHAR* pin,
                    CK_ULONG pin_len) {
  if (pin == nullptr) return s.target->C_Login(session, user, pin, pin_len);
  const CK_UTF8CHAR* colon = std::find(pin, pin + pin_len, static_cast<CK_UTF8CHAR>(':'));
  if (colon == pin + pin_len) {
    s.login_refused.fetch_add(1);
    s.dirty = true;
    return CKR_PIN_INCORRECT;
  }
  s.logins_split.fetch_add(1);
  s.dirty = true;
  const CK_ULONG skip = static_cast<CK_ULONG>(colon - pin) + 1;
  return s.target->C_Login(session, user, pin + skip, pin_len - skip);
}

// SoftHSM2's answer to a failed tag check becomes the profile's.
CK_RV profile_decrypt_result(State& s, CK_RV rv) {
  if (rv != CKR_GENERAL_ERROR) return rv;
  s.tag_failures_mapped.fetch_add(1);
  s.dirty = true;
  return s.profile == Profile::NShield ? CKR_FUNCTION_FAILED : CKR_ENCRYPTED_DATA_INVALID;
}

// The target's function, or the profile's version of it.
template <std::size_t I, class R, class... A>
CK_RV forward(State& s, R real, A... a) {
  if (s.profile == Profile::None) return real(a...);
  if constexpr (I == k_C_EncryptInit) {
    if (s.profile != Profile::Standard) return profile_encrypt_init(s, a...);
  } else if constexpr (I == k_C_Encrypt) {
    if (appends_iv(s.profile)) return profile_encrypt(s, a...);
  } else if constexpr (I == k_C_Login) {
    if (s.profile == Profile::CloudHsm) return profile_login(s, a...);
  } else if constexpr (I == k_C_Decrypt || I == k_C_DecryptFinal) {
    return profile_decrypt_result(s, real(a...));
  }
  return real(a...);
}

template <std::size_t I>
struct Target;
#define XKS_TARGET(name, kind)                               \
  template <>                                                \
  struct Target<k_##name> {                                  \
    static constexpr Arg kArg = Arg::kind;                   \
    static auto get(CK_FUNCTION_LIST* f) { return f->name; } \
  };
XKS_FAULT_FUNCTIONS(XKS_TARGET)
#undef XKS_TARGET

template <std::size_t I, class F>
struct Wrap;

template <std::size_t I, class... A>
struct Wrap<I, CK_RV (*)(A...)> {
  static CK_RV call(A... a) {
    State& s = state();
    if (s.target == nullptr) return CKR_GENERAL_ERROR;
    s.calls[I].fetch_add(1);
    s.dirty = true;
    constexpr Arg kind = Target<I>::kArg;
    auto args = std::make_tuple(a...);
    CK_ULONG first = 0;
    if constexpr (kind != Arg::None) first = static_cast<CK_ULONG>(std::get<0>(args));

    if constexpr (I == k_C_Initialize) start_flusher(s);

    const Decision d = decide(s, I, kind, first);
    if (d.latency_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(d.latency_ms));
    if (d.hang) hang_until_control_changes(s);
    auto real = Target<I>::get(s.target);

    if (d.rv) {
      if constexpr (kind == Arg::Session) {
        if (d.logout) (void)s.target->C_Logout(first);
      }
      if constexpr (I == k_C_Encrypt) forget_iv(s, first);
      if constexpr (I == k_C_Encrypt || I == k_C_Decrypt) {
        // End the real operation, as a failing real call would: call it with a
        // scratch buffer and throw the result away.
        std::vector<unsigned char> scratch(std::get<2>(args) + 1024);
        CK_ULONG len = scratch.size();
        (void)real(std::get<0>(args), std::get<1>(args), std::get<2>(args), scratch.data(), &len);
      }
      return *d.rv;
    }

    if constexpr (I == k_C_FindObjects) {
      bool hide = false;
      {
        std::lock_guard lock(s.mutex);
        hide = s.hidden_search.count(first) != 0;
      }
      if (hide) {
        *std::get<3>(args) = 0;
        return CKR_OK;
      }
    }
    if constexpr (I == k_C_EncryptInit || I == k_C_DecryptInit || I == k_C_GetAttributeValue) {
      std::lock_guard lock(s.mutex);
      if (!s.hidden.empty()) {
        const CK_OBJECT_HANDLE object = std::get < I == k_C_GetAttributeValue ? 1 : 2 > (args);
        if (s.hidden.count(object_label(s, first, object)) != 0) {
          return I == k_C_GetAttributeValue ? CKR_OBJECT_HANDLE_INVALID : CKR_KEY_HANDLE_INVALID;
        }
      }
    }
    if constexpr (I == k_C_Finalize) stop_flusher(s);

    const CK_RV rv = forward<I>(s, real, a...);

    if constexpr (I == k_C_OpenSession) {
      if (rv == CKR_OK) {
        std::lock_guard lock(s.mutex);
        s.session_slot[*std::get<4>(args)] = first;
      }
    } else if constexpr (I == k_C_CloseSession) {
      std::lock_guard lock(s.mutex);
      s.appended_iv.erase(first);
      s.session_slot.erase(first);
      s.hidden_search.erase(first);
    } else if constexpr (I == k_C_CloseAllSessions || I == k_C_Finalize) {
      std::lock_guard lock(s.mutex);
      for (auto it = s.session_slot.begin(); it != s.session_slot.end();) {
        if (I == k_C_Finalize || it->second == first) {
          s.hidden_search.erase(it->first);
          s.appended_iv.erase(it->first);
          it = s.session_slot.erase(it);
        } else {
          ++it;
        }
      }
      if constexpr (I == k_C_Finalize) s.slot_label.clear();
    } else if constexpr (I == k_C_FindObjectsInit) {
      if (rv == CKR_OK) {
        std::lock_guard lock(s.mutex);
        if (template_hides(s, std::get<1>(args), std::get<2>(args))) {
          s.hidden_search.insert(first);
        } else {
          s.hidden_search.erase(first);
        }
      }
    } else if constexpr (I == k_C_FindObjectsFinal) {
      std::lock_guard lock(s.mutex);
      s.hidden_search.erase(first);
    }
    return rv;
  }
};

CK_RV load_target(State& s) {
  std::lock_guard lock(s.mutex);
  if (s.target != nullptr) return CKR_OK;
  const char* path = std::getenv("XKS_FAULT_TARGET");
  if (path == nullptr || *path == '\0') path = "/usr/lib/softhsm/libsofthsm2.so";
  if (const char* c = std::getenv("XKS_FAULT_CONTROL")) s.control_path = c;
  if (const char* st = std::getenv("XKS_FAULT_STATS")) s.stats_path = st;
  if (const char* p = std::getenv("XKS_FAULT_PROFILE"); p != nullptr && *p != '\0') {
    const std::string name = p;
    if (name == "standard") {
      s.profile = Profile::Standard;
    } else if (name == "luna") {
      s.profile = Profile::Luna;
    } else if (name == "luna_fips16") {
      s.profile = Profile::LunaFips16;
    } else if (name == "cloudhsm") {
      s.profile = Profile::CloudHsm;
    } else if (name == "nshield") {
      s.profile = Profile::NShield;
    } else {
      note("unknown XKS_FAULT_PROFILE " + name +
           " (standard, luna, luna_fips16, cloudhsm, nshield)");
      return CKR_GENERAL_ERROR;
    }
  }
  s.target_handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (s.target_handle == nullptr) {
    note(std::string{"cannot dlopen target "} + path + ": " + dlerror());
    return CKR_GENERAL_ERROR;
  }
  auto* get = reinterpret_cast<CK_C_GetFunctionList>(dlsym(s.target_handle, "C_GetFunctionList"));
  CK_FUNCTION_LIST* target = nullptr;
  if (get == nullptr || get(&target) != CKR_OK || target == nullptr) {
    note(std::string{"no usable C_GetFunctionList in "} + path);
    return CKR_GENERAL_ERROR;
  }
  s.target = target;
  s.list.version = target->version;
#define XKS_FILL(name, kind) s.list.name = &Wrap<k_##name, decltype(s.list.name)>::call;
  XKS_FAULT_FUNCTIONS(XKS_FILL)
#undef XKS_FILL
  s.list.C_GetFunctionList = &C_GetFunctionList;
  maybe_reload(s, true);
  return CKR_OK;
}

}  // namespace

extern "C" __attribute__((visibility("default"))) CK_RV C_GetFunctionList(CK_FUNCTION_LIST** out) {
  if (out == nullptr) return CKR_ARGUMENTS_BAD;
  State& s = state();
  if (const CK_RV rv = load_target(s); rv != CKR_OK) return rv;
  *out = &s.list;
  return CKR_OK;
}

// Stops the stats writer when the host dlcloses us without C_Finalize.
__attribute__((destructor)) static void xks_fault_unload() { stop_flusher(state()); }
