#include "xks/hsm/multi_hsm_backend.hpp"

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
