#include "xks/crypto/digest.hpp"

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include <memory>

namespace xks::crypto {
namespace {

struct MdFree {
  void operator()(EVP_MD* p) const noexcept { EVP_MD_free(p); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* p) const noexcept { EVP_MD_CTX_free(p); }
};
struct MacFree {
  void operator()(EVP_MAC* p) const noexcept { EVP_MAC_free(p); }
};
struct MacCtxFree {
  void operator()(EVP_MAC_CTX* p) const noexcept { EVP_MAC_CTX_free(p); }
};

const EVP_MD* sha256_md() noexcept {
  // Function-local static: initialised once, thread-safely, on first use.
  static const std::unique_ptr<EVP_MD, MdFree> md(EVP_MD_fetch(nullptr, "SHA2-256", nullptr));
  return md.get();
}

// An HMAC context with the digest already set and no key. Each call duplicates
// it (cheap, no provider lookup) instead of fetching "HMAC" and "SHA256" by name
// again; the template itself is only ever read, so sharing it across threads is
// safe.
const EVP_MAC_CTX* hmac_template() noexcept {
  static const std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx = []() noexcept {
    const std::unique_ptr<EVP_MAC, MacFree> mac(EVP_MAC_fetch(nullptr, "HMAC", nullptr));
    if (!mac) return std::unique_ptr<EVP_MAC_CTX, MacCtxFree>{};
    std::unique_ptr<EVP_MAC_CTX, MacCtxFree> c(EVP_MAC_CTX_new(mac.get()));
    if (!c) return c;
    static char digest_name[] = "SHA2-256";
    const OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest_name, 0),
        OSSL_PARAM_construct_end(),
    };
    if (EVP_MAC_CTX_set_params(c.get(), params) != 1) c.reset();
    return c;
  }();
  return ctx.get();
}

}  // namespace

std::optional<Sha256> sha256(ByteView data) noexcept {
  const EVP_MD* md = sha256_md();
  if (md == nullptr) return std::nullopt;
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_Digest(data.data(), data.size(), out.data(), &len, md, nullptr) != 1 ||
      len != out.size()) {
    return std::nullopt;
  }
  return out;
}

std::optional<Sha256> sha256(std::initializer_list<ByteView> parts) noexcept {
  const EVP_MD* md = sha256_md();
  if (md == nullptr) return std::nullopt;
  const std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!ctx || EVP_DigestInit_ex2(ctx.get(), md, nullptr) != 1) return std::nullopt;
  for (const ByteView part : parts) {
    if (!part.empty() && EVP_DigestUpdate(ctx.get(), part.data(), part.size()) != 1) {
      return std::nullopt;
    }
  }
  Sha256 out{};
  unsigned int len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), out.data(), &len) != 1 || len != out.size()) {
    return std::nullopt;
  }
  return out;
}

std::optional<Sha256> hmac_sha256(ByteView key, ByteView data) noexcept {
  const EVP_MAC_CTX* tmpl = hmac_template();
  if (tmpl == nullptr) return std::nullopt;
  // EVP_MAC_CTX_dup takes a non-const pointer but does not modify its source.
  const std::unique_ptr<EVP_MAC_CTX, MacCtxFree> ctx(EVP_MAC_CTX_dup(
      const_cast<EVP_MAC_CTX*>(tmpl)));  // NOLINT(cppcoreguidelines-pro-type-const-cast)
  if (!ctx) return std::nullopt;
  // A null key means "keep the previous key" to OpenSSL, and there is none:
  // give an empty key a valid pointer.
  static const unsigned char kNoKey = 0;
  const unsigned char* key_ptr = key.empty() ? &kNoKey : key.data();
  if (EVP_MAC_init(ctx.get(), key_ptr, key.size(), nullptr) != 1) return std::nullopt;
  if (!data.empty() && EVP_MAC_update(ctx.get(), data.data(), data.size()) != 1) {
    return std::nullopt;
  }
  Sha256 out{};
  std::size_t len = 0;
  if (EVP_MAC_final(ctx.get(), out.data(), &len, out.size()) != 1 || len != out.size()) {
    return std::nullopt;
  }
  return out;
}

}  // namespace xks::crypto
