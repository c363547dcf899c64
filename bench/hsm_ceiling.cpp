// The HSM's own ceiling for the proxy's key operations: how many Encrypt, Decrypt
// and Encrypt + CDIV operations per second the token of a proxy configuration
// serves when nothing but the PKCS#11 calls the proxy makes per request runs,
// and how much CPU of this process each one costs.
//
// It opens the token through the project's own token layer (hsm.environment,
// hsm.module with hsm.init_args, the token hsm.token_label/serial/slot_id
// selects, C_Login with hsm.pin), with hsm.sessions logged-in sessions and as
// many threads as the proxy has HSM workers (the sum of hsm.sessions over the
// configured HSMs), one session per thread as a worker leases one. Per
// operation it makes exactly the calls of Pkcs11Backend::encrypt / decrypt:
//   encrypt  C_GenerateRandom (12-byte IV, hsm.iv: caller_random only)
//            + C_EncryptInit(CKM_AES_GCM) + C_Encrypt
//   decrypt  C_DecryptInit(CKM_AES_GCM) + C_Decrypt
//   cdiv     encrypt, then decrypt of its result (the Appendix C check)
// with the AAD framed as the proxy frames it (no client AAD, the current
// ciphertext metadata). The key handle is looked up once, as the proxy caches it.
//
// usage: hsm_ceiling --config FILE [--op encrypt|decrypt|cdiv|all] [--seconds S]
//                    [--warmup S] [--size BYTES] [--key ID] [--threads N] [--json]
//                    [--session-copy]  (an experiment: a session-object copy of the key)
// Figures only mean something in a Release build (the library code around the
// calls is the project's, the calls themselves are the module's).
#include <sys/resource.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/crypto/aad.hpp"
#include "xks/hsm/ckr.hpp"
#include "xks/hsm/key_backend.hpp"
#include "xks/hsm/token.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using xks::Bytes;

struct Options {
  std::string config, op = "all", key;
  double seconds = 5, warmup = 1;
  std::size_t size = 32;
  unsigned threads = 0;  // 0: the proxy's HSM worker count
  bool json = false;
  // Experiment, not what the proxy does: operate on a session-object copy of the
  // key (C_CopyObject with CKA_TOKEN false), which a software token keeps in
  // memory, to show how much of the ceiling is the token object's storage.
  bool session_copy = false;
};

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "hsm_ceiling: %s\nusage: hsm_ceiling --config FILE [--op encrypt|decrypt|cdiv|all] "
               "[--seconds S] [--warmup S] [--size BYTES] [--key ID] [--threads N] [--json] "
               "[--session-copy]\n",
               why.c_str());
  std::exit(2);
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config")
      o.config = value();
    else if (a == "--op")
      o.op = value();
    else if (a == "--key")
      o.key = value();
    else if (a == "--seconds")
      o.seconds = std::stod(value());
    else if (a == "--warmup")
      o.warmup = std::stod(value());
    else if (a == "--size")
      o.size = std::stoul(value());
    else if (a == "--threads")
      o.threads = static_cast<unsigned>(std::stoul(value()));
    else if (a == "--json")
      o.json = true;
    else if (a == "--session-copy")
      o.session_copy = true;
    else
      usage("unknown argument '" + a + "'");
  }
  if (o.config.empty()) usage("--config FILE is required (the proxy's configuration)");
  if (o.op != "encrypt" && o.op != "decrypt" && o.op != "cdiv" && o.op != "all") {
    usage("--op '" + o.op + "': use encrypt, decrypt, cdiv or all");
  }
  if (o.seconds <= 0 || o.warmup < 0) usage("--seconds must be > 0 and --warmup >= 0");
  if (o.size > 4300 * 4) usage("--size: at most 17200 bytes");
  return o;
}

void check(CK_RV rv, const char* call) {
  if (rv != CKR_OK) {
    throw std::runtime_error(std::string(call) + " failed with " +
                             std::string(xks::hsm::ckr_name(rv)));
  }
}

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) +
         static_cast<double>(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

constexpr std::size_t kTag = xks::hsm::kGcmTagBytes;
constexpr CK_ULONG kTagBits = kTag * 8;

// One worker: its session and the buffers of one operation, as the backend
// would hold them for the duration of a call.
struct Worker {
  CK_FUNCTION_LIST* fn = nullptr;
  CK_SESSION_HANDLE session = CK_INVALID_HANDLE;
  CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
  xks::config::IvMode iv_mode = xks::config::IvMode::CallerRandom;
  Bytes plaintext, aad, iv, sealed, opened;
  std::size_t iv_len = xks::hsm::kGcmIvBytes;
  std::uint64_t ops = 0;

  void encrypt() {
    const bool appended = iv_mode == xks::config::IvMode::HsmAppended;
    iv.assign(xks::hsm::kGcmIvBytes, 0);
    if (iv_mode == xks::config::IvMode::CallerRandom) {
      check(fn->C_GenerateRandom(session, iv.data(), iv.size()), "C_GenerateRandom");
    }
    CK_GCM_PARAMS params{appended ? nullptr : iv.data(),
                         appended ? 0 : iv.size(),
                         appended ? 0 : iv.size() * 8,
                         aad.data(),
                         aad.size(),
                         kTagBits};
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    check(fn->C_EncryptInit(session, &mechanism, key), "C_EncryptInit");
    sealed.resize(plaintext.size() + kTag + (appended ? xks::hsm::kGcmLongIvBytes : 0));
    CK_ULONG out_len = sealed.size();
    CK_RV rv = fn->C_Encrypt(session, plaintext.data(), plaintext.size(), sealed.data(), &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL) {
      sealed.resize(out_len);
      rv = fn->C_Encrypt(session, plaintext.data(), plaintext.size(), sealed.data(), &out_len);
    }
    check(rv, "C_Encrypt");
    const std::size_t body = plaintext.size() + kTag;
    if (appended) {
      iv.assign(sealed.begin() + static_cast<std::ptrdiff_t>(body),
                sealed.begin() + static_cast<std::ptrdiff_t>(out_len));
    }
    sealed.resize(body);  // ciphertext || tag: what a Decrypt request carries
  }

  void decrypt() {
    CK_GCM_PARAMS params{iv.data(), iv.size(), iv.size() * 8, aad.data(), aad.size(), kTagBits};
    CK_MECHANISM mechanism{CKM_AES_GCM, &params, sizeof params};
    check(fn->C_DecryptInit(session, &mechanism, key), "C_DecryptInit");
    opened.resize(sealed.size());
    CK_ULONG out_len = opened.size();
    CK_RV rv = fn->C_Decrypt(session, sealed.data(), sealed.size(), opened.data(), &out_len);
    if (rv == CKR_BUFFER_TOO_SMALL) {
      opened.resize(out_len);
      rv = fn->C_Decrypt(session, sealed.data(), sealed.size(), opened.data(), &out_len);
    }
    check(rv, "C_Decrypt");
    if (out_len != plaintext.size() || std::memcmp(opened.data(), plaintext.data(), out_len) != 0) {
      throw std::runtime_error("C_Decrypt returned a different plaintext");
    }
  }
};

struct Figure {
  std::string op;
  double ops_per_s = 0, cpu_us_per_op = 0, seconds = 0;
  std::uint64_t ops = 0;
};

Figure run(const std::string& op, std::vector<Worker>& workers, const Options& o) {
  std::atomic<int> phase{0};  // 0 warm-up, 1 measured, 2 stop
  std::atomic<std::uint64_t> failures{0};
  std::string failure;
  std::vector<std::thread> threads;
  for (auto& w : workers) {
    if (op == "decrypt") w.encrypt();  // one ciphertext per worker, decrypted over and over
    w.ops = 0;
  }
  for (auto& w : workers) {
    threads.emplace_back([&, wp = &w] {
      std::uint64_t n = 0;
      try {
        for (int p = phase.load(std::memory_order_relaxed); p != 2;
             p = phase.load(std::memory_order_relaxed)) {
          if (op == "encrypt") {
            wp->encrypt();
          } else if (op == "decrypt") {
            wp->decrypt();
          } else {
            wp->encrypt();
            wp->decrypt();
          }
          if (p == 1) ++n;
        }
      } catch (const std::exception& e) {
        if (failures.fetch_add(1) == 0) failure = e.what();
        phase.store(2);
      }
      wp->ops = n;
    });
  }
  std::this_thread::sleep_for(std::chrono::duration<double>(o.warmup));
  const double cpu0 = cpu_seconds();
  const auto t0 = Clock::now();
  phase.store(1);
  std::this_thread::sleep_for(std::chrono::duration<double>(o.seconds));
  phase.store(2);
  for (auto& t : threads) t.join();
  // The last operation of each thread may end after this: at most one per
  // thread, against thousands counted.
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();
  const double cpu = cpu_seconds() - cpu0;
  if (failures.load() != 0) throw std::runtime_error(op + ": " + failure);
  Figure f;
  f.op = op;
  for (const auto& w : workers) f.ops += w.ops;
  f.seconds = secs;
  f.ops_per_s = static_cast<double>(f.ops) / secs;
  f.cpu_us_per_op = f.ops ? 1e6 * cpu / static_cast<double>(f.ops) : 0;
  return f;
}

}  // namespace

int main(int argc, char** argv) {
  const Options o = parse(argc, argv);
  try {
    const xks::config::Config cfg = xks::config::load_config(o.config);
    if (cfg.hsms.empty() || cfg.keystores.empty() || cfg.keystores.front().keys.empty()) {
      throw std::runtime_error(o.config + ": needs an hsm and a key store with a key");
    }
    const xks::config::HsmConfig& hsm = cfg.hsms.front();
    unsigned proxy_workers = 0;  // the proxy's BlockingPool: one worker per session of every HSM
    for (const auto& h : cfg.hsms) proxy_workers += h.sessions;
    const unsigned nthreads = o.threads ? o.threads : proxy_workers;
    // One session per thread, as each worker leases one: PKCS#11 forbids two
    // threads on one session at once.
    if (nthreads > hsm.sessions) {
      throw std::runtime_error(std::to_string(nthreads) +
                               " threads need as many sessions; hsm.sessions is " +
                               std::to_string(hsm.sessions));
    }
    const unsigned nsessions = nthreads;

    std::string label;
    for (const auto& k : cfg.keystores.front().keys) {
      if (o.key.empty() || k.id == o.key) {
        label = k.label;
        break;
      }
    }
    if (label.empty()) throw std::runtime_error("no key '" + o.key + "' in the first key store");

    auto module = xks::hsm::load_module(hsm);
    if (!module) throw std::runtime_error(module.error().message + "; " + module.error().detail);
    CK_FUNCTION_LIST* fn = (*module)->fn();
    auto token = xks::hsm::find_token(fn, hsm);
    if (!token) throw std::runtime_error(token.error().message + "; " + token.error().detail);

    std::vector<CK_SESSION_HANDLE> sessions(nsessions, CK_INVALID_HANDLE);
    for (auto& s : sessions) {
      check(
          fn->C_OpenSession(token->slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, nullptr, nullptr, &s),
          "C_OpenSession");
    }
    const CK_RV login = fn->C_Login(
        sessions.front(), CKU_USER,
        reinterpret_cast<unsigned char*>(const_cast<char*>(hsm.pin.view().data())), hsm.pin.size());
    if (login != CKR_OK && login != CKR_USER_ALREADY_LOGGED_IN) check(login, "C_Login");

    CK_OBJECT_CLASS key_class = CKO_SECRET_KEY;
    CK_ATTRIBUTE tmpl[] = {{CKA_CLASS, &key_class, sizeof key_class},
                           {CKA_LABEL, label.data(), label.size()}};
    check(fn->C_FindObjectsInit(sessions.front(), tmpl, 2), "C_FindObjectsInit");
    CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
    CK_ULONG found = 0;
    const CK_RV frv = fn->C_FindObjects(sessions.front(), &key, 1, &found);
    check(fn->C_FindObjectsFinal(sessions.front()), "C_FindObjectsFinal");
    check(frv, "C_FindObjects");
    if (found != 1) throw std::runtime_error("no secret key labelled '" + label + "' on the token");
    if (o.session_copy) {
      CK_BBOOL no = CK_FALSE;
      CK_ATTRIBUTE copy_tmpl[] = {{CKA_TOKEN, &no, sizeof no}};
      CK_OBJECT_HANDLE copy = CK_INVALID_HANDLE;
      check(fn->C_CopyObject(sessions.front(), key, copy_tmpl, 1, &copy), "C_CopyObject");
      key = copy;
    }

    const Bytes metadata = xks::crypto::current_ciphertext_metadata();
    std::vector<Worker> workers(nthreads);
    for (unsigned i = 0; i < nthreads; ++i) {
      Worker& w = workers[i];
      w.fn = fn;
      w.session = sessions[i];
      w.key = key;
      w.iv_mode = hsm.iv;
      w.plaintext.assign(o.size, 0x5a);
      w.aad = xks::crypto::frame_aad({}, metadata);
    }

    std::vector<std::string> ops = o.op == "all"
                                       ? std::vector<std::string>{"encrypt", "decrypt", "cdiv"}
                                       : std::vector<std::string>{o.op};
    std::vector<Figure> figures;
    for (const auto& op : ops) figures.push_back(run(op, workers, o));

    for (auto s : sessions) (void)fn->C_CloseSession(s);  // exiting anyway

    if (o.json) {
      std::printf(
          "{\"module\": \"%s\", \"token\": \"%s\", \"sessions\": %u, \"threads\": %u, "
          "\"size\": %zu, \"seconds\": %.3f, \"ops\": {",
          hsm.module.string().c_str(), token->label.c_str(), nsessions, nthreads, o.size,
          o.seconds);
      for (std::size_t i = 0; i < figures.size(); ++i) {
        const Figure& f = figures[i];
        std::printf(
            "%s\"%s\": {\"ops_per_s\": %.1f, \"cpu_us_per_op\": %.2f, \"ops\": %llu, \"seconds\": "
            "%.3f}",
            i ? ", " : "", f.op.c_str(), f.ops_per_s, f.cpu_us_per_op,
            static_cast<unsigned long long>(f.ops), f.seconds);
      }
      std::printf("}}\n");
    } else {
      std::printf(
          "hsm_ceiling: %s, token '%s', %u sessions, %u threads, %zu-byte plaintext, %.1f s each\n",
          hsm.module.string().c_str(), token->label.c_str(), nsessions, nthreads, o.size,
          o.seconds);
      for (const Figure& f : figures) {
        std::printf("  %-8s %10.0f ops/s  %7.1f us CPU/op  (%llu ops)\n", f.op.c_str(), f.ops_per_s,
                    f.cpu_us_per_op, static_cast<unsigned long long>(f.ops));
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "hsm_ceiling: %s\n", e.what());
    return 1;
  }
  return 0;
}
