#include "xks/app/metrics_endpoint.hpp"

#include <boost/asio/ip/address.hpp>
#include <boost/beast/http/field.hpp>
#include <boost/beast/http/status.hpp>
#include <boost/beast/http/verb.hpp>
#include <charconv>

#include "xks/config/config.hpp"
#include "xks/net/server.hpp"

namespace xks::app {
namespace asio = boost::asio;
namespace http = boost::beast::http;

namespace {

constexpr std::string_view kExpositionType = "text/plain; version=0.0.4; charset=utf-8";
constexpr std::string_view kTextType = "text/plain; charset=utf-8";
constexpr std::size_t kMaxHeaderBytes = 8 * 1024;  // a scrape request is a few hundred

// A scrape is a bodiless GET: a request with a body is refused, and the
// connection is closed after the answer.
net::Limits scrape_limits(const MetricsEndpoint::Options& o) {
  net::Limits l;
  l.max_body_bytes = 0;
  l.max_header_bytes = kMaxHeaderBytes;
  l.max_header_count = 128;
  l.max_connections = static_cast<unsigned>(o.max_connections);
  l.max_requests_per_connection = 0;
  l.header_timeout = o.request_timeout;
  l.body_timeout = o.request_timeout;
  // A scraper never carries a SigV4-verified request: every connection stays
  // "unauthenticated", waits this long between requests and may be evicted
  // when the listener is full.
  l.unauthenticated_idle_timeout = o.idle_timeout;
  l.idle_timeout = o.idle_timeout;
  l.write_timeout = o.write_timeout;
  l.max_unauthenticated_per_source = 0;
  return l;
}

net::Response text_response(http::status status, unsigned version, std::string body) {
  net::Response res{status, version};
  res.set(http::field::content_type, kTextType);
  res.body() = std::move(body);
  return res;
}

}  // namespace

struct MetricsEndpoint::Impl final : net::RequestHandler {
  Impl(asio::io_context& ioc, const obs::Registry& r, const Options& o)
      : registry(r),
        options(o),
        settings(std::make_shared<const net::ConnectionSettings>(
            net::ConnectionSettings{scrape_limits(o), nullptr})),
        server(
            ioc, [this] { return settings; }, *this) {
    server.set_log_client_faults(false);
  }

  asio::awaitable<net::Response> handle(net::Request& req, net::RequestContext&) override {
    co_return respond(req);
  }

  net::Response respond(const net::Request& req) const {
    auto target = std::string_view(req.target());
    target = target.substr(0, target.find('?'));  // scrapers may add parameters
    if (target != "/metrics") {
      return text_response(http::status::not_found, req.version(), "not found\n");
    }
    if (req.method() != http::verb::get && req.method() != http::verb::head) {
      auto res =
          text_response(http::status::method_not_allowed, req.version(), "method not allowed\n");
      res.set(http::field::allow, "GET");
      return res;
    }
    // HEAD gets the same header fields; the server sends no body for it.
    net::Response res{http::status::ok, req.version()};
    res.set(http::field::content_type, kExpositionType);
    res.body() = registry.render();
    return res;
  }

  // Malformed, oversized or bodied requests: answered, then the connection closes.
  net::Response error_response(const Error&, unsigned http_version) override {
    return text_response(http::status::bad_request, http_version, "bad request\n");
  }

  const obs::Registry& registry;
  const Options options;
  const std::shared_ptr<const net::ConnectionSettings> settings;  // plain HTTP
  net::Server server;
};

MetricsEndpoint::MetricsEndpoint(asio::io_context& ioc, const obs::Registry& registry,
                                 Options options)
    : impl_(std::make_unique<Impl>(ioc, registry, options)) {}

MetricsEndpoint::~MetricsEndpoint() { stop(); }

void MetricsEndpoint::start() {
  impl_->server.listen(impl_->options.host, impl_->options.port, "metrics.listen");
  port_ = impl_->server.local_endpoint().port();
  impl_->server.start();
}

void MetricsEndpoint::stop() {
  if (stopped_.exchange(true)) return;
  impl_->server.stop_accepting();
  impl_->server.close_connections();
}

std::optional<std::pair<std::string, std::uint16_t>> parse_listen_address(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // bare IPv6: needs [ ]
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec || (text.starts_with('[') != address.is_v6())) return std::nullopt;
  unsigned value = 0;
  const auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || err != std::errc{} || end != port.data() + port.size() || value > 65535) {
    return std::nullopt;
  }
  return std::pair{std::string(host), static_cast<std::uint16_t>(value)};
}

}  // namespace xks::app
