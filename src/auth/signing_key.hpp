// SigV4 signing-key derivation, HMAC-SHA-256 under a key whose pads are hashed
// once, and a small per-thread cache of them (private to the auth module).
#pragma once

#include <openssl/evp.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "xks/crypto/digest.hpp"

namespace xks::auth::detail {

using SigningKey = crypto::Sha256;

// The SHA2-256 EVP_MD, fetched once per process (an implicit fetch per call
// takes a global lock and a name lookup); nullptr only if OpenSSL fails.
const EVP_MD* sha256_md() noexcept;

struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
// EVP_MD_CTX_free wipes the digest state (the provider's freectx is
// OPENSSL_clear_free), so a context may hold key-dependent state.
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxFree>;

// SHA-256 of data on a caller-owned context, reused from hash to hash.
bool sha256(EVP_MD_CTX* ctx, std::string_view data, crypto::Sha256& out) noexcept;

// HMAC chain "AWS4"+secret -> date -> region -> service -> "aws4_request".
// Intermediate keys are wiped. std::nullopt only if OpenSSL fails.
std::optional<SigningKey> derive_signing_key(std::string_view secret, std::string_view date,
                                             std::string_view region, std::string_view service);

// HMAC-SHA-256 (RFC 2104) under one fixed key of at most one SHA-256 block,
// with the key's inner and outer pads hashed once, up front: a MAC then costs
// two context copies and the hashing of the data and of the inner digest,
// instead of an EVP_MAC_CTX duplicate and a fresh key schedule (two more
// SHA-256 blocks) every time. The two saved states are as secret as the key;
// they live in OpenSSL contexts that are wiped when freed.
class HmacSha256Key {
 public:
  // std::nullopt if OpenSSL fails or the key is longer than 64 bytes.
  static std::optional<HmacSha256Key> make(ByteView key) noexcept;

  // HMAC of data into out, using work (any context; it is left reset).
  // False only if OpenSSL fails. Safe to call from several threads at once on
  // one key, each with its own work context: the saved states are only read.
  bool mac(EVP_MD_CTX* work, std::string_view data, crypto::Sha256& out) const noexcept;

 private:
  HmacSha256Key(MdCtx inner, MdCtx outer) noexcept
      : inner_(std::move(inner)), outer_(std::move(outer)) {}
  MdCtx inner_, outer_;  // SHA-256 after (key ^ ipad) and after (key ^ opad)
};

// Prepared signing keys by (secret, date, region, service). The derivation is
// four HMACs and the inputs change once a day per region, so nearly every
// request hits. Entries hold the SHA-256 of the secret rather than the secret,
// so the cache keeps no copy of any secret and a rotated secret simply misses;
// the scope parts, which are not secret, are compared as they are (hashing
// the secret alone is one SHA-256 block for any secret up to 55 bytes, the
// whole tuple was two). Bounded (a client cannot grow it by inventing
// regions); an evicted key's states are wiped as they are freed.
//
// Not thread-safe: the verifier keeps one per thread, which costs each I/O
// thread one derivation per (key, day, region) and saves every request a
// lock on a cache line all the I/O threads would otherwise share.
class SigningKeyCache {
 public:
  static constexpr std::size_t kCapacity = 32;

  SigningKeyCache() { entries_.reserve(kCapacity); }
  SigningKeyCache(const SigningKeyCache&) = delete;
  SigningKeyCache& operator=(const SigningKeyCache&) = delete;

  // The prepared key, derived on a miss; nullptr if OpenSSL fails. The pointer
  // stays valid until the next get() on this cache. work is a scratch context.
  const HmacSha256Key* get(EVP_MD_CTX* work, std::string_view secret, std::string_view date,
                           std::string_view region, std::string_view service);

  std::size_t size() const noexcept { return entries_.size(); }

 private:
  struct Entry {
    crypto::Sha256 secret_fingerprint{};
    std::string date, region, service;
    HmacSha256Key key;
  };
  std::vector<Entry> entries_;   // at most kCapacity
  std::size_t next_victim_ = 0;  // FIFO replacement: cheap, and fine for a tiny working set
};

}  // namespace xks::auth::detail
