#include "xks/tools/xks_client.hpp"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <cstdio>
#include <nlohmann/json.hpp>

#include "xks/auth/sigv4.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/util.hpp"

namespace xks::tools {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace ssl = asio::ssl;
using tcp = asio::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kAwait = asio::as_tuple(asio::use_awaitable);

double ms_since(Clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
}

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)asio::ip::make_address(host, ec);
  return !ec;
}

}  // namespace

// ------------------------------------------------------------------ endpoints

std::string Endpoint::host_header() const {
  const bool v6 = host.find(':') != std::string::npos;
  std::string h = v6 ? "[" + host + "]" : host;
  if (port != (tls ? 443 : 80)) h += ":" + std::to_string(port);
  return h;
}

std::string Endpoint::url() const { return (tls ? "https://" : "http://") + host_header(); }

Endpoint parse_endpoint(const std::string& url) {
  Endpoint ep;
  std::string rest;
  if (url.starts_with("https://")) {
    rest = url.substr(8);
  } else if (url.starts_with("http://")) {
    ep.tls = false;
    ep.port = 80;
    rest = url.substr(7);
  } else {
    throw UsageError("--endpoint '" + url +
                     "' must start with https:// (or http:// for a proxy without TLS)");
  }
  if (!rest.empty() && rest.back() == '/') rest.pop_back();
  if (rest.find('/') != std::string::npos) {
    throw UsageError("--endpoint '" + url +
                     "' must be just scheme://host[:port]; the URI path comes from --keystore");
  }
  std::string port;
  if (rest.starts_with("[")) {
    const auto close = rest.find(']');
    if (close == std::string::npos)
      throw UsageError("--endpoint '" + url + "' has an unclosed [IPv6]");
    ep.host = rest.substr(1, close - 1);
    if (close + 1 < rest.size()) {
      if (rest[close + 1] != ':')
        throw UsageError("--endpoint '" + url + "': expected :port after ]");
      port = rest.substr(close + 2);
    }
  } else if (const auto colon = rest.rfind(':'); colon != std::string::npos) {
    ep.host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  } else {
    ep.host = rest;
  }
  if (ep.host.empty()) throw UsageError("--endpoint '" + url + "' has no host");
  if (!port.empty()) {
    unsigned long p = 0;
    try {
      std::size_t used = 0;
      p = std::stoul(port, &used);
      if (used != port.size()) p = 0;
    } catch (const std::exception&) {
      p = 0;
    }
    if (p == 0 || p > 65535)
      throw UsageError("--endpoint '" + url + "' has a bad port '" + port + "'");
    ep.port = static_cast<std::uint16_t>(p);
  }
  return ep;
}

Endpoint default_endpoint(const config::Config& cfg) {
  Endpoint ep;
  ep.tls = cfg.tls.enabled;
  ep.host = cfg.server.listen_host;
  // A wildcard listener is reached through loopback from this machine.
  if (ep.host == "0.0.0.0" || ep.host.empty()) ep.host = "127.0.0.1";
  if (ep.host == "::") ep.host = "::1";
  ep.port = cfg.server.listen_port;
  return ep;
}

// ------------------------------------------------------------------------ TLS

std::shared_ptr<ssl::context> make_client_tls_context(const ClientTlsOptions& o) {
  auto ctx = std::make_shared<ssl::context>(ssl::context::tls_client);
  SSL_CTX* native = ctx->native_handle();
  SSL_CTX_set_min_proto_version(native, o.min_version != 0 ? o.min_version : TLS1_2_VERSION);
  if (o.max_version != 0) SSL_CTX_set_max_proto_version(native, o.max_version);
  if (!o.tls13_suites.empty() && SSL_CTX_set_ciphersuites(native, o.tls13_suites.c_str()) != 1) {
    throw std::runtime_error("OpenSSL does not know the TLS 1.3 suites " + o.tls13_suites);
  }
  if (!o.tls12_ciphers.empty() && SSL_CTX_set_cipher_list(native, o.tls12_ciphers.c_str()) != 1) {
    throw std::runtime_error("OpenSSL does not know the TLS 1.2 ciphers " + o.tls12_ciphers);
  }
  if (!o.verify) {
    ctx->set_verify_mode(ssl::verify_none);
    return ctx;
  }
  ctx->set_verify_mode(ssl::verify_peer);
  if (!o.cacert.empty()) {
    if (SSL_CTX_load_verify_locations(native, o.cacert.c_str(), nullptr) != 1) {
      throw UsageError("--cacert " + o.cacert + " is not a readable PEM CA bundle");
    }
  } else if (SSL_CTX_set_default_verify_paths(native) != 1) {
    throw std::runtime_error("cannot load the system CA store");
  }
  if (!o.extra_anchor.empty()) {
    // Trusting the server's own certificate file lets xksctl reach the proxy its
    // configuration describes when that proxy's private CA is not installed here;
    // doctor reports the public-CA question apart.
    if (SSL_CTX_load_verify_locations(native, o.extra_anchor.c_str(), nullptr) == 1) {
      X509_VERIFY_PARAM_set_flags(SSL_CTX_get0_param(native), X509_V_FLAG_PARTIAL_CHAIN);
    }
  }
  return ctx;
}

bool describes_endpoint(const config::Config& cfg, const Endpoint& ep) {
  if (!cfg.tls.enabled || !ep.tls) return false;
  const Endpoint listen = default_endpoint(cfg);
  if (ep.host == listen.host && ep.port == listen.port) return true;
  BIO* bio = BIO_new_file(cfg.tls.certificate.c_str(), "r");
  if (bio == nullptr) {
    ERR_clear_error();
    return false;
  }
  X509* leaf = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  bool match = false;
  if (leaf != nullptr) {
    match = is_ip_literal(ep.host)
                ? X509_check_ip_asc(leaf, ep.host.c_str(), 0) == 1
                : X509_check_host(leaf, ep.host.c_str(), ep.host.size(), 0, nullptr) == 1;
    X509_free(leaf);
  }
  ERR_clear_error();
  return match;
}

ClientTlsOptions client_trust(const config::Config& cfg, const Endpoint& ep,
                              const std::string& cacert) {
  ClientTlsOptions o;
  o.cacert = cacert;
  if (cacert.empty() && describes_endpoint(cfg, ep)) o.extra_anchor = cfg.tls.certificate.string();
  return o;
}

// --------------------------------------------------------------------- timing

std::string Timing::line() const {
  char buf[256];
  std::snprintf(
      buf, sizeof buf,
      "dns %.1f ms, connect %.1f ms, tls %.1f ms, request->response %.1f ms, total %.1f ms: %s",
      dns_ms, connect_ms, tls_ms, request_ms, total_ms,
      total_ms <= kKmsBudgetMs ? "within KMS's 250 ms budget" : "OVER KMS's 250 ms budget");
  return buf;
}

const char* to_string(TransportError::Stage stage) noexcept {
  switch (stage) {
    case TransportError::Stage::Dns: return "dns";
    case TransportError::Stage::Connect: return "connect";
    case TransportError::Stage::Tls: return "tls";
    case TransportError::Stage::Http: return "http";
  }
  return "?";
}

// ----------------------------------------------------------------- connection

struct Connection::Impl {
  Endpoint endpoint;
  std::shared_ptr<ssl::context> tls;
  std::chrono::milliseconds timeout;
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  beast::flat_buffer buffer;

  beast::tcp_stream& lowest() { return secure ? beast::get_lowest_layer(*secure) : *plain; }
};

Connection::Connection(Endpoint endpoint, std::shared_ptr<ssl::context> tls,
                       std::chrono::milliseconds timeout)
    : impl_(std::make_unique<Impl>()) {
  impl_->endpoint = std::move(endpoint);
  impl_->tls = std::move(tls);
  impl_->timeout = timeout;
}

Connection::~Connection() { close(); }

bool Connection::is_open() const noexcept {
  if (impl_->secure) return beast::get_lowest_layer(*impl_->secure).socket().is_open();
  return impl_->plain && impl_->plain->socket().is_open();
}

void Connection::close() noexcept {
  boost::system::error_code ignored;  // closing: nothing left to report to
  if (impl_->secure) beast::get_lowest_layer(*impl_->secure).socket().close(ignored);
  if (impl_->plain) impl_->plain->socket().close(ignored);
  impl_->secure.reset();
  impl_->plain.reset();
  impl_->buffer.clear();
}

asio::awaitable<void> Connection::connect(Timing& timing) {
  close();
  Impl& c = *impl_;
  const auto ex = co_await asio::this_coro::executor;
  const std::string where = c.endpoint.host + ":" + std::to_string(c.endpoint.port);

  auto t0 = Clock::now();
  tcp::resolver resolver(ex);
  auto [rec, results] =
      co_await resolver.async_resolve(c.endpoint.host, std::to_string(c.endpoint.port), kAwait);
  if (rec)
    throw TransportError(TransportError::Stage::Dns,
                         "cannot resolve " + c.endpoint.host + ": " + rec.message());
  timing.dns_ms = ms_since(t0);

  if (c.endpoint.tls) {
    if (!c.tls) throw std::logic_error("https endpoint without a TLS context");
    c.secure.emplace(ex, *c.tls);
  } else {
    c.plain.emplace(ex);
  }
  t0 = Clock::now();
  c.lowest().expires_after(c.timeout);
  auto [cec, peer] = co_await c.lowest().async_connect(results, kAwait);
  if (cec) {
    close();
    throw TransportError(TransportError::Stage::Connect,
                         "cannot connect to " + where + ": " + cec.message());
  }
  (void)peer;
  boost::system::error_code ignored;  // Nagle only costs latency; failing to disable it is harmless
  c.lowest().socket().set_option(tcp::no_delay(true), ignored);
  timing.connect_ms = ms_since(t0);

  if (c.secure) {
    SSL* ssl = c.secure->native_handle();
    const std::string& host = c.endpoint.host;
    if (is_ip_literal(host)) {
      X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), host.c_str());
    } else {
      // SNI (KMS always sends it) and the name the certificate must match.
      SSL_ctrl(ssl, SSL_CTRL_SET_TLSEXT_HOSTNAME, TLSEXT_NAMETYPE_host_name,
               const_cast<char*>(host.c_str()));
      SSL_set1_host(ssl, host.c_str());
    }
    t0 = Clock::now();
    c.lowest().expires_after(c.timeout);
    auto [hec] = co_await c.secure->async_handshake(ssl::stream_base::client, kAwait);
    if (hec) {
      std::string why = hec.message();
      const long vr = SSL_get_verify_result(ssl);
      if (vr != X509_V_OK)
        why = std::string("certificate verification failed: ") + X509_verify_cert_error_string(vr);
      close();
      throw TransportError(TransportError::Stage::Tls,
                           "TLS handshake with " + where + " failed: " + why);
    }
    timing.tls_ms = ms_since(t0);
  }
  c.lowest().expires_never();
}

asio::awaitable<Reply> Connection::send(http::request<http::string_body>& req, Timing& timing) {
  if (!is_open()) co_await connect(timing);
  Impl& c = *impl_;
  const auto t0 = Clock::now();
  req.keep_alive(true);
  req.prepare_payload();
  c.lowest().expires_after(c.timeout);
  boost::system::error_code ec;
  if (c.secure) {
    std::tie(ec, std::ignore) = co_await http::async_write(*c.secure, req, kAwait);
  } else {
    std::tie(ec, std::ignore) = co_await http::async_write(*c.plain, req, kAwait);
  }
  if (ec) {
    close();
    throw TransportError(TransportError::Stage::Http,
                         "sending the request failed: " + ec.message());
  }
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 * 1024 * 1024);
  if (c.secure) {
    std::tie(ec, std::ignore) = co_await http::async_read(*c.secure, c.buffer, parser, kAwait);
  } else {
    std::tie(ec, std::ignore) = co_await http::async_read(*c.plain, c.buffer, parser, kAwait);
  }
  if (ec) {
    close();
    throw TransportError(TransportError::Stage::Http,
                         "reading the response failed: " + ec.message());
  }
  timing.request_ms = ms_since(t0);
  auto res = parser.release();
  if (!res.keep_alive()) {
    close();
  } else {
    c.lowest().expires_never();
  }
  co_return Reply{res.result_int(), std::move(res.body()),
                  std::string(res[http::field::content_type])};
}

std::string Connection::negotiated() const {
  if (!impl_->secure) return "plain HTTP";
  const SSL* ssl = impl_->secure->native_handle();
  return std::string(SSL_get_version(ssl)) + " " + SSL_get_cipher_name(ssl);
}

std::string Connection::peer_chain_pem() const {
  if (!impl_->secure) return {};
  STACK_OF(X509)* chain = SSL_get_peer_cert_chain(impl_->secure->native_handle());
  if (chain == nullptr) return {};
  BIO* bio = BIO_new(BIO_s_mem());
  for (int i = 0; i < sk_X509_num(chain); ++i) PEM_write_bio_X509(bio, sk_X509_value(chain, i));
  char* data = nullptr;
  const long n = BIO_get_mem_data(bio, &data);
  std::string out(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return out;
}

// ------------------------------------------------------------------- requests

const char* to_string(Api api) noexcept {
  switch (api) {
    case Api::Health: return "health";
    case Api::Metadata: return "metadata";
    case Api::Encrypt: return "encrypt";
    case Api::Decrypt: return "decrypt";
  }
  return "?";
}

std::string api_target(const std::string& uri_path, Api api, const std::string& key) {
  if (api == Api::Health) return uri_path + "/health";
  return uri_path + "/keys/" + key + "/" + to_string(api);
}

nlohmann::json request_metadata(Api api, const std::string& region) {
  static constexpr const char* kOperations[] = {"KmsHealthCheck", "DescribeKey", "Encrypt",
                                                "Decrypt"};
  nlohmann::json rm = {{"kmsRequestId", uuid4()},
                       {"kmsOperation", kOperations[static_cast<int>(api)]}};
  if (api != Api::Health) {
    rm["awsPrincipalArn"] = "arn:aws:iam::111122223333:user/xksctl";
    rm["kmsKeyArn"] =
        "arn:aws:kms:" + region + ":111122223333:key/00000000-0000-4000-8000-000000000000";
  }
  return rm;
}

http::request<http::string_body> signed_post(const Endpoint& endpoint, const std::string& target,
                                             std::string body, const Signer& signer,
                                             std::chrono::system_clock::time_point now) {
  const std::string host = endpoint.host_header();
  auth::SignInput in;
  in.method = "POST";
  in.host = host;
  in.target = target;
  in.body = body;
  in.region = signer.region;
  in.access_key_id = signer.access_key_id;
  in.secret = signer.secret.view();
  in.now = now;
  const auth::SignedHeaders signed_headers = auth::sign(in);
  http::request<http::string_body> req{http::verb::post, target, 11};
  req.set(http::field::host, host);
  req.set(http::field::content_type, "application/json");
  req.set("X-Amz-Date", signed_headers.amz_date);
  req.set(http::field::authorization, signed_headers.authorization);
  req.set(http::field::user_agent, "xksctl");
  req.body() = std::move(body);
  return req;
}

}  // namespace xks::tools
