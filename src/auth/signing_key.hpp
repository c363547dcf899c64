// SigV4 signing-key derivation and a small cache of derived keys (private to
// the auth module).
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string_view>
#include <vector>

#include "xks/crypto/digest.hpp"

namespace xks::auth::detail {

using SigningKey = crypto::Sha256;

// HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request".
// Intermediate keys are wiped. std::nullopt only if OpenSSL fails.
std::optional<SigningKey> derive_signing_key(std::string_view secret, std::string_view date,
                                             std::string_view region, std::string_view service);

// Derived keys by (secret, date, region, service). The derivation is four HMACs
// and the inputs change once a day per region, so nearly every request hits.
// Entries are found by a SHA-256 fingerprint of the inputs, so the cache holds
// no copy of any secret; a rotated secret simply gets a new fingerprint. The
// cache is bounded (a client cannot grow it by inventing regions) and wipes a
// key when it evicts it.
class SigningKeyCache {
 public:
  static constexpr std::size_t kCapacity = 32;

  // Reserved up front: a reallocation would leave unwiped copies of keys behind.
  SigningKeyCache() { entries_.reserve(kCapacity); }
  ~SigningKeyCache();
  SigningKeyCache(const SigningKeyCache&) = delete;
  SigningKeyCache& operator=(const SigningKeyCache&) = delete;

  std::optional<SigningKey> get(std::string_view secret, std::string_view date,
                                std::string_view region, std::string_view service);

  std::size_t size() const;

 private:
  struct Entry {
    crypto::Sha256 fingerprint{};
    SigningKey key{};
  };
  mutable std::mutex mutex_;
  std::vector<Entry> entries_;  // at most kCapacity
  std::size_t next_victim_ = 0;  // FIFO replacement: cheap, and fine for a tiny working set
};

}  // namespace xks::auth::detail
