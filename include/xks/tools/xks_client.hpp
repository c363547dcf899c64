// The client side of the XKS API for xksctl: endpoints, a TLS client context
// that verifies like KMS does (SNI, hostname, chain), one keep-alive connection
// with per-step timings, and SigV4-signed request construction.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "xks/config/config.hpp"
#include "xks/core/secure.hpp"

namespace xks::tools {

// KMS gives up on any call after 250 ms.
inline constexpr double kKmsBudgetMs = 250.0;

struct Endpoint {
  bool tls = true;
  std::string host;  // DNS name or IP literal (IPv6 without brackets)
  std::uint16_t port = 443;
  std::string host_header() const;  // "host[:port]", the value that is signed
  std::string url() const;
};

// "https://host[:port]" or "http://host[:port]", nothing after the authority.
// Throws UsageError.
Endpoint parse_endpoint(const std::string& url);
// server.listen of the configuration (0.0.0.0 / :: become loopback), https
// unless tls.enabled is false.
Endpoint default_endpoint(const config::Config& cfg);

struct ClientTlsOptions {
  std::string cacert;        // PEM bundle; empty: the system CA store
  std::string extra_anchor;  // PEM file also trusted, with partial chains
  int min_version = 0;       // TLS1_2_VERSION...; 0 = TLS 1.2
  int max_version = 0;       // 0 = highest
  std::string tls13_suites;  // empty: OpenSSL's defaults
  std::string tls12_ciphers;
  bool verify = true;  // false: accept any certificate (protocol probes)
};
std::shared_ptr<boost::asio::ssl::context> make_client_tls_context(const ClientTlsOptions& options);

// True when `ep` is the proxy `cfg` describes: its server.listen (as default_endpoint
// reaches it), or a host name or IP the leaf of tls.certificate is issued for.
bool describes_endpoint(const config::Config& cfg, const Endpoint& ep);
// How xksctl trusts the proxy: `cacert` when given; otherwise the system CA store, plus
// the certificates of tls.certificate as anchors when `ep` is the proxy `cfg` describes
// (so a proxy with a private CA, such as the demo's, is reached without --cacert). The
// host name is verified either way.
ClientTlsOptions client_trust(const config::Config& cfg, const Endpoint& ep,
                              const std::string& cacert);

// Milliseconds per step of one call; zero for steps a reused connection skips.
struct Timing {
  double dns_ms = 0, connect_ms = 0, tls_ms = 0, request_ms = 0, total_ms = 0;
  std::string line() const;  // "dns 0.1 ms, connect ..., total 3.2 ms: within KMS's 250 ms budget"
};

// A failure on the way to a response, with the step it happened in.
class TransportError : public std::runtime_error {
 public:
  enum class Stage { Dns, Connect, Tls, Http };
  TransportError(Stage stage, const std::string& message)
      : std::runtime_error(message), stage_(stage) {}
  Stage stage() const noexcept { return stage_; }

 private:
  Stage stage_;
};
const char* to_string(TransportError::Stage stage) noexcept;

struct Reply {
  unsigned status = 0;
  std::string body;
  std::string content_type;
};

// One HTTP/1.1 keep-alive connection. Not thread-safe; use it from one coroutine.
class Connection {
 public:
  Connection(Endpoint endpoint, std::shared_ptr<boost::asio::ssl::context> tls,
             std::chrono::milliseconds timeout);
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  bool is_open() const noexcept;
  // Resolves, connects and (for https) handshakes; fills timing's dns/connect/tls.
  boost::asio::awaitable<void> connect(Timing& timing);
  // Sends and reads the response; fills timing.request_ms. Reconnects first if
  // the connection is closed. Throws TransportError.
  boost::asio::awaitable<Reply> send(
      boost::beast::http::request<boost::beast::http::string_body>& req, Timing& timing);
  void close() noexcept;
  // After a TLS handshake: "TLSv1.3 TLS_AES_256_GCM_SHA384".
  std::string negotiated() const;
  // The server's certificate chain as presented (PEM), after a handshake.
  std::string peer_chain_pem() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Runs an awaitable to completion on a private io_context and returns its
// result (or rethrows). A Connection used inside must not outlive that run.
template <class T>
T run_sync(boost::asio::awaitable<T> op) {
  boost::asio::io_context ioc;
  std::optional<T> result;
  std::exception_ptr error;
  boost::asio::co_spawn(ioc, std::move(op), [&](std::exception_ptr e, T value) {
    if (e) {
      error = e;
    } else {
      result.emplace(std::move(value));
    }
  });
  ioc.run();
  if (error) std::rethrow_exception(error);
  return std::move(*result);
}

// What to sign with: a key store's credential and the KMS region.
struct Signer {
  std::string access_key_id;
  SecureString secret;
  std::string region = "us-east-1";
};

enum class Api { Health, Metadata, Encrypt, Decrypt };
const char* to_string(Api api) noexcept;  // "health"...
// "<uri_path>/health" or "<uri_path>/keys/<key>/<api>".
std::string api_target(const std::string& uri_path, Api api, const std::string& key);

// requestMetadata as KMS sends it: a fresh kmsRequestId, the operation KMS
// uses for the API, and for all but health a placeholder principal and key ARN.
nlohmann::json request_metadata(Api api, const std::string& region);

// A POST with Content-Type, Host, X-Amz-Date and Authorization (auth::sign).
boost::beast::http::request<boost::beast::http::string_body> signed_post(
    const Endpoint& endpoint, const std::string& target, std::string body, const Signer& signer,
    std::chrono::system_clock::time_point now);

}  // namespace xks::tools
