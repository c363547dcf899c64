#include "signing_key.hpp"

#include <cstring>

#include "xks/core/secure.hpp"

namespace xks::auth::detail {
namespace {

void wipe(crypto::Sha256& k) noexcept { secure_wipe(k.data(), k.size()); }

// Length-prefixed so that no two input tuples share a fingerprint.
std::optional<crypto::Sha256> fingerprint(std::string_view secret, std::string_view date,
                                          std::string_view region, std::string_view service) {
  const std::array<std::uint64_t, 4> sizes{secret.size(), date.size(), region.size(),
                                           service.size()};
  const ByteView size_bytes{reinterpret_cast<const std::uint8_t*>(sizes.data()),  // NOLINT
                            sizeof(sizes)};
  return crypto::sha256(
      {size_bytes, as_bytes(secret), as_bytes(date), as_bytes(region), as_bytes(service)});
}

}  // namespace

std::optional<SigningKey> derive_signing_key(std::string_view secret, std::string_view date,
                                             std::string_view region, std::string_view service) {
  SecureBytes k_secret;
  k_secret.reserve(4 + secret.size());
  for (const char c : std::string_view{"AWS4"}) k_secret.push_back(static_cast<std::uint8_t>(c));
  for (const char c : secret) k_secret.push_back(static_cast<std::uint8_t>(c));

  auto k_date = crypto::hmac_sha256(k_secret, as_bytes(date));
  if (!k_date) return std::nullopt;
  auto k_region = crypto::hmac_sha256(*k_date, as_bytes(region));
  wipe(*k_date);
  if (!k_region) return std::nullopt;
  auto k_service = crypto::hmac_sha256(*k_region, as_bytes(service));
  wipe(*k_region);
  if (!k_service) return std::nullopt;
  auto k_signing = crypto::hmac_sha256(*k_service, as_bytes("aws4_request"));
  wipe(*k_service);
  return k_signing;
}

SigningKeyCache::~SigningKeyCache() {
  for (auto& e : entries_) wipe(e.key);
}

std::size_t SigningKeyCache::size() const {
  const std::lock_guard lock(mutex_);
  return entries_.size();
}

std::optional<SigningKey> SigningKeyCache::get(std::string_view secret, std::string_view date,
                                               std::string_view region,
                                               std::string_view service) {
  const auto fp = fingerprint(secret, date, region, service);
  if (!fp) return std::nullopt;
  {
    const std::lock_guard lock(mutex_);
    for (const auto& e : entries_) {
      if (std::memcmp(e.fingerprint.data(), fp->data(), fp->size()) == 0) return e.key;
    }
  }
  // Derive outside the lock: two threads may both derive the same key on a
  // miss, which is harmless and keeps the lock short.
  auto key = derive_signing_key(secret, date, region, service);
  if (!key) return std::nullopt;
  const std::lock_guard lock(mutex_);
  for (const auto& e : entries_) {
    if (std::memcmp(e.fingerprint.data(), fp->data(), fp->size()) == 0) return key;
  }
  if (entries_.size() < kCapacity) {
    entries_.push_back(Entry{*fp, *key});
  } else {
    Entry& victim = entries_[next_victim_];
    wipe(victim.key);
    victim = Entry{*fp, *key};
    next_victim_ = (next_victim_ + 1) % kCapacity;
  }
  return key;
}

}  // namespace xks::auth::detail
