#include "xks/hsm/pkcs11_module.hpp"

#include <dlfcn.h>

#include <map>
#include <mutex>
#include <system_error>

#include "pkcs11_util.hpp"
#include "xks/hsm/ckr.hpp"

namespace xks::hsm {

namespace {

// The one process-wide table of loaded modules. A global, against the house
// rule, because the thing it mirrors is global: C_Initialize/C_Finalize act on
// the library as loaded into this process, whoever calls them. Never destroyed,
// so a module released during static destruction still finds its mutex.
struct Registry {
  std::recursive_mutex mutex;  // recursive: a failed load destroys a module under it
  std::map<std::string, std::weak_ptr<Pkcs11Module>> modules;
};

Registry& registry() {
  static auto* r = new Registry;  // NOLINT: intentionally leaked, see above
  return *r;
}

Error load_error(const std::filesystem::path& path, std::string problem, std::string detail = {}) {
  return make_error(ErrorName::InternalException,
                    "Cannot load PKCS#11 module " + path.string() + ": " + std::move(problem) +
                        " (check hsm.module)",
                    std::move(detail));
}

// C_Initialize's arguments. `args` keeps the pReserved string alive.
CK_RV initialize(CK_FUNCTION_LIST* fn, const Pkcs11Module::InitOptions& init) {
  CK_C_INITIALIZE_ARGS args{};
  if (init.os_locking) args.flags = CKF_OS_LOCKING_OK;
  std::string reserved = init.args.value_or("");
  if (init.args) args.pReserved = reserved.data();
  return fn->C_Initialize(&args);
}

}  // namespace

Pkcs11Module::Pkcs11Module(Token, std::filesystem::path path, void* handle, CK_FUNCTION_LIST* fn,
                           bool finalize, InitOptions init)
    : path_(std::move(path)),
      handle_(handle),
      fn_(fn),
      finalize_(finalize),
      init_(std::move(init)) {
  CK_INFO info{};
  if (fn_->C_GetInfo(&info) == CKR_OK) {
    description_ = detail::padded_field(info.manufacturerID) + " " +
                   detail::padded_field(info.libraryDescription) + " " +
                   detail::version_string(info.libraryVersion);
  }
}

Pkcs11Module::~Pkcs11Module() {
  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  // Only if our weak entry is the expired one: a new load may already have
  // replaced it (it cannot have: it would wait for this lock, but stay safe).
  if (auto it = reg.modules.find(path_.string()); it != reg.modules.end() && it->second.expired()) {
    reg.modules.erase(it);
  }
  if (finalize_) {
    // Nothing useful to do with a failure while tearing down.
    (void)fn_->C_Finalize(nullptr);
  }
  if (handle_ != nullptr) dlclose(handle_);
}

CK_RV Pkcs11Module::reinitialize() {
  std::lock_guard lock(registry().mutex);
  // A failure to finalize is fine: the library may already have lost its state.
  (void)fn_->C_Finalize(nullptr);
  const CK_RV rv = initialize(fn_, init_);
  return rv == CKR_CRYPTOKI_ALREADY_INITIALIZED ? CKR_OK : rv;
}

Result<std::shared_ptr<Pkcs11Module>> Pkcs11Module::load(const std::filesystem::path& path,
                                                         const InitOptions& init, CK_RV* init_rv) {
  if (init_rv != nullptr) *init_rv = CKR_OK;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return load_error(path, "no such file");
  }
  const auto canonical = std::filesystem::weakly_canonical(path, ec);
  const std::string key = ec ? path.string() : canonical.string();

  auto& reg = registry();
  std::lock_guard lock(reg.mutex);
  if (auto it = reg.modules.find(key); it != reg.modules.end()) {
    if (auto existing = it->second.lock()) return existing;
  }

  // RTLD_LOCAL: vendor libraries bundle their own OpenSSL and must not resolve
  // symbols against ours (or we against theirs).
  void* handle = dlopen(key.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr) {
    const char* why = dlerror();
    return load_error(path, "dlopen failed", why != nullptr ? why : "");
  }
  // POSIX guarantees that a data pointer can hold a function pointer from dlsym.
  auto* get_list = reinterpret_cast<CK_C_GetFunctionList>(  // NOLINT
      dlsym(handle, "C_GetFunctionList"));
  if (get_list == nullptr) {
    dlclose(handle);
    return load_error(path, "not a PKCS#11 module (no C_GetFunctionList)");
  }
  CK_FUNCTION_LIST* fn = nullptr;
  if (CK_RV rv = get_list(&fn); rv != CKR_OK || fn == nullptr) {
    dlclose(handle);
    return load_error(path, "C_GetFunctionList failed",
                      std::string{"C_GetFunctionList: "}.append(ckr_name(rv)));
  }
  const CK_RV rv = initialize(fn, init);
  if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
    if (init_rv != nullptr) *init_rv = rv;
    dlclose(handle);
    return make_error(ErrorName::InternalException,
                      "PKCS#11 module " + path.string() + ": C_Initialize failed with " +
                          std::string{ckr_name(rv)},
                      std::string{"C_Initialize: "}.append(ckr_name(rv)));
  }
  auto module = std::make_shared<Pkcs11Module>(Token{}, std::filesystem::path{key}, handle, fn,
                                               rv == CKR_OK, init);
  reg.modules[key] = module;
  return module;
}

}  // namespace xks::hsm
