#include "xks/hsm/session_pool.hpp"

#include <utility>

namespace xks::hsm {

SessionPool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)),
      handle_(std::exchange(other.handle_, CK_INVALID_HANDLE)),
      generation_(other.generation_) {}

SessionPool::Lease& SessionPool::Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    release(false);
    pool_ = std::exchange(other.pool_, nullptr);
    handle_ = std::exchange(other.handle_, CK_INVALID_HANDLE);
    generation_ = other.generation_;
  }
  return *this;
}

SessionPool::Lease::~Lease() { release(false); }

void SessionPool::Lease::discard() noexcept { release(true); }

void SessionPool::Lease::release(bool discard) noexcept {
  if (pool_ != nullptr) {
    std::exchange(pool_, nullptr)
        ->give_back(std::exchange(handle_, CK_INVALID_HANDLE), generation_, discard);
  }
}

SessionPool::SessionPool(std::string name, std::size_t capacity,
                         std::chrono::milliseconds lease_timeout, Hooks hooks)
    : name_(std::move(name)),
      capacity_(capacity == 0 ? 1 : capacity),
      lease_timeout_(lease_timeout),
      hooks_(std::move(hooks)) {}

SessionPool::~SessionPool() {
  std::lock_guard lock(mutex_);
  for (CK_SESSION_HANDLE h : idle_) hooks_.close(h);
  idle_.clear();
}

Result<SessionPool::Lease> SessionPool::lease() { return lease(false); }

Result<SessionPool::Lease> SessionPool::lease_fresh() { return lease(true); }

Result<SessionPool::Lease> SessionPool::lease(bool fresh) {
  std::unique_lock lock(mutex_);
  const bool ready = available_.wait_for(lock, lease_timeout_,
                                         [this] { return !idle_.empty() || open_ < capacity_; });
  if (!ready) {
    return make_error(ErrorName::ThrottlingException,
                      "All " + std::to_string(capacity_) + " sessions of HSM '" + name_ +
                          "' are busy; retry later",
                      "session pool exhausted after waiting " +
                          std::to_string(lease_timeout_.count()) + " ms (raise hsm.sessions?)",
                      Error::Cause::SessionWait);
  }
  CK_SESSION_HANDLE replaced = CK_INVALID_HANDLE;
  if (!idle_.empty() && !fresh) {
    const CK_SESSION_HANDLE h = idle_.back();
    idle_.pop_back();
    ++leased_;
    return Lease{this, h, generation_};
  }
  if (!idle_.empty()) {
    // Replace the coldest idle session: the warm end holds the ones most
    // recently proven to work.
    replaced = idle_.front();
    idle_.erase(idle_.begin());
  } else {
    ++open_;  // reserve the place
  }
  // Outside the lock: opening and closing talk to the HSM. Open before closing
  // the replaced session: closing the last session of a token logs it out.
  const std::uint64_t generation = generation_;
  lock.unlock();
  Result<CK_SESSION_HANDLE> opened = hooks_.open();
  if (opened && replaced != CK_INVALID_HANDLE) hooks_.close(replaced);
  lock.lock();
  if (opened && generation != generation_) {
    // invalidate() ran while we were opening: the new session may belong to the
    // state being torn down. Give up this attempt; the caller's error says why.
    --open_;
    lock.unlock();
    hooks_.close(*opened);
    available_.notify_one();
    return make_error(ErrorName::InternalException,
                      "HSM '" + name_ + "' is being re-initialized; retry later",
                      "session pool invalidated while a session was being opened");
  }
  if (!opened) {
    if (replaced != CK_INVALID_HANDLE) {
      idle_.insert(idle_.begin(), replaced);  // it may still be good
    } else {
      --open_;
    }
    available_.notify_one();
    return std::move(opened).error();
  }
  ++leased_;
  return Lease{this, *opened, generation_};
}

Result<void> SessionPool::fill() {
  std::vector<Lease> leases;
  while (open_count() < capacity_) {
    Result<Lease> l = lease();
    if (!l) return std::move(l).error();
    leases.push_back(std::move(*l));
  }
  return {};  // the leases go back to the pool here
}

void SessionPool::invalidate() {
  std::vector<CK_SESSION_HANDLE> idle;
  {
    std::lock_guard lock(mutex_);
    ++generation_;
    idle.swap(idle_);
    open_ -= idle.size();
  }
  for (CK_SESSION_HANDLE h : idle) hooks_.close(h);  // outside the lock: talks to the HSM
  available_.notify_all();
}

void SessionPool::give_back(CK_SESSION_HANDLE handle, std::uint64_t generation,
                            bool discard) noexcept {
  {
    std::lock_guard lock(mutex_);
    --leased_;
    discard = discard || generation != generation_;
    if (discard) {
      --open_;
    } else {
      idle_.push_back(handle);
    }
  }
  if (discard) hooks_.close(handle);  // outside the lock: may talk to the HSM
  available_.notify_one();
}

std::size_t SessionPool::in_use() const {
  std::lock_guard lock(mutex_);
  return leased_;
}

std::size_t SessionPool::open_count() const {
  std::lock_guard lock(mutex_);
  return open_;
}

}  // namespace xks::hsm
