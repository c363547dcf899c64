// A bounded pool of logged-in PKCS#11 sessions. A caller leases one for the
// duration of one operation; when all are in use it waits at most
// `lease_timeout` and then gets ThrottlingException, because KMS gives up on a
// call after 250 ms and a late answer is worth less than a quick 429.
#pragma once

#include <p11-kit/pkcs11.h>

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "xks/core/result.hpp"

namespace xks::hsm {

class SessionPool {
 public:
  struct Hooks {
    std::function<Result<CK_SESSION_HANDLE>()> open;  // open + log in one session
    std::function<void(CK_SESSION_HANDLE)> close;     // must not throw
  };

  // A leased session. Goes back to the pool on destruction unless discard()ed.
  class Lease {
   public:
    Lease() = default;
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&& other) noexcept;
    Lease(const Lease&) = delete;
    Lease& operator=(const Lease&) = delete;
    ~Lease();

    CK_SESSION_HANDLE handle() const noexcept { return handle_; }
    // The session is broken (closed, logged out, left with an active operation):
    // close it instead of returning it; its place can be reopened.
    void discard() noexcept;

   private:
    friend class SessionPool;
    Lease(SessionPool* pool, CK_SESSION_HANDLE handle, std::uint64_t generation) noexcept
        : pool_(pool), handle_(handle), generation_(generation) {}
    void release(bool discard) noexcept;
    SessionPool* pool_ = nullptr;
    CK_SESSION_HANDLE handle_ = CK_INVALID_HANDLE;
    std::uint64_t generation_ = 0;
  };

  // `name` is the HSM's name for error messages.
  SessionPool(std::string name, std::size_t capacity, std::chrono::milliseconds lease_timeout,
              Hooks hooks);
  ~SessionPool();  // closes the idle sessions; every Lease must be gone
  SessionPool(const SessionPool&) = delete;
  SessionPool& operator=(const SessionPool&) = delete;

  // An idle session, or a newly opened one while fewer than `capacity` exist.
  // ThrottlingException after waiting lease_timeout; the open hook's error if a
  // new session could not be opened.
  Result<Lease> lease();

  // Like lease(), but always a newly opened session: an idle one is closed to
  // make room. For the retry after a session failure, because whatever broke
  // one session (logout, C_CloseAllSessions, an HSM restart) usually broke
  // the idle ones too.
  Result<Lease> lease_fresh();

  // Opens sessions until `capacity` exist (used at startup to fail fast).
  Result<void> fill();

  // Forgets every session: the idle ones are closed now, the leased ones when
  // they come back (their handles belong to a token or module state that is
  // being re-initialized). Their places can be reopened at once.
  void invalidate();

  std::size_t capacity() const noexcept { return capacity_; }
  std::size_t in_use() const;      // leased right now
  std::size_t open_count() const;  // open (idle + leased + being opened)

 private:
  Result<Lease> lease(bool fresh);
  void give_back(CK_SESSION_HANDLE handle, std::uint64_t generation, bool discard) noexcept;

  const std::string name_;
  const std::size_t capacity_;
  const std::chrono::milliseconds lease_timeout_;
  Hooks hooks_;

  mutable std::mutex mutex_;
  std::condition_variable available_;
  std::vector<CK_SESSION_HANDLE> idle_;  // LIFO: the warmest session first
  std::size_t open_ = 0;                 // includes sessions being opened
  std::size_t leased_ = 0;
  std::uint64_t generation_ = 0;  // bumped by invalidate()
};

}  // namespace xks::hsm
