// Server TLS contexts: TLS 1.2/1.3 only, the spec's cipher suites and nothing
// weaker, no compression, no renegotiation. A reload builds a new context;
// each connection keeps the context it started with.
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <chrono>
#include <memory>
#include <optional>

#include <filesystem>
#include <string>

namespace xks::config {
struct TlsConfig;
}

namespace xks::net {

// TLS 1.3 suites, then TLS 1.2 suites (spec, "API content type").
inline constexpr const char* kTls13Suites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256";
inline constexpr const char* kTls12Ciphers =
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384";

// Builds a server context from the configuration. Throws std::runtime_error whose
// message names the setting, the file and OpenSSL's reason.
std::shared_ptr<boost::asio::ssl::context> make_server_tls_context(
    const config::TlsConfig& tls, const std::filesystem::path& config_file);

// Why a server handshake failed, for the log: OpenSSL's reason plus, for a
// rejected client certificate, the verification error (wrong CA, expired,
// not yet valid, self-signed, name not in tls.client_names, none sent).
std::string describe_handshake_failure(SSL* ssl, const boost::system::error_code& ec);

// notAfter of the first certificate in a PEM file (the server's leaf), for the
// days-to-expiry metric; nullopt if it cannot be read.
std::optional<std::chrono::system_clock::time_point> certificate_not_after(
    const std::filesystem::path& pem);

// The verified client certificate's subject ("/CN=..."), empty without one.
std::string peer_subject(SSL* ssl);

// The verified client certificate's (first) subject CN, empty without one.
std::string peer_common_name(SSL* ssl);

}  // namespace xks::net
