#include "xks/api/service.hpp"

#include <openssl/crypto.h>

#include <string>
#include <utility>

#include "xks/api/version.hpp"
#include "xks/crypto/aad.hpp"
#include "xks/crypto/cdiv.hpp"

namespace xks::api {
namespace {

// The config loader defaults label to id; tolerate an entry built without it.
std::string_view label_of(const config::KeyEntry& key) noexcept {
  return key.label.empty() ? std::string_view(key.id) : std::string_view(key.label);
}

Error disabled(const config::KeyEntry& key) {
  return make_error(ErrorName::InvalidStateException,
                    "external key '" + key.id + "' is disabled in the XKS proxy configuration",
                    "key entry '" + key.id + "' has enabled: false");
}

Error not_ours(std::string_view why) {
  return make_error(ErrorName::InvalidCiphertextException,
                    "ciphertextMetadata is missing or was not written by this proxy",
                    std::string(why));
}

ByteView view(const std::optional<Bytes>& b) noexcept {
  return b ? ByteView(*b) : ByteView();
}

// The AAD handed to the HSM for a given ciphertextMetadata layout version.
std::optional<Bytes> aad_for_version(unsigned version, ByteView aad, ByteView metadata) {
  switch (version) {
    case 1: return crypto::frame_aad(aad, metadata);
    default: return std::nullopt;
  }
}

}  // namespace

Result<KeyMetadataResponse> XksService::get_key_metadata(const config::KeyEntry& key) {
  auto attrs = backend_.key_attributes(label_of(key));
  if (!attrs) return std::move(attrs).error();
  if (!attrs->is_aes_256()) {
    return make_error(
        ErrorName::InvalidStateException,
        "external key '" + key.id + "' is not an AES-256 key (HSM key type " +
            (attrs->is_aes ? "AES" : "not AES") + ", " + std::to_string(attrs->key_bytes) +
            " bytes); XKS API v1 supports only AES_256",
        "HSM key label '" + std::string(label_of(key)) + "' CKA_ID " + attrs->id_hex);
  }
  KeyMetadataResponse r;
  r.key_usage = attrs->key_usage();
  if (r.key_usage.size() > kMaxKeyUsages) r.key_usage.resize(kMaxKeyUsages);
  r.enabled = key.enabled;
  return r;
}

Result<EncryptResponse> XksService::encrypt(const config::KeyEntry& key,
                                            const EncryptRequest& request) {
  if (!key.enabled) return disabled(key);
  const std::string_view label = label_of(key);

  EncryptResponse r;
  r.ciphertext_metadata = crypto::current_ciphertext_metadata();
  const ByteView aad = view(request.aad);
  const Bytes framed = crypto::frame_aad(aad, r.ciphertext_metadata);

  // Whether the key allows CKA_ENCRYPT is left to the HSM (the backend maps
  // CKR_KEY_FUNCTION_NOT_PERMITTED to InvalidKeyUsageException): checking cached
  // attributes here would cost an extra HSM round trip or go stale.
  auto ct = backend_.encrypt(label, request.plaintext, framed);
  if (!ct) return std::move(ct).error();
  if (ct->ciphertext.size() != request.plaintext.size() || !hsm::is_gcm_iv_size(ct->iv.size()) ||
      ct->tag.size() != hsm::kGcmTagBytes) {
    return make_error(ErrorName::InternalException, "the key manager returned a malformed result",
                      "HSM key label '" + std::string(label) + "': ciphertext " +
                          std::to_string(ct->ciphertext.size()) + " bytes for " +
                          std::to_string(request.plaintext.size()) + " of plaintext, IV " +
                          std::to_string(ct->iv.size()) + ", tag " +
                          std::to_string(ct->tag.size()));
  }

  if (request.want_cdiv) {
    // Appendix C: a CDIV promises KMS that this exact ciphertext decrypts to the
    // plaintext, so prove it with the HSM before making the promise.
    auto check = backend_.decrypt(label, ct->ciphertext, ct->iv, ct->tag, framed);
    if (!check) {
      Error e = std::move(check).error();
      if (e.name == ErrorName::InvalidKeyUsageException) {
        e.detail = "CDIV round trip: " + e.message + "; " + e.detail;
        e.message =
            "ciphertextDataIntegrityValueAlgorithm needs a key that also allows DECRYPT: the "
            "proxy decrypts the new ciphertext to verify it before returning a CDIV";
        return e;
      }
      if (e.name == ErrorName::InvalidCiphertextException) {
        return make_error(ErrorName::InternalException,
                          "the key manager produced a ciphertext that does not decrypt",
                          "HSM key label '" + std::string(label) + "': CDIV round trip: " +
                              e.detail);
      }
      return e;
    }
    if (check->size() != request.plaintext.size() ||
        CRYPTO_memcmp(check->data(), request.plaintext.data(), check->size()) != 0) {
      return make_error(ErrorName::InternalException,
                        "the key manager produced a ciphertext that does not round-trip",
                        "HSM key label '" + std::string(label) +
                            "': CDIV round trip returned different plaintext");
    }
    r.cdiv = crypto::compute_cdiv(aad, r.ciphertext_metadata, ct->iv, ct->ciphertext, ct->tag);
    if (r.cdiv->empty()) {
      return make_error(ErrorName::InternalException,
                        "the ciphertextDataIntegrityValue could not be computed",
                        "compute_cdiv failed (OpenSSL SHA-256)");
    }
  }

  r.ciphertext = std::move(ct->ciphertext);
  r.iv = std::move(ct->iv);
  r.tag = std::move(ct->tag);
  return r;
}

Result<DecryptResponse> XksService::decrypt(const config::KeyEntry& key,
                                            const DecryptRequest& request) {
  if (!key.enabled) return disabled(key);
  if (!request.ciphertext_metadata) return not_ours("ciphertextMetadata absent");
  const ByteView metadata = *request.ciphertext_metadata;
  const auto version = crypto::ciphertext_metadata_version(metadata);
  if (!version) return not_ours("ciphertextMetadata not recognised");
  auto framed = aad_for_version(*version, view(request.aad), metadata);
  if (!framed) {
    // A newer proxy wrote it; say so, since rolling back is the likely cause.
    return make_error(ErrorName::InvalidCiphertextException,
                      "ciphertextMetadata names AAD layout version " + std::to_string(*version) +
                          ", which this proxy version cannot decrypt");
  }
  auto pt = backend_.decrypt(label_of(key), request.ciphertext, request.iv, request.tag, *framed);
  if (!pt) return std::move(pt).error();
  if (pt->size() != request.ciphertext.size()) {
    return make_error(ErrorName::InternalException, "the key manager returned a malformed result",
                      "HSM key label '" + std::string(label_of(key)) + "': plaintext " +
                          std::to_string(pt->size()) + " bytes for " +
                          std::to_string(request.ciphertext.size()) + " of ciphertext");
  }
  return DecryptResponse{std::move(*pt)};
}

HealthResponse make_health_response(const std::vector<hsm::EkmHealth>& ekms,
                                    unsigned fleet_size) {
  HealthResponse r;
  r.fleet_size = fleet_size == 0 ? 1 : fleet_size;
  r.proxy_vendor = std::string(kProxyVendor);
  r.proxy_model = std::string(kProxyModel);
  for (const auto& e : ekms) {
    if (r.ekm_fleet.size() == kMaxEkmFleetEntries) break;
    r.ekm_fleet.push_back(EkmFleetEntry{e.id, e.model, e.status});
  }
  if (r.ekm_fleet.empty()) {
    r.ekm_fleet.push_back(
        EkmFleetEntry{"none", "no key manager configured", hsm::HealthStatus::Unavailable});
  }
  r.ekm_vendor = !ekms.empty() && !ekms.front().vendor.empty() ? ekms.front().vendor : "unknown";
  return r;
}

}  // namespace xks::api
