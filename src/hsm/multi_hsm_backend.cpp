#include "xks/hsm/multi_hsm_backend.hpp"

#include <algorithm>
#include <cassert>
#include <stdexcept>

namespace xks::hsm {

MultiHsmBackend::MultiHsmBackend(std::vector<std::unique_ptr<KeyBackend>> members) {
  // Startup only (see header): an empty fleet is a programming error.
  if (members.empty()) throw std::invalid_argument("MultiHsmBackend needs at least one HSM");
  for (auto& b : members) {
    auto m = std::make_unique<Member>();
    m->backend = std::move(b);
    members_.push_back(std::move(m));
  }
}

Result<std::unique_ptr<MultiHsmBackend>> MultiHsmBackend::open(
    const std::vector<config::HsmConfig>& hsms, const Pkcs11Backend::Options& options) {
  if (hsms.empty()) {
    return make_error(ErrorName::InternalException, "No HSM configured (hsms is empty)");
  }
  std::vector<std::unique_ptr<KeyBackend>> members;
  for (const auto& c : hsms) {
    Result<std::unique_ptr<Pkcs11Backend>> b = Pkcs11Backend::open(c, options);
    if (!b) return std::move(b).error();
    members.push_back(std::move(*b));
  }
  return std::make_unique<MultiHsmBackend>(std::move(members));
}

Result<std::unique_ptr<MultiHsmBackend>> MultiHsmBackend::open_fleet(
    const std::vector<config::HsmConfig>& hsms, const Pkcs11Backend::Options& options) {
  if (hsms.empty()) {
    return make_error(ErrorName::InternalException, "No HSM configured (hsms is empty)");
  }
  DeferredHsm::Opener opener = [options](const config::HsmConfig& c,
                                         bool& transient) -> Result<std::unique_ptr<KeyBackend>> {
    Result<std::unique_ptr<Pkcs11Backend>> b = Pkcs11Backend::open(c, options, transient);
    if (!b) return std::move(b).error();
    return std::unique_ptr<KeyBackend>(std::move(*b));
  };
  std::vector<std::unique_ptr<KeyBackend>> members;
  for (const auto& c : hsms) {
    bool transient = false;
    Result<std::unique_ptr<KeyBackend>> b = opener(c, transient);
    if (b) {
      members.push_back(std::move(*b));
      continue;
    }
    if (!transient) return std::move(b).error();
    auto deferred = std::make_unique<DeferredHsm>(
        c, b.error(), opener, options.on_event, options.reinit_backoff_initial,
        options.reinit_backoff_max,
        options.clock != nullptr ? *options.clock : core::steady_clock());
    if (options.on_event) {
      HsmEvent e;
      e.kind = HsmEvent::Kind::OpenDeferred;
      e.hsm = c.name;
      e.detail = b.error().message + (b.error().detail.empty() ? "" : "; " + b.error().detail) +
                 "; starting without it, retried from the health check";
      e.retry_in = options.reinit_backoff_initial;
      options.on_event(e);
    }
    members.push_back(std::move(deferred));
  }
  return std::make_unique<MultiHsmBackend>(std::move(members));
}

// ---------------------------------------------------------------- DeferredHsm

DeferredHsm::DeferredHsm(config::HsmConfig config, Error first_error, Opener opener,
                         HsmEventHook on_event, std::chrono::milliseconds backoff_initial,
                         std::chrono::milliseconds backoff_max, const core::Clock& clock)
    : name_(config.name),
      opener_(std::move(opener)),
      on_event_(std::move(on_event)),
      config_(std::move(config)),
      last_error_(std::move(first_error)),
      backoff_(clock, backoff_initial, backoff_max) {
  (void)backoff_.failed();  // the failed open: the first retry is due backoff_initial from now
}

std::shared_ptr<KeyBackend> DeferredHsm::real() const {
  std::lock_guard lock(mutex_);
  return real_;
}

bool DeferredHsm::is_open() const { return real() != nullptr; }

Error DeferredHsm::not_open_error() const {
  std::lock_guard lock(mutex_);
  return make_error(ErrorName::InternalException,
                    "HSM '" + name_ + "' is not available: it failed to open (" +
                        last_error_.message + ")" + (backoff_.gave_up() ? "" : "; retrying"),
                    last_error_.detail);
}

Result<KeyAttributes> DeferredHsm::key_attributes(std::string_view label) {
  if (auto r = real()) return r->key_attributes(label);
  return not_open_error();
}

Result<GcmCiphertext> DeferredHsm::encrypt(std::string_view label, ByteView plaintext,
                                           ByteView aad) {
  if (auto r = real()) return r->encrypt(label, plaintext, aad);
  return not_open_error();
}

Result<SecureBytes> DeferredHsm::decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                                         ByteView tag, ByteView aad) {
  if (auto r = real()) return r->decrypt(label, ciphertext, iv, tag, aad);
  return not_open_error();
}

void DeferredHsm::try_open() {
  std::unique_lock attempt(open_mutex_, std::try_to_lock);
  if (!attempt.owns_lock()) return;
  config::HsmConfig config;
  {
    std::lock_guard lock(mutex_);
    if (real_ || !backoff_.due()) return;
    config = config_;
  }
  bool transient = false;
  Result<std::unique_ptr<KeyBackend>> b = opener_(config, transient);
  HsmEvent e;
  e.hsm = name_;
  {
    std::lock_guard lock(mutex_);
    if (b) {
      real_ = std::shared_ptr<KeyBackend>(std::move(*b));
      e.kind = HsmEvent::Kind::Opened;
      e.detail = "HSM '" + name_ + "' opened after starting without it";
    } else {
      last_error_ = b.error();
      const auto retry_in = backoff_.failed();
      if (!transient) backoff_.give_up();
      e.kind = HsmEvent::Kind::ReinitFailed;
      e.retry_in = transient ? retry_in : std::chrono::milliseconds{0};
      e.detail = "opening HSM '" + name_ + "' failed again: " + last_error_.message +
                 (last_error_.detail.empty() ? "" : "; " + last_error_.detail) +
                 (transient ? "" : "; a configuration problem: not retried until a restart");
    }
  }
  if (on_event_) on_event_(e);
}

std::vector<SessionCounts> DeferredHsm::session_counts() const {
  if (auto r = real()) return r->session_counts();
  return {SessionCounts{name_, 0, 0}};
}

std::vector<EkmHealth> DeferredHsm::check_health() {
  if (!real()) try_open();
  if (auto r = real()) return r->check_health();
  EkmHealth h;
  std::lock_guard lock(mutex_);
  h.id = config_.token_label ? *config_.token_label
                             : "slot " + std::to_string(config_.slot_id.value_or(0));
  h.id += " (" + name_ + ", not open)";
  h.model = "unknown (not open)";
  h.vendor = "unknown";
  h.status = HealthStatus::Unavailable;
  h.detail = "HSM '" + name_ + "' failed to open: " + last_error_.message +
             (last_error_.detail.empty() ? "" : "; " + last_error_.detail) +
             (backoff_.gave_up()
                  ? "; not retried (configuration)"
                  : "; next attempt in " + std::to_string(backoff_.remaining().count()) + " ms");
  return {h};
}

// ---------------------------------------------------------------- MultiHsmBackend

bool MultiHsmBackend::is_hsm_failure(const Error& e) noexcept {
  return e.name == ErrorName::InternalException ||
         e.name == ErrorName::DependencyTimeoutException ||
         e.name == ErrorName::ThrottlingException;
}

bool MultiHsmBackend::is_marked_failed(std::size_t index) const {
  return members_.at(index)->failed.load();
}

MultiHsmBackend::Member* MultiHsmBackend::pick(const Member* exclude) {
  // Healthy members first, fewest calls in flight, ties to configuration order
  // (so a primary HSM listed first takes the load when idle). When every
  // member is marked failed, still try one: a mark can be stale, and an error
  // from a real attempt tells the caller more than a refusal.
  Member* best = nullptr;
  for (bool want_healthy : {true, false}) {
    for (auto& m : members_) {
      if (m.get() == exclude || m->failed.load() == want_healthy) continue;
      if (best == nullptr || m->outstanding.load() < best->outstanding.load()) best = m.get();
    }
    if (best != nullptr) return best;
  }
  return nullptr;
}

template <class Call>
auto MultiHsmBackend::dispatch(Call&& call) -> decltype(call(std::declval<KeyBackend&>())) {
  if (members_.size() == 1) return call(*members_.front()->backend);

  auto attempt = [&](Member& m) {
    m.outstanding.fetch_add(1);
    auto r = call(*m.backend);
    m.outstanding.fetch_sub(1);
    if (r) {
      m.failed.store(false);
    } else if (is_hsm_failure(r.error()) && r.error().name != ErrorName::ThrottlingException) {
      m.failed.store(true);  // busy is not broken: only real failures mark
    }
    return r;
  };

  Member* first = pick(nullptr);
  assert(first != nullptr);
  auto r = attempt(*first);
  if (r || !is_hsm_failure(r.error())) return r;
  Member* second = pick(first);
  if (second == nullptr) return r;
  return attempt(*second);
}

Result<KeyAttributes> MultiHsmBackend::key_attributes(std::string_view label) {
  return dispatch([&](KeyBackend& b) { return b.key_attributes(label); });
}

Result<GcmCiphertext> MultiHsmBackend::encrypt(std::string_view label, ByteView plaintext,
                                               ByteView aad) {
  return dispatch([&](KeyBackend& b) { return b.encrypt(label, plaintext, aad); });
}

Result<SecureBytes> MultiHsmBackend::decrypt(std::string_view label, ByteView ciphertext,
                                             ByteView iv, ByteView tag, ByteView aad) {
  return dispatch([&](KeyBackend& b) { return b.decrypt(label, ciphertext, iv, tag, aad); });
}

std::vector<SessionCounts> MultiHsmBackend::session_counts() const {
  std::vector<SessionCounts> out;
  for (const auto& m : members_) {
    auto counts = m->backend->session_counts();
    out.insert(out.end(), std::make_move_iterator(counts.begin()),
               std::make_move_iterator(counts.end()));
  }
  return out;
}

std::vector<EkmHealth> MultiHsmBackend::check_health() {
  std::vector<EkmHealth> out;
  for (auto& m : members_) {
    std::vector<EkmHealth> h = m->backend->check_health();
    bool unavailable = h.empty();
    for (const auto& e : h) unavailable = unavailable || e.status == HealthStatus::Unavailable;
    if (members_.size() > 1) m->failed.store(unavailable);
    out.insert(out.end(), std::make_move_iterator(h.begin()), std::make_move_iterator(h.end()));
  }
  return out;
}

}  // namespace xks::hsm
