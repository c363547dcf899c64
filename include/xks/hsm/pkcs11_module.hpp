// A loaded PKCS#11 library: dlopen, C_GetFunctionList, C_Initialize, and
// C_Finalize + dlclose when the last user lets go.
#pragma once

#include <p11-kit/pkcs11.h>

#include <filesystem>
#include <memory>
#include <optional>
#include <string>

#include "xks/core/result.hpp"

namespace xks::hsm {

class Pkcs11Module {
 public:
  // What C_Initialize is given: CKF_OS_LOCKING_OK (worker threads call the
  // module at once) and, for modules that read one, a pReserved string.
  struct InitOptions {
    std::optional<std::string> args;
    bool os_locking = true;
  };

  // Loads and initializes (CKF_OS_LOCKING_OK) the library at `path`, or returns
  // the already loaded instance for the same file. Shared because C_Initialize
  // and C_Finalize act on the whole process: two backends on one library (two
  // tokens, or a reload overlapping the old backend) must share one
  // initialization, and only the last one may finalize.
  // Errors (InternalException, message names the path): file missing, dlopen
  // failure, no C_GetFunctionList (not a PKCS#11 module), C_Initialize failure.
  // `init_rv`, when given, receives C_Initialize's code if that is what failed
  // (CKR_OK otherwise), so that a caller can tell a device that is down from a
  // configuration mistake.
  // A module already loaded keeps the options of its first load.
  static Result<std::shared_ptr<Pkcs11Module>> load(const std::filesystem::path& path,
                                                    const InitOptions& init,
                                                    CK_RV* init_rv = nullptr);

  ~Pkcs11Module();
  Pkcs11Module(const Pkcs11Module&) = delete;
  Pkcs11Module& operator=(const Pkcs11Module&) = delete;

  CK_FUNCTION_LIST* fn() const noexcept { return fn_; }
  const std::filesystem::path& path() const noexcept { return path_; }
  // "<manufacturerID> <libraryDescription> <major.minor>" from C_GetInfo.
  const std::string& description() const noexcept { return description_; }

  // True when this process's C_Initialize was ours (not "already initialized").
  bool owns_initialization() const noexcept { return finalize_; }

  // C_Finalize + C_Initialize, to recover a library that lost its device. Every
  // session of every user of this module dies: only for a sole owner with no call
  // in flight (the backend checks both). Returns C_Initialize's code.
  CK_RV reinitialize();

 private:
  struct Token {};  // keeps the constructor private to load() yet make_shared-able
 public:
  Pkcs11Module(Token, std::filesystem::path path, void* handle, CK_FUNCTION_LIST* fn, bool finalize,
               InitOptions init);

 private:
  std::filesystem::path path_;
  void* handle_ = nullptr;
  CK_FUNCTION_LIST* fn_ = nullptr;
  // False when C_Initialize said CKR_CRYPTOKI_ALREADY_INITIALIZED: someone else
  // in this process owns the initialization, so finalizing is theirs to do.
  bool finalize_ = false;
  InitOptions init_;
  std::string description_;
};

}  // namespace xks::hsm
