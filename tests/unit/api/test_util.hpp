// Helpers shared by the api tests. Base64 here is OpenSSL's, independent of
// xks::crypto, so the tests do not check the code with itself.
#pragma once

#include <openssl/evp.h>

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "xks/api/dto.hpp"
#include "xks/core/secure.hpp"

namespace xks::testing {

inline std::string b64(ByteView data) {
  std::string out(4 * ((data.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), data.data(),
                                static_cast<int>(data.size()));
  out.resize(static_cast<std::size_t>(n));
  return out;
}
inline std::string b64(std::string_view s) { return b64(as_bytes(s)); }

inline Bytes unb64(std::string_view s) {
  Bytes out(s.size());
  const int n = EVP_DecodeBlock(out.data(), reinterpret_cast<const unsigned char*>(s.data()),
                                static_cast<int>(s.size()));
  if (n < 0) return {};
  std::size_t len = static_cast<std::size_t>(n);
  if (s.size() >= 1 && s[s.size() - 1] == '=') --len;
  if (s.size() >= 2 && s[s.size() - 2] == '=') --len;
  out.resize(len);
  return out;
}

inline nlohmann::json request_metadata(std::string_view op = "Encrypt") {
  return {
      {"awsPrincipalArn", "arn:aws:iam::123456789012:user/Alice"},
      {"kmsKeyArn", "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"},
      {"kmsOperation", std::string(op)},
      {"kmsRequestId", "4112f4d6-db54-4af4-ae30-c55a22a8dfae"},
      {"kmsViaService", "ebs"}};
}

// Requests as KMS sends them: kmsRequestId and kmsOperation set; the
// Decrypt carries the Encrypt's ciphertext, IV, tag and (when any) metadata.
inline api::EncryptRequest encrypt_request(std::string_view plaintext,
                                           std::optional<std::string> aad = {}, bool cdiv = false) {
  api::EncryptRequest r;
  r.metadata.kms_request_id = "req-1";
  r.metadata.kms_operation = "Encrypt";
  r.plaintext.assign(plaintext.begin(), plaintext.end());
  if (aad) r.aad = Bytes(aad->begin(), aad->end());
  r.want_cdiv = cdiv;
  return r;
}

inline api::DecryptRequest decrypt_request(const api::EncryptResponse& e,
                                           std::optional<std::string> aad = {}) {
  api::DecryptRequest r;
  r.metadata.kms_request_id = "req-2";
  r.metadata.kms_operation = "Decrypt";
  r.ciphertext = e.ciphertext;
  r.iv = e.iv;
  r.tag = e.tag;
  if (aad) r.aad = Bytes(aad->begin(), aad->end());
  if (!e.ciphertext_metadata.empty()) r.ciphertext_metadata = e.ciphertext_metadata;
  return r;
}

}  // namespace xks::testing
