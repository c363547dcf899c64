#include "xks/net/tls_context.hpp"

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <stdexcept>
#include <string>

namespace xks::net {
namespace ssl = boost::asio::ssl;
namespace {

std::string openssl_reason() {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  if (code == 0) return "unknown OpenSSL error";
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

[[noreturn]] void fail(const std::filesystem::path& config_file, const std::string& setting,
                       const std::string& problem, const std::string& fix) {
  throw std::runtime_error(config_file.string() + ": " + setting + ": " + problem + "; fix: " + fix);
}

// HTTP/1.1 only: an ALPN-capable client offering h2 falls back to http/1.1.
int select_alpn(SSL*, const unsigned char** out, unsigned char* outlen, const unsigned char* in,
                unsigned int inlen, void*) {
  static const unsigned char kHttp11[] = {8, 'h', 't', 't', 'p', '/', '1', '.', '1'};
  unsigned char* selected = nullptr;
  if (SSL_select_next_proto(&selected, outlen, kHttp11, sizeof kHttp11, in, inlen) ==
      OPENSSL_NPN_NEGOTIATED) {
    *out = selected;
    return SSL_TLSEXT_ERR_OK;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

}  // namespace

std::shared_ptr<ssl::context> make_server_tls_context(const config::TlsConfig& tls,
                                                      const std::filesystem::path& config_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  // OpenSSL 3 refuses client-initiated renegotiation unless
  // SSL_OP_ALLOW_CLIENT_RENEGOTIATION is set; NO_RENEGOTIATION covers the rest.
  SSL_CTX_set_options(native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                  SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_ciphersuites(native, kTls13Suites) != 1 ||
      SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    throw std::runtime_error("TLS: cannot set the cipher suites: " + openssl_reason());
  }
  SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);

  if (SSL_CTX_use_certificate_chain_file(native, tls.certificate.c_str()) != 1) {
    fail(config_file, "tls.certificate", "cannot load certificate chain '" +
         tls.certificate.string() + "' (" + openssl_reason() + ")",
         "point it at a PEM file holding the server certificate followed by its intermediates");
  }
  if (SSL_CTX_use_PrivateKey_file(native, tls.private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    fail(config_file, "tls.private_key",
         "cannot load private key '" + tls.private_key.string() + "' (" + openssl_reason() + ")",
         "point it at the unencrypted PEM private key of tls.certificate");
  }
  if (SSL_CTX_check_private_key(native) != 1) {
    fail(config_file, "tls.private_key",
         "the private key does not match the certificate (" + openssl_reason() + ")",
         "use the key the certificate was issued for");
  }
  return ctx;
}

}  // namespace xks::net
