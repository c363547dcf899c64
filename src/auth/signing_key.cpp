#include "signing_key.hpp"

#include <array>
#include <cstring>

#include "xks/core/secure.hpp"

namespace xks::auth::detail {
namespace {

constexpr std::size_t kBlockSize = 64;  // SHA-256

struct MdFree {
  void operator()(EVP_MD* p) const noexcept { EVP_MD_free(p); }
};

void wipe(crypto::Sha256& k) noexcept { secure_wipe(k.data(), k.size()); }

bool update(EVP_MD_CTX* ctx, const void* data, std::size_t size) noexcept {
  return size == 0 || EVP_DigestUpdate(ctx, data, size) == 1;
}

bool finish(EVP_MD_CTX* ctx, crypto::Sha256& out) noexcept {
  unsigned int len = 0;
  return EVP_DigestFinal_ex(ctx, out.data(), &len) == 1 && len == out.size();
}

// A context holding SHA-256 after the one block (key ^ pad).
MdCtx pad_state(ByteView key, std::uint8_t pad) noexcept {
  const EVP_MD* md = sha256_md();
  if (md == nullptr) return {};
  MdCtx ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1) return {};
  std::array<std::uint8_t, kBlockSize> block{};
  for (std::size_t i = 0; i < block.size(); ++i) {
    block[i] = static_cast<std::uint8_t>((i < key.size() ? key[i] : 0) ^ pad);
  }
  const bool ok = EVP_DigestUpdate(ctx.get(), block.data(), block.size()) == 1;
  secure_wipe(block.data(), block.size());
  if (!ok) return {};
  return ctx;
}

}  // namespace

const EVP_MD* sha256_md() noexcept {
  // Function-local static: initialised once, thread-safely, on first use.
  static const std::unique_ptr<EVP_MD, MdFree> md(EVP_MD_fetch(nullptr, "SHA2-256", nullptr));
  return md.get();
}

bool sha256(EVP_MD_CTX* ctx, std::string_view data, crypto::Sha256& out) noexcept {
  const EVP_MD* md = sha256_md();
  return md != nullptr && EVP_DigestInit_ex2(ctx, md, nullptr) == 1 &&
         update(ctx, data.data(), data.size()) && finish(ctx, out);
}

std::optional<HmacSha256Key> HmacSha256Key::make(ByteView key) noexcept {
  if (key.size() > kBlockSize) return std::nullopt;
  MdCtx inner = pad_state(key, 0x36);
  MdCtx outer = pad_state(key, 0x5c);
  if (!inner || !outer) return std::nullopt;
  return HmacSha256Key(std::move(inner), std::move(outer));
}

bool HmacSha256Key::mac(EVP_MD_CTX* work, std::string_view data,
                        crypto::Sha256& out) const noexcept {
  crypto::Sha256 inner_digest{};
  const bool ok = EVP_MD_CTX_copy_ex(work, inner_.get()) == 1 &&
                  update(work, data.data(), data.size()) && finish(work, inner_digest) &&
                  EVP_MD_CTX_copy_ex(work, outer_.get()) == 1 &&
                  update(work, inner_digest.data(), inner_digest.size()) && finish(work, out);
  wipe(inner_digest);
  // Keyed state, or the MAC itself, must not wait in work for its next use.
  EVP_MD_CTX_reset(work);
  return ok;
}

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

const HmacSha256Key* SigningKeyCache::get(EVP_MD_CTX* work, std::string_view secret,
                                          std::string_view date, std::string_view region,
                                          std::string_view service) {
  crypto::Sha256 fp{};
  if (!sha256(work, secret, fp)) return nullptr;
  const auto matches = [&](const Entry& e) {
    return std::memcmp(e.secret_fingerprint.data(), fp.data(), fp.size()) == 0 && e.date == date &&
           e.region == region && e.service == service;
  };
  for (const auto& e : entries_) {
    if (matches(e)) return &e.key;
  }
  auto raw = derive_signing_key(secret, date, region, service);
  if (!raw) return nullptr;
  auto key = HmacSha256Key::make(*raw);
  wipe(*raw);
  if (!key) return nullptr;
  Entry entry{fp, std::string(date), std::string(region), std::string(service), std::move(*key)};
  if (entries_.size() < kCapacity) {
    entries_.push_back(std::move(entry));
    return &entries_.back().key;
  }
  // Move-assigning frees (and so wipes) the victim's states.
  Entry& victim = entries_[next_victim_];
  victim = std::move(entry);
  next_victim_ = (next_victim_ + 1) % kCapacity;
  return &victim.key;
}

}  // namespace xks::auth::detail
