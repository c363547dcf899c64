// A KeyBackend for unit tests: AES-256-GCM in OpenSSL over keys held in memory,
// with PKCS#11-like behaviour where the service depends on it (a key without
// CKA_ENCRYPT / CKA_DECRYPT fails the operation with InvalidKeyUsageException,
// as the real backend maps CKR_KEY_FUNCTION_NOT_PERMITTED).
#pragma once

#include <openssl/evp.h>
#include <openssl/rand.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "xks/hsm/key_backend.hpp"

namespace xks::testing {

inline Bytes random_bytes(std::size_t n) {
  Bytes out(n);
  if (n != 0 && RAND_bytes(out.data(), static_cast<int>(n)) != 1) {
    throw std::runtime_error("RAND_bytes failed");
  }
  return out;
}

class FakeKeyBackend : public hsm::KeyBackend {
 public:
  struct Key {
    SecureBytes material;
    hsm::KeyAttributes attributes;
  };

  static hsm::KeyAttributes aes256(bool encrypt = true, bool decrypt = true) {
    hsm::KeyAttributes a;
    a.is_aes = true;
    a.key_bytes = 32;
    a.encrypt = encrypt;
    a.decrypt = decrypt;
    a.sensitive = true;
    a.extractable = false;
    a.id_hex = "0102";
    return a;
  }

  void add_key(const std::string& label, hsm::KeyAttributes attributes) {
    const Bytes m = random_bytes(attributes.key_bytes == 0 ? 32 : attributes.key_bytes);
    keys_[label] = Key{SecureBytes(m.begin(), m.end()), attributes};
  }

  const Key& key(const std::string& label) const { return keys_.at(label); }

  Result<hsm::KeyAttributes> key_attributes(std::string_view label) override {
    ++attribute_calls;
    const Key* k = find(label);
    if (k == nullptr) return not_found(label);
    return k->attributes;
  }

  Result<hsm::GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                     ByteView aad) override {
    ++encrypt_calls;
    last_label = std::string(label);
    last_aad.assign(aad.begin(), aad.end());
    const Key* k = find(label);
    if (k == nullptr) return not_found(label);
    if (!k->attributes.encrypt) return usage("CKR_KEY_FUNCTION_NOT_PERMITTED (encrypt)");
    hsm::GcmCiphertext out;
    out.iv = random_bytes(hsm::kGcmIvBytes);
    out.ciphertext.resize(plaintext.size());
    out.tag.resize(hsm::kGcmTagBytes);
    Ctx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    bool ok =
        EVP_EncryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(out.iv.size()),
                            nullptr) == 1 &&
        EVP_EncryptInit_ex(ctx.get(), nullptr, nullptr, k->material.data(), out.iv.data()) == 1 &&
        (aad.empty() || EVP_EncryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                          static_cast<int>(aad.size())) == 1) &&
        (plaintext.empty() ||
         EVP_EncryptUpdate(ctx.get(), out.ciphertext.data(), &len, plaintext.data(),
                           static_cast<int>(plaintext.size())) == 1) &&
        EVP_EncryptFinal_ex(ctx.get(), out.ciphertext.data() + plaintext.size(), &len) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_GET_TAG, static_cast<int>(out.tag.size()),
                            out.tag.data()) == 1;
    if (!ok) return make_error(ErrorName::InternalException, "fake encrypt failed");
    if (corrupt_encrypt && !out.ciphertext.empty()) out.ciphertext[0] ^= 1;
    if (corrupt_encrypt && out.ciphertext.empty()) out.tag[0] ^= 1;
    return out;
  }

  Result<SecureBytes> decrypt(std::string_view label, ByteView ciphertext, ByteView iv,
                              ByteView tag, ByteView aad) override {
    ++decrypt_calls;
    last_label = std::string(label);
    last_aad.assign(aad.begin(), aad.end());
    const Key* k = find(label);
    if (k == nullptr) return not_found(label);
    if (!k->attributes.decrypt) return usage("CKR_KEY_FUNCTION_NOT_PERMITTED (decrypt)");
    if (!hsm::is_gcm_iv_size(iv.size()) || tag.size() != hsm::kGcmTagBytes) {
      return bad_ciphertext("CKR_ARGUMENTS_BAD");
    }
    SecureBytes out(ciphertext.size());
    Bytes tag_copy(tag.begin(), tag.end());
    Ctx ctx(EVP_CIPHER_CTX_new());
    int len = 0;
    const bool setup =
        EVP_DecryptInit_ex(ctx.get(), EVP_aes_256_gcm(), nullptr, nullptr, nullptr) == 1 &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_IVLEN, static_cast<int>(iv.size()),
                            nullptr) == 1 &&
        EVP_DecryptInit_ex(ctx.get(), nullptr, nullptr, k->material.data(), iv.data()) == 1 &&
        (aad.empty() || EVP_DecryptUpdate(ctx.get(), nullptr, &len, aad.data(),
                                          static_cast<int>(aad.size())) == 1) &&
        (ciphertext.empty() || EVP_DecryptUpdate(ctx.get(), out.data(), &len, ciphertext.data(),
                                                 static_cast<int>(ciphertext.size())) == 1) &&
        EVP_CIPHER_CTX_ctrl(ctx.get(), EVP_CTRL_GCM_SET_TAG, static_cast<int>(tag_copy.size()),
                            tag_copy.data()) == 1;
    if (!setup) return make_error(ErrorName::InternalException, "fake decrypt failed");
    if (EVP_DecryptFinal_ex(ctx.get(), out.data() + ciphertext.size(), &len) != 1) {
      return bad_ciphertext("CKR_ENCRYPTED_DATA_INVALID");
    }
    if (corrupt_decrypt && !out.empty()) out[0] ^= 1;
    if (corrupt_input_after_decrypt && !ciphertext.empty()) {
      // A bit flip in the caller's copy of the ciphertext while the decrypt ran
      // (the failure Appendix C's ordering guards against).
      decrypt_input_before_corruption.assign(ciphertext.begin(), ciphertext.end());
      const_cast<unsigned char*>(ciphertext.data())[0] ^= 1;
    }
    return out;
  }

  std::vector<hsm::EkmHealth> check_health() override { return health; }

  int attribute_calls = 0;
  int encrypt_calls = 0;
  int decrypt_calls = 0;
  std::string last_label;
  Bytes last_aad;
  bool corrupt_encrypt = false;  // flip a ciphertext bit after encrypting
  bool corrupt_decrypt = false;  // flip a plaintext bit after decrypting
  // Flip a bit of the ciphertext buffer passed to decrypt, after decrypting;
  // the bytes it held before are kept in decrypt_input_before_corruption.
  bool corrupt_input_after_decrypt = false;
  Bytes decrypt_input_before_corruption;
  std::vector<hsm::EkmHealth> health;

 private:
  struct CtxFree {
    void operator()(EVP_CIPHER_CTX* c) const noexcept { EVP_CIPHER_CTX_free(c); }
  };
  using Ctx = std::unique_ptr<EVP_CIPHER_CTX, CtxFree>;

  const Key* find(std::string_view label) const {
    const auto it = keys_.find(std::string(label));
    return it == keys_.end() ? nullptr : &it->second;
  }
  static Error not_found(std::string_view label) {
    return make_error(ErrorName::KeyNotFoundException, "no such key",
                      "no HSM key labelled '" + std::string(label) + "'");
  }
  static Error usage(const char* ckr) {
    return make_error(ErrorName::InvalidKeyUsageException, "the key does not allow this operation",
                      ckr);
  }
  static Error bad_ciphertext(const char* ckr) {
    return make_error(ErrorName::InvalidCiphertextException,
                      "the ciphertext, IV, tag or AAD does not verify", ckr);
  }

  std::map<std::string, Key> keys_;
};

}  // namespace xks::testing
