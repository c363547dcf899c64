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

ByteView view(const std::optional<Bytes>& b) noexcept { return b ? ByteView(*b) : ByteView(); }

// keySpec for GetKeyMetadata: AES_256 for the keys XKS API v1 supports,
// AES_<bits> for another AES length, NOT_AES for any other key type.
std::string key_spec_of(const hsm::KeyAttributes& a) {
  if (a.is_aes_256()) return "AES_256";
  if (a.is_aes) return "AES_" + std::to_string(a.key_bytes * 8);
  return "NOT_AES";
}

// A version of a key as the operations see it. An entry built without
// versions (unit tests) has version 1 = its label.
struct VersionView {
  std::uint32_t number = 1;
  std::string_view label;
  bool enabled = true;
};

std::optional<VersionView> find_version(const config::KeyEntry& key, std::uint32_t n) {
  if (key.versions.empty()) {
    if (n != 1) return std::nullopt;
    return VersionView{1, label_of(key), true};
  }
  const config::KeyVersion* v = key.version(n);
  if (v == nullptr) return std::nullopt;
  return VersionView{v->number, v->label, v->enabled};
}

// The loader guarantees that `current` names an enabled version.
VersionView current_version(const config::KeyEntry& key) {
  if (auto v = find_version(key, key.current)) return *v;
  return VersionView{key.current, label_of(key), true};
}

void report(KeyVersionUse* use, std::uint32_t version) noexcept {
  if (use != nullptr) use->version.store(version, std::memory_order_relaxed);
}

Error retired(const config::KeyEntry& key, std::uint32_t version, std::string_view how) {
  return make_error(ErrorName::InvalidStateException,
                    "version " + std::to_string(version) + " of external key '" + key.id +
                        "' is retired (keys[].versions[].enabled: false in the XKS proxy "
                        "configuration), so its ciphertexts are refused",
                    std::string(how));
}

Error unknown_version(const config::KeyEntry& key, std::uint32_t version) {
  return make_error(ErrorName::InvalidCiphertextException,
                    "ciphertextMetadata names version " + std::to_string(version) +
                        " of external key '" + key.id +
                        "', which is not in its keys[].versions in the XKS proxy configuration");
}

bool is_sized_for_gcm(const DecryptRequest& request) noexcept {
  return hsm::is_gcm_iv_size(request.iv.size()) && request.tag.size() == hsm::kGcmTagBytes;
}

Error wrong_sizes(const DecryptRequest& request) {
  // The spec's sizes (12- or 16-byte IV, 16-byte tag): anything else cannot verify.
  return make_error(ErrorName::InvalidCiphertextException,
                    "initializationVector must be 12 or 16 bytes and authenticationTag 16 bytes "
                    "(got " +
                        std::to_string(request.iv.size()) + " and " +
                        std::to_string(request.tag.size()) + ")");
}

}  // namespace

Result<KeyMetadataResponse> XksService::get_key_metadata(const config::KeyEntry& key) {
  auto attrs = backend_.key_attributes(current_version(key).label);
  if (!attrs) return std::move(attrs).error();
  KeyMetadataResponse r;
  // A key that is not AES-256 is reported as what it is: KMS refuses CreateKey
  // when keySpec is not AES_256 and tells the customer the key spec is wrong,
  // where an InvalidStateException would read "not enabled in the external key
  // manager".
  r.key_spec = key_spec_of(*attrs);
  r.key_usage = attrs->key_usage();
  if (r.key_usage.size() > kMaxKeyUsages) r.key_usage.resize(kMaxKeyUsages);
  r.enabled = key.enabled;
  return r;
}

Error XksService::key_error_first(const config::KeyEntry& key, KeyUse use, Error request_error) {
  return key_error_first(key, current_version(key).label, use, std::move(request_error));
}

Error XksService::key_error_first(const config::KeyEntry& key, std::string_view label, KeyUse use,
                                  Error request_error) {
  if (!key.enabled) return disabled(key);
  auto attrs = backend_.key_attributes(label);
  if (!attrs) {
    // A missing key is the key's fault; an HSM that cannot answer now says
    // nothing about the key, so the request's own error stands.
    Error e = std::move(attrs).error();
    return e.name == ErrorName::KeyNotFoundException ? e : request_error;
  }
  const bool allowed = use == KeyUse::Encrypt ? attrs->encrypt : attrs->decrypt;
  if (!allowed) {
    const char* op = use == KeyUse::Encrypt ? "ENCRYPT" : "DECRYPT";
    return make_error(ErrorName::InvalidKeyUsageException,
                      "external key '" + key.id + "' does not allow " + op,
                      "HSM key label '" + std::string(label) + "' has CKA_" + op +
                          " false; the request also had: " + request_error.message);
  }
  return request_error;
}

Result<EncryptResponse> XksService::encrypt(const config::KeyEntry& key,
                                            const EncryptRequest& request, KeyVersionUse* use) {
  if (!key.enabled) return disabled(key);
  const VersionView version = current_version(key);
  const std::string_view label = version.label;
  report(use, version.number);

  EncryptResponse r;
  r.ciphertext_metadata = crypto::ciphertext_metadata_for(version.number);
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
    // Appendix C: the CDIV is computed from the encrypt output before the check
    // decrypt ("the ordering is important"), so that it covers exactly the bytes
    // the HSM returned, whatever the decrypt might do to its input. The check
    // decrypt then proves this ciphertext decrypts to the plaintext before the
    // CDIV is handed out.
    r.cdiv = crypto::compute_cdiv(aad, r.ciphertext_metadata, ct->iv, ct->ciphertext, ct->tag);
    if (r.cdiv->empty()) {
      return make_error(ErrorName::InternalException,
                        "the ciphertextDataIntegrityValue could not be computed",
                        "compute_cdiv failed (OpenSSL SHA-256)");
    }
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
        return make_error(
            ErrorName::InternalException,
            "the key manager produced a ciphertext that does not decrypt",
            "HSM key label '" + std::string(label) + "': CDIV round trip: " + e.detail);
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
  }

  r.ciphertext = std::move(ct->ciphertext);
  r.iv = std::move(ct->iv);
  r.tag = std::move(ct->tag);
  return r;
}

Result<DecryptResponse> XksService::decrypt(const config::KeyEntry& key,
                                            const DecryptRequest& request, KeyVersionUse* use) {
  if (!key.enabled) return disabled(key);
  // The key comes before its ciphertext: a request refused here without the
  // HSM is first checked against the key's usage (key_error_first).
  const crypto::ParsedMetadata parsed =
      request.ciphertext_metadata ? crypto::parse_ciphertext_metadata(*request.ciphertext_metadata)
                                  : crypto::ParsedMetadata{};
  using Kind = crypto::ParsedMetadata::Kind;
  switch (parsed.kind) {
    case Kind::NotOurs: return decrypt_legacy(key, request, use);
    case Kind::UnknownLayout:
      // A newer proxy wrote it; say so, since rolling back is the likely cause.
      return key_error_first(key, KeyUse::Decrypt,
                             make_error(ErrorName::InvalidCiphertextException,
                                        "ciphertextMetadata names AAD layout version " +
                                            std::to_string(parsed.layout) +
                                            ", which this proxy version cannot decrypt"));
    case Kind::Malformed:
      return key_error_first(
          key, KeyUse::Decrypt,
          make_error(ErrorName::InvalidCiphertextException,
                     "ciphertextMetadata names layout version " + std::to_string(parsed.layout) +
                         " but is not a key version in that layout (" +
                         std::to_string(request.ciphertext_metadata->size()) + " bytes)"));
    case Kind::Ours: break;
  }
  report(use, parsed.key_version);
  const auto version = find_version(key, parsed.key_version);
  if (!version)
    return key_error_first(key, KeyUse::Decrypt, unknown_version(key, parsed.key_version));
  if (!version->enabled) return retired(key, version->number, "the ciphertext names it");
  if (!is_sized_for_gcm(request)) {
    return key_error_first(key, version->label, KeyUse::Decrypt, wrong_sizes(request));
  }
  const Bytes framed = crypto::frame_aad(view(request.aad), *request.ciphertext_metadata);
  auto pt = backend_.decrypt(version->label, request.ciphertext, request.iv, request.tag, framed);
  if (!pt) return std::move(pt).error();
  if (pt->size() != request.ciphertext.size()) {
    return make_error(ErrorName::InternalException, "the key manager returned a malformed result",
                      "HSM key label '" + std::string(version->label) + "': plaintext " +
                          std::to_string(pt->size()) + " bytes for " +
                          std::to_string(request.ciphertext.size()) + " of ciphertext");
  }
  return DecryptResponse{std::move(*pt)};
}

Result<DecryptResponse> XksService::decrypt_legacy(const config::KeyEntry& key,
                                                   const DecryptRequest& request,
                                                   KeyVersionUse* use) {
  const bool no_metadata = !request.ciphertext_metadata || request.ciphertext_metadata->empty();
  // spec-no-metadata applies only where there is no metadata to bind; the AWS
  // sample binds whatever (static) metadata it returned, or none.
  std::vector<config::LegacyLayout> layouts;
  for (const auto l : key.legacy_layouts) {
    if (l == config::LegacyLayout::AwsSample || no_metadata) layouts.push_back(l);
  }
  if (layouts.empty()) {
    Error e = not_ours(request.ciphertext_metadata ? "ciphertextMetadata not recognised"
                                                   : "ciphertextMetadata absent");
    if (key.legacy_layouts.empty()) {
      e.detail += "; keystores[].legacy_layouts is not set (no other proxy's layout is tried)";
    }
    return key_error_first(key, KeyUse::Decrypt, std::move(e));
  }
  // What other proxies wrote predates this proxy's key versions: version 1.
  report(use, 1);
  const auto version = find_version(key, 1);
  if (!version) {
    return key_error_first(
        key, KeyUse::Decrypt,
        make_error(ErrorName::InvalidCiphertextException,
                   "the ciphertext is not this proxy's; a legacy layout ciphertext belongs to "
                   "version 1 of external key '" +
                       key.id + "', which is not in its keys[].versions"));
  }
  if (!version->enabled) return retired(key, 1, "legacy layout ciphertexts belong to version 1");
  if (!is_sized_for_gcm(request)) {
    return key_error_first(key, version->label, KeyUse::Decrypt, wrong_sizes(request));
  }
  const ByteView metadata = view(request.ciphertext_metadata);
  std::string tried;
  for (const auto layout : layouts) {
    const Bytes framed = layout == config::LegacyLayout::AwsSample
                             ? crypto::frame_aad_aws_sample(request.aad, metadata)
                             : crypto::frame_aad(view(request.aad), {});
    if (framed.empty()) {
      return make_error(ErrorName::InternalException, "the AAD could not be framed",
                        "SHA-256 of the AAD failed (OpenSSL)");
    }
    auto pt = backend_.decrypt(version->label, request.ciphertext, request.iv, request.tag, framed);
    if (pt) {
      if (pt->size() != request.ciphertext.size()) {
        return make_error(ErrorName::InternalException,
                          "the key manager returned a malformed result",
                          "HSM key label '" + std::string(version->label) + "': plaintext " +
                              std::to_string(pt->size()) + " bytes for " +
                              std::to_string(request.ciphertext.size()) + " of ciphertext");
      }
      if (use != nullptr) use->legacy.store(static_cast<int>(layout), std::memory_order_relaxed);
      return DecryptResponse{std::move(*pt)};
    }
    // A tag that does not verify may be the next layout's; anything else (key
    // usage, HSM failure, deadline) is the answer.
    if (pt.error().name != ErrorName::InvalidCiphertextException) return std::move(pt).error();
    tried += (tried.empty() ? "" : ", ") + std::string(config::to_string(layout));
  }
  return make_error(ErrorName::InvalidCiphertextException,
                    "the ciphertext does not verify: its ciphertextMetadata is not this proxy's, "
                    "and it does not decrypt as version 1 of external key '" +
                        key.id + "' in the legacy layouts " + tried +
                        " (keystores[].legacy_layouts)",
                    "HSM key label '" + std::string(version->label) + "'");
}

HealthResponse make_health_response(const std::vector<hsm::EkmHealth>& ekms, unsigned fleet_size) {
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
