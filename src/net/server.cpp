#include "xks/net/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <stdexcept>

#include "xks/core/secure.hpp"
#include "xks/obs/log.hpp"

namespace xks::net {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// Errors that end a connection quietly: the peer went away or was too slow.
bool is_quiet_disconnect(const boost::system::error_code& ec) {
  return ec == http::error::end_of_stream || ec == beast::error::timeout ||
         ec == asio::error::eof || ec == asio::error::connection_reset ||
         ec == asio::error::operation_aborted || ec == asio::error::broken_pipe ||
         // A peer that closes without close_notify; harmless for us because every
         // message is length-delimited (Beast documents the same reasoning).
         ec == asio::ssl::error::stream_truncated;
}

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  return (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" +
         std::to_string(ep.port());
}

// RAII counter for open connections / requests in flight.
class Counted {
 public:
  explicit Counted(std::atomic<std::size_t>& c) : c_(c) { c_.fetch_add(1); }
  ~Counted() { c_.fetch_sub(1); }
  Counted(const Counted&) = delete;
  Counted& operator=(const Counted&) = delete;

 private:
  std::atomic<std::size_t>& c_;
};

}  // namespace

Server::Server(asio::io_context& ioc, config::Limits limits, TlsContextProvider* tls,
               RequestHandler& handler)
    : ioc_(ioc),
      acceptor_(asio::make_strand(ioc)),
      limits_(std::make_shared<const config::Limits>(limits)),
      tls_(tls),
      handler_(handler) {}

void Server::set_limits(const config::Limits& limits) {
  std::lock_guard lock(limits_mutex_);
  limits_ = std::make_shared<const config::Limits>(limits);
}

void Server::listen(const std::string& host, std::uint16_t port) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) throw std::runtime_error("server.listen: '" + host + "' is not an IP address");
  const tcp::endpoint endpoint(address, port);
  const auto where = endpoint_text(endpoint);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    throw std::runtime_error("server.listen: cannot listen on " + where + ": " + ec.message() +
                             (port < 1024 ? " (ports below 1024 need CAP_NET_BIND_SERVICE)" : ""));
  }
}

tcp::endpoint Server::local_endpoint() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void Server::start() {
  asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached);
}

void Server::stop_accepting() {
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;  // closing an already closed acceptor is fine
    acceptor_.close(ignored);
  });
}

asio::awaitable<void> Server::accept_loop() {
  for (;;) {
    // Each connection gets its own strand: its coroutine, its timers and the
    // HSM completions posted back to it never run concurrently.
    auto [ec, socket] = co_await acceptor_.async_accept(asio::make_strand(ioc_), kTuple);
    if (ec == asio::error::operation_aborted || !acceptor_.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: log, back off a little, keep accepting.
      obs::warn("accept_failed", {{"error", ec.message()}});
      asio::steady_timer pause(acceptor_.get_executor(), std::chrono::milliseconds(50));
      co_await pause.async_wait(kTuple);
      continue;
    }
    std::shared_ptr<const config::Limits> limits;
    {
      std::lock_guard lock(limits_mutex_);
      limits = limits_;
    }
    if (connections_.load() >= limits->max_connections) {
      obs::warn("connection_refused", {{"reason", "server.limits.max_connections reached"},
                                       {"max_connections", limits->max_connections}});
      boost::system::error_code ignored;  // the refused peer sees a reset
      socket.close(ignored);
      continue;
    }
    auto executor = socket.get_executor();
    asio::co_spawn(executor, run_connection(std::move(socket)), [](std::exception_ptr e) {
      if (!e) return;
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        obs::error("connection_failed", {{"error", ex.what()}});
      }
    });
  }
}

asio::awaitable<void> Server::run_connection(tcp::socket socket) {
  Counted counted(connections_);
  std::shared_ptr<const config::Limits> limits;
  {
    std::lock_guard lock(limits_mutex_);
    limits = limits_;
  }
  RequestContext ctx;
  {
    boost::system::error_code ec;
    ctx.peer = endpoint_text(socket.remote_endpoint(ec));
  }
  socket.set_option(tcp::no_delay(true));
  beast::tcp_stream stream(std::move(socket));

  if (tls_ == nullptr) {
    co_await serve_http(stream, *limits, ctx);
    boost::system::error_code ignored;  // the peer may already be gone
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    co_return;
  }

  // The connection keeps the context it started with, even across a reload.
  const auto tls_context = tls_->current();
  beast::ssl_stream<beast::tcp_stream> tls_stream(std::move(stream), *tls_context);
  ctx.tls = true;
  beast::get_lowest_layer(tls_stream).expires_after(limits->handshake_timeout);
  auto [ec] = co_await tls_stream.async_handshake(asio::ssl::stream_base::server, kTuple);
  if (ec) {
    if (!is_quiet_disconnect(ec)) {
      obs::info("tls_handshake_failed", {{"peer", ctx.peer}, {"reason", ec.message()}});
    }
    co_return;
  }
  co_await serve_http(tls_stream, *limits, ctx);
  beast::get_lowest_layer(tls_stream).expires_after(std::chrono::seconds(2));
  // close_notify; failures only mean the peer left first.
  co_await tls_stream.async_shutdown(kTuple);
}

template <class Stream>
asio::awaitable<void> Server::serve_http(Stream& stream, const config::Limits& limits,
                                         RequestContext ctx) {
  auto& tcp_layer = beast::get_lowest_layer(stream);
  beast::flat_buffer buffer;
  unsigned served = 0;
  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);

    // The first request must come promptly; later ones may idle in keep-alive.
    // The limit covers the whole header read, so a slowloris client is cut off.
    tcp_layer.expires_after(served == 0 ? limits.header_timeout : limits.idle_timeout);
    auto [ec, bytes] = co_await http::async_read_header(stream, buffer, parser, kTuple);
    if (ec) {
      if (is_quiet_disconnect(ec)) co_return;
      Error err = ec == http::error::header_limit
                      ? make_error(ErrorName::ValidationException,
                                   "request headers exceed " +
                                       std::to_string(limits.max_header_bytes) + " bytes")
                      : make_error(ErrorName::ValidationException,
                                   "malformed HTTP request: " + ec.message());
      auto res = handler_.error_response(err, 11);
      res.keep_alive(false);
      tcp_layer.expires_after(limits.write_timeout);
      co_await http::async_write(stream, res, kTuple);
      co_return;
    }
    ctx.arrival = core::SteadyClock::now();

    // curl sends "Expect: 100-continue" for larger bodies and waits up to a
    // second for this before sending the body.
    if (parser.get()[http::field::expect] == "100-continue") {
      http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
      tcp_layer.expires_after(limits.write_timeout);
      auto [wec, wn] = co_await http::async_write(stream, cont, kTuple);
      if (wec) co_return;
    }
    if (!parser.is_done()) {
      tcp_layer.expires_after(limits.body_timeout);
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (bec) {
        if (is_quiet_disconnect(bec)) co_return;
        Error err = bec == http::error::body_limit
                        ? make_error(ErrorName::UnsupportedOperationException,
                                     "request body exceeds the supported " +
                                         std::to_string(limits.max_body_bytes) + " bytes")
                        : make_error(ErrorName::ValidationException,
                                     "malformed HTTP request body: " + bec.message());
        auto res = handler_.error_response(err, parser.get().version());
        res.keep_alive(false);
        tcp_layer.expires_after(limits.write_timeout);
        co_await http::async_write(stream, res, kTuple);
        co_return;
      }
    }
    tcp_layer.expires_never();  // the handler's own deadline bounds it

    Request request = parser.release();
    Response response;
    {
      Counted in_flight(in_flight_);
      try {
        response = co_await handler_.handle(request, ctx);
      } catch (const std::exception& e) {
        obs::error("request_failed", {{"peer", ctx.peer}, {"error", e.what()}});
        response = handler_.error_response(
            make_error(ErrorName::InternalException, "internal error; see the proxy's log"),
            request.version());
      }
    }
    // The request body may hold plaintext (Encrypt).
    secure_wipe(request.body().data(), request.body().size());
    ++served;
    const bool keep_alive = request.keep_alive() && !draining_.load() &&
                            (limits.max_requests_per_connection == 0 ||
                             served < limits.max_requests_per_connection);
    response.keep_alive(keep_alive);
    response.prepare_payload();
    tcp_layer.expires_after(limits.write_timeout);
    auto [wec, wn] = co_await http::async_write(stream, response, kTuple);
    // The response body may hold plaintext (Decrypt).
    secure_wipe(response.body().data(), response.body().size());
    if (wec || !keep_alive) co_return;
  }
}

}  // namespace xks::net
