#include "xks/net/tls_context.hpp"

#include "xks/config/config.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#include <algorithm>
#include <cctype>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

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
  throw std::runtime_error(config_file.string() + ": " + setting + ": " + problem +
                           "; fix: " + fix);
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

// What the verify callback needs, owned by the SSL_CTX (ex_data).
struct ClientNamePolicy {
  std::vector<std::string> names;
  bool dns_san = false;  // tls.client_names_match: cn_or_dns_san
};

void free_policy(void*, void* ptr, CRYPTO_EX_DATA*, int, long, void*) {
  delete static_cast<ClientNamePolicy*>(ptr);
}

int policy_index() {
  static const int index = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, free_policy);
  return index;
}

// Per connection: the verification error that rejected the client certificate
// (the callback replaces it, see below), plus one so that 0 means none.
int rejection_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

bool equals_ignore_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// Every subject CN of `cert` (normally one).
std::vector<std::string> common_names(X509* cert) {
  std::vector<std::string> out;
  X509_NAME* subject = X509_get_subject_name(cert);
  for (int i = -1; (i = X509_NAME_get_index_by_NID(subject, NID_commonName, i)) >= 0;) {
    const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, i));
    unsigned char* utf8 = nullptr;
    const int len = ASN1_STRING_to_UTF8(&utf8, data);
    if (len >= 0) out.emplace_back(reinterpret_cast<char*>(utf8), static_cast<std::size_t>(len));
    OPENSSL_free(utf8);
  }
  return out;
}

bool name_accepted(X509* cert, const ClientNamePolicy& policy) {
  for (const auto& cn : common_names(cert)) {
    for (const auto& name : policy.names) {
      if (equals_ignore_case(cn, name)) return true;
    }
  }
  if (!policy.dns_san) return false;
  for (const auto& name : policy.names) {
    // DNS SANs only; no partial wildcards like "cks*.amazonaws.com".
    if (X509_check_host(cert, name.c_str(), name.size(),
                        X509_CHECK_FLAG_NEVER_CHECK_SUBJECT | X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS,
                        nullptr) == 1) {
      return true;
    }
  }
  return false;
}

// Chain verification as OpenSSL does it, then the leaf's name. Any rejection
// is recorded for the log and reported to the client as handshake_failure:
// the alert OpenSSL would derive from the error (unknown_ca, bad_certificate,
// certificate_expired, ...) tells a prober what to fix, and the public AWS test
// client expects handshake_failure.
int verify_client(int preverify_ok, X509_STORE_CTX* store) {
  SSL* ssl =
      static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
  int error = X509_STORE_CTX_get_error(store);
  if (preverify_ok == 1 && X509_STORE_CTX_get_error_depth(store) == 0 && ssl != nullptr) {
    const auto* policy = static_cast<const ClientNamePolicy*>(
        SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), policy_index()));
    X509* leaf = X509_STORE_CTX_get_current_cert(store);
    if (policy != nullptr && leaf != nullptr && !name_accepted(leaf, *policy)) {
      preverify_ok = 0;
      error = X509_V_ERR_HOSTNAME_MISMATCH;
    }
  }
  if (preverify_ok == 1) return 1;
  if (ssl != nullptr) {
    SSL_set_ex_data(ssl, rejection_index(),
                    reinterpret_cast<void*>(static_cast<std::intptr_t>(error) + 1));
  }
  // OpenSSL maps this error to the handshake_failure alert.
  X509_STORE_CTX_set_error(store, X509_V_ERR_APPLICATION_VERIFICATION);
  return 0;
}

// mTLS (spec: SHOULD): the client certificate must chain to tls.client_ca, be
// valid now, and carry one of tls.client_names as its subject CN (or, with
// client_names_match: cn_or_dns_san, as a DNS SAN). KMS presents
// CN=cks.kms.<region>.amazonaws.com. Every failure ends the handshake with a
// handshake_failure alert; the server logs the real reason (see
// describe_handshake_failure).
void configure_client_auth(SSL_CTX* native, const config::TlsConfig& tls,
                           const std::filesystem::path& config_file) {
  if (SSL_CTX_load_verify_locations(native, tls.client_ca.c_str(), nullptr) != 1) {
    fail(config_file, "tls.client_ca",
         "cannot load CA certificates from '" + tls.client_ca.string() + "' (" + openssl_reason() +
             ")",
         "point it at a PEM file with the CA(s) that issue the clients' certificates");
  }
  // The CA names sent in the CertificateRequest help clients pick a certificate.
  if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(tls.client_ca.c_str())) {
    SSL_CTX_set_client_CA_list(native, names);
  }
  if (tls.client_names.empty()) {
    // The loader defaults them or refuses to start; never accept a CA alone.
    fail(config_file, "tls.client_names", "is empty while tls.client_ca is set",
         "list the accepted client names, e.g. [cks.kms.eu-west-1.amazonaws.com]");
  }
  auto policy = std::make_unique<ClientNamePolicy>();
  policy->names = tls.client_names;
  policy->dns_san = tls.client_names_match == config::TlsConfig::NameMatch::CnOrDnsSan;
  if (SSL_CTX_set_ex_data(native, policy_index(), policy.get()) != 1) {
    throw std::runtime_error("TLS: cannot attach the client name policy: " + openssl_reason());
  }
  (void)policy.release();  // owned by the SSL_CTX now (free_policy)
  SSL_CTX_set_verify(native, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_client);
  SSL_CTX_set_verify_depth(native, 8);
  X509_VERIFY_PARAM* param = SSL_CTX_get0_param(native);
  X509_VERIFY_PARAM_set_purpose(param, X509_PURPOSE_SSL_CLIENT);
}

}  // namespace

std::string describe_handshake_failure(SSL* ssl, const boost::system::error_code& ec) {
  std::string reason = ec.message();
  long verify = SSL_get_verify_result(ssl);
  if (void* rejected = SSL_get_ex_data(ssl, rejection_index()); rejected != nullptr) {
    verify = static_cast<long>(reinterpret_cast<std::intptr_t>(rejected) - 1);
  }
  if (verify == X509_V_ERR_HOSTNAME_MISMATCH) {
    reason +=
        "; client certificate rejected: hostname mismatch (its name is not in "
        "tls.client_names)";
  } else if (verify != X509_V_OK) {
    reason +=
        std::string("; client certificate rejected: ") + X509_verify_cert_error_string(verify);
  } else if (ec.category() == boost::asio::error::get_ssl_category() &&
             SSL_get_verify_mode(ssl) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT) {
    // OpenSSL reports a missing certificate as a handshake error, not a
    // verification result.
    if (X509* peer = SSL_get1_peer_certificate(ssl)) {
      X509_free(peer);
    } else if (reason.find("certificate") != std::string::npos) {
      reason += "; the client sent no certificate (tls.client_ca requires one)";
    }
  }
  return reason;
}

std::optional<std::chrono::system_clock::time_point> certificate_not_after(
    const std::filesystem::path& pem) {
  std::unique_ptr<BIO, decltype(&BIO_free)> bio(BIO_new_file(pem.c_str(), "r"), BIO_free);
  if (!bio) return std::nullopt;
  std::unique_ptr<X509, decltype(&X509_free)> cert(
      PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr), X509_free);
  if (!cert) return std::nullopt;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert.get()), &tm) != 1) return std::nullopt;
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string peer_subject(SSL* ssl) {
  X509* peer = SSL_get1_peer_certificate(ssl);
  if (peer == nullptr) return {};
  char buf[512];
  X509_NAME_oneline(X509_get_subject_name(peer), buf, sizeof buf);
  X509_free(peer);
  return buf;
}

std::string peer_common_name(SSL* ssl) {
  X509* peer = SSL_get1_peer_certificate(ssl);
  if (peer == nullptr) return {};
  auto names = common_names(peer);
  X509_free(peer);
  return names.empty() ? std::string() : names.front();
}

std::shared_ptr<ssl::context> make_server_tls_context(const config::TlsConfig& tls,
                                                      const std::filesystem::path& config_file) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_server);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, TLS1_2_VERSION);
  // OpenSSL 3 refuses client-initiated renegotiation unless
  // SSL_OP_ALLOW_CLIENT_RENEGOTIATION is set; NO_RENEGOTIATION covers the rest.
  SSL_CTX_set_options(
      native, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
  if (SSL_CTX_set_ciphersuites(native, kTls13Suites) != 1 ||
      SSL_CTX_set_cipher_list(native, kTls12Ciphers) != 1) {
    throw std::runtime_error("TLS: cannot set the cipher suites: " + openssl_reason());
  }
  SSL_CTX_set_alpn_select_cb(native, select_alpn, nullptr);
  // Idle keep-alive connections give their read/write buffers back (about
  // 34 KiB each); KMS keeps many connections open between bursts.
  SSL_CTX_set_mode(native, SSL_MODE_RELEASE_BUFFERS);
  // Each context gets fresh random ticket keys from OpenSSL; the daemon
  // replaces the context every tls.ticket_key_rotation_hours, which rotates
  // them. TLS 1.3 resumption also uses tickets, so NO_TICKET turns both off.
  if (!tls.session_tickets) {
    SSL_CTX_set_options(native, SSL_OP_NO_TICKET);
    SSL_CTX_set_num_tickets(native, 0);
    SSL_CTX_set_session_cache_mode(native, SSL_SESS_CACHE_OFF);
  }

  if (SSL_CTX_use_certificate_chain_file(native, tls.certificate.c_str()) != 1) {
    fail(config_file, "tls.certificate",
         "cannot load certificate chain '" + tls.certificate.string() + "' (" + openssl_reason() +
             ")",
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
  // Resumed sessions must carry the same verification context, or OpenSSL
  // refuses to resume them once client certificates are required.
  static const unsigned char kSessionContext[] = "xks-proxy";
  SSL_CTX_set_session_id_context(native, kSessionContext, sizeof kSessionContext - 1);
  if (!tls.client_ca.empty()) configure_client_auth(native, tls, config_file);
  return ctx;
}

}  // namespace xks::net
