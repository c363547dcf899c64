// xks_fault_pkcs11: a PKCS#11 module for tests that forwards every function of
// CK_FUNCTION_LIST to a real module and injects faults on demand (issue 5).
//
// Environment:
//   XKS_FAULT_TARGET   the real module (default /usr/lib/softhsm/libsofthsm2.so)
//   XKS_FAULT_CONTROL  control file; re-read when its mtime/size/inode changes
//                      (checked with one stat() at most every 2 ms)
//   XKS_FAULT_STATS    file the call counts are written to ("C_Login 1" per line,
//                      written atomically by rename, at most every 5 ms and at
//                      C_Finalize)
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
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <sys/stat.h>

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
#define XKS_FAULT_FUNCTIONS(X)                                                                   \
  X(C_Initialize, None) X(C_Finalize, None) X(C_GetInfo, None) X(C_GetSlotList, None)           \
  X(C_GetSlotInfo, Slot) X(C_GetTokenInfo, Slot) X(C_GetMechanismList, Slot)                    \
  X(C_GetMechanismInfo, Slot) X(C_InitToken, Slot) X(C_InitPIN, Session) X(C_SetPIN, Session)  \
  X(C_OpenSession, Slot) X(C_CloseSession, Session) X(C_CloseAllSessions, Slot)                 \
  X(C_GetSessionInfo, Session) X(C_GetOperationState, Session)                                  \
  X(C_SetOperationState, Session) X(C_Login, Session) X(C_Logout, Session)                      \
  X(C_CreateObject, Session) X(C_CopyObject, Session) X(C_DestroyObject, Session)               \
  X(C_GetObjectSize, Session) X(C_GetAttributeValue, Session) X(C_SetAttributeValue, Session)   \
  X(C_FindObjectsInit, Session) X(C_FindObjects, Session) X(C_FindObjectsFinal, Session)        \
  X(C_EncryptInit, Session) X(C_Encrypt, Session) X(C_EncryptUpdate, Session)                   \
  X(C_EncryptFinal, Session) X(C_DecryptInit, Session) X(C_Decrypt, Session)                    \
  X(C_DecryptUpdate, Session) X(C_DecryptFinal, Session) X(C_DigestInit, Session)               \
  X(C_Digest, Session) X(C_DigestUpdate, Session) X(C_DigestKey, Session)                       \
  X(C_DigestFinal, Session) X(C_SignInit, Session) X(C_Sign, Session) X(C_SignUpdate, Session)  \
  X(C_SignFinal, Session) X(C_SignRecoverInit, Session) X(C_SignRecover, Session)               \
  X(C_VerifyInit, Session) X(C_Verify, Session) X(C_VerifyUpdate, Session)                      \
  X(C_VerifyFinal, Session) X(C_VerifyRecoverInit, Session) X(C_VerifyRecover, Session)         \
  X(C_DigestEncryptUpdate, Session) X(C_DecryptDigestUpdate, Session)                           \
  X(C_SignEncryptUpdate, Session) X(C_DecryptVerifyUpdate, Session) X(C_GenerateKey, Session)   \
  X(C_GenerateKeyPair, Session) X(C_WrapKey, Session) X(C_UnwrapKey, Session)                   \
  X(C_DeriveKey, Session) X(C_SeedRandom, Session) X(C_GenerateRandom, Session)                 \
  X(C_GetFunctionStatus, Session) X(C_CancelFunction, Session) X(C_WaitForSlotEvent, None)

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

struct FileId {
  timespec mtime{};
  off_t size = -1;
  ino_t ino = 0;
  bool operator==(const FileId& o) const {
    return mtime.tv_sec == o.mtime.tv_sec && mtime.tv_nsec == o.mtime.tv_nsec &&
           size == o.size && ino == o.ino;
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
      const bool hit = r.prob >= 1.0 || std::uniform_real_distribution<double>(0, 1)(s.rng) < r.prob;
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

template <std::size_t I>
struct Target;
#define XKS_TARGET(name, kind)                                              \
  template <>                                                               \
  struct Target<k_##name> {                                                 \
    static constexpr Arg kArg = Arg::kind;                                  \
    static auto get(CK_FUNCTION_LIST* f) { return f->name; }                \
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
        const CK_OBJECT_HANDLE object = std::get<I == k_C_GetAttributeValue ? 1 : 2>(args);
        if (s.hidden.count(object_label(s, first, object)) != 0) {
          return I == k_C_GetAttributeValue ? CKR_OBJECT_HANDLE_INVALID : CKR_KEY_HANDLE_INVALID;
        }
      }
    }
    if constexpr (I == k_C_Finalize) stop_flusher(s);

    const CK_RV rv = real(a...);

    if constexpr (I == k_C_OpenSession) {
      if (rv == CKR_OK) {
        std::lock_guard lock(s.mutex);
        s.session_slot[*std::get<4>(args)] = first;
      }
    } else if constexpr (I == k_C_CloseSession) {
      std::lock_guard lock(s.mutex);
      s.session_slot.erase(first);
      s.hidden_search.erase(first);
    } else if constexpr (I == k_C_CloseAllSessions || I == k_C_Finalize) {
      std::lock_guard lock(s.mutex);
      for (auto it = s.session_slot.begin(); it != s.session_slot.end();) {
        if (I == k_C_Finalize || it->second == first) {
          s.hidden_search.erase(it->first);
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
