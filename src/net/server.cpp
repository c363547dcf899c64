#include "xks/net/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <array>
#include <cstring>
#include <functional>
#include <stdexcept>
#include <type_traits>
#include <vector>

#include "xks/core/result.hpp"
#include "xks/core/secure.hpp"
#include "xks/net/tls_stream.hpp"
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

obs::TlsHandshakeResult classify_handshake(SSL* ssl, const boost::system::error_code& ec) {
  if (!ec) return obs::TlsHandshakeResult::Ok;
  if (ec == beast::error::timeout) return obs::TlsHandshakeResult::Timeout;
  if (SSL_get_verify_result(ssl) != X509_V_OK) return obs::TlsHandshakeResult::Certificate;
  if (ec.category() == asio::error::get_ssl_category()) {
    return ec.message().find("certificate") != std::string::npos
               ? obs::TlsHandshakeResult::Certificate
               : obs::TlsHandshakeResult::Protocol;
  }
  return obs::TlsHandshakeResult::Other;
}

std::string_view as_view(const ConnectionBuffer& b) {
  return {static_cast<const char*>(b.data().data()), b.size()};
}

}  // namespace

void wipe_consumed(ConnectionBuffer& buffer) noexcept {
  // flat_buffer keeps consumed bytes in its storage until they are overwritten.
  // Move the readable bytes aside, wipe the whole storage, put them back.
  const std::size_t pending = buffer.size();
  std::array<char, 4096> small;
  std::vector<char> large;
  char* keep = small.data();
  if (pending > small.size()) {
    try {
      large.resize(pending);
    } catch (...) {
      return;  // no memory: the bytes stay until overwritten
    }
    keep = large.data();
  }
  if (pending != 0) std::memcpy(keep, buffer.data().data(), pending);
  buffer.clear();
  const auto all = buffer.prepare(buffer.capacity());  // no reallocation after clear()
  secure_wipe(all.data(), all.size());
  if (pending != 0) {
    std::memcpy(buffer.prepare(pending).data(), keep, pending);
    buffer.commit(pending);
    secure_wipe(keep, pending);
  }
}

namespace {

// Reads the request head (request line and header fields) into `parser`.
// Beast's parser accepts obsolete line folding and any Transfer-Encoding; a
// proxy in front of an HSM has no use for either and every reason to refuse
// them (request smuggling), so the raw head is checked before Beast parses it.
// Errors: ValidationException to answer with 400 and close; InternalException
// when the peer went away or timed out (close quietly).
template <class Stream>
asio::awaitable<Result<void>> read_request_head(Stream& stream, ConnectionBuffer& buffer,
                                                http::request_parser<http::string_body>& parser,
                                                const config::Limits& limits) {
  constexpr std::string_view kEnd = "\r\n\r\n";
  std::size_t searched = 0;
  for (;;) {
    const auto data = as_view(buffer);
    const auto end = data.find(kEnd, searched);
    if (end != std::string_view::npos) {
      const auto head = data.substr(0, end + 2);  // keep the last CRLF
      if (head.find("\r\n ") != std::string_view::npos ||
          head.find("\r\n\t") != std::string_view::npos) {
        co_return make_error(ErrorName::ValidationException,
                             "obsolete header line folding is not accepted");
      }
      break;
    }
    if (data.size() > limits.max_header_bytes) {
      co_return make_error(ErrorName::ValidationException,
                           "request headers exceed " + std::to_string(limits.max_header_bytes) +
                               " bytes (server.limits.max_header_bytes)");
    }
    searched = data.size() < kEnd.size() ? 0 : data.size() - kEnd.size() + 1;
    auto [ec, n] = co_await stream.async_read_some(buffer.prepare(4096), kTuple);
    if (ec) {
      // A client that never sends a request (or closes between keep-alive
      // requests) is not an error worth a response.
      co_return make_error(ErrorName::InternalException, "connection closed: " + ec.message());
    }
    buffer.commit(n);
  }
  boost::system::error_code ec;
  const auto used = parser.put(buffer.data(), ec);
  buffer.consume(used);
  if (ec == http::error::header_limit) {
    co_return make_error(ErrorName::ValidationException,
                         "request headers exceed " + std::to_string(limits.max_header_bytes) +
                             " bytes (server.limits.max_header_bytes)");
  }
  if (ec == http::error::body_limit) {
    // A Content-Length above the limit is refused before reading the body.
    co_return make_error(ErrorName::UnsupportedOperationException,
                         "request body exceeds the supported " +
                             std::to_string(limits.max_body_bytes) +
                             " bytes (server.limits.max_body_bytes)");
  }
  if (ec || !parser.is_header_done()) {
    co_return make_error(ErrorName::ValidationException,
                         "malformed HTTP request: " + (ec ? ec.message() : "incomplete head"));
  }
  const auto& req = parser.get();
  if (req.count(http::field::transfer_encoding) != 0) {
    co_return make_error(ErrorName::ValidationException,
                         "Transfer-Encoding is not accepted; send the body with Content-Length");
  }
  const auto fields = static_cast<std::size_t>(std::distance(req.begin(), req.end()));
  if (fields > limits.max_header_count) {
    co_return make_error(ErrorName::ValidationException,
                         "request has " + std::to_string(fields) + " header fields, more than " +
                             std::to_string(limits.max_header_count) +
                             " (server.limits.max_header_count)");
  }
  co_return Result<void>{};
}

}  // namespace

Server::Server(asio::io_context& ioc, config::Limits limits, TlsContextProvider* tls,
               RequestHandler& handler, obs::Metrics* metrics,
               std::vector<asio::io_context*> connection_contexts)
    : ioc_(ioc),
      connection_contexts_(std::move(connection_contexts)),
      acceptor_(asio::make_strand(ioc)),
      limits_(std::make_shared<const config::Limits>(limits)),
      tls_(tls),
      handler_(handler),
      metrics_(metrics) {}

// What a drain needs to know about a connection: whether it is between
// requests with nothing received, and how to close it. Touched only on the
// connection's executor (the drain posts its check there).
struct Server::Connection {
  asio::any_io_executor executor;
  bool open = true;                       // false once serve_http has returned
  bool between_requests = false;          // waiting for a request head
  std::function<bool()> input_pending;    // bytes received but not yet parsed
  std::function<void()> close;            // ends the pending read
};

void Server::begin_drain() {
  draining_.store(true);
  std::lock_guard lock(registry_mutex_);
  for (const auto& connection : registry_) {
    asio::post(connection->executor, [connection] {
      if (connection->open && connection->between_requests && !connection->input_pending()) {
        connection->close();
      }
    });
  }
}

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
    // A connection's coroutine, its timers and the HSM completions posted back
    // to it never run concurrently: its io_context has one thread, or it gets
    // its own strand.
    asio::any_io_executor where =
        connection_contexts_.empty()
            ? asio::any_io_executor(asio::make_strand(ioc_))
            : asio::any_io_executor(
                  connection_contexts_[next_context_++ % connection_contexts_.size()]
                      ->get_executor());
    auto [ec, socket] = co_await acceptor_.async_accept(where, kTuple);
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
  struct MetricsConnection {
    explicit MetricsConnection(obs::Metrics* m) : m_(m) {
      if (m_) m_->connection_opened();
    }
    ~MetricsConnection() {
      if (m_) m_->connection_closed();
    }
    MetricsConnection(const MetricsConnection&) = delete;
    MetricsConnection& operator=(const MetricsConnection&) = delete;
    obs::Metrics* m_;
  } metrics_connection(metrics_);
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

  if (tls_ == nullptr) {
    beast::tcp_stream stream(std::move(socket));
    co_await serve_http(stream, *limits, ctx);
    boost::system::error_code ignored;  // the peer may already be gone
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    co_return;
  }

  // The connection keeps the context it started with, even across a reload.
  const auto tls_context = tls_->current();
  TlsStream tls_stream(std::move(socket), *tls_context);
  ctx.tls = true;
  tls_stream.expires_after(limits->handshake_timeout);
  auto [ec] = co_await tls_stream.async_handshake(kTuple);
  if (metrics_) metrics_->record_tls_handshake(classify_handshake(tls_stream.native_handle(), ec));
  if (ec) {
    if (!is_quiet_disconnect(ec) || ec == beast::error::timeout) {
      obs::info("tls_handshake_failed",
                {{"peer", ctx.peer},
                 {"reason", ec == beast::error::timeout
                                ? std::string("handshake not completed within "
                                              "server.limits.handshake_timeout_ms")
                                : describe_handshake_failure(tls_stream.native_handle(), ec)}});
    }
    co_return;
  }
  ctx.client_subject = peer_subject(tls_stream.native_handle());
  ctx.client_cn = peer_common_name(tls_stream.native_handle());
  co_await serve_http(tls_stream, *limits, ctx);
  tls_stream.expires_after(std::chrono::seconds(2));
  // close_notify; failures only mean the peer left first.
  co_await tls_stream.async_shutdown(kTuple);
}

template <class Stream>
asio::awaitable<void> Server::reject_and_close(Stream& stream, const Error& error,
                                               unsigned http_version,
                                               const config::Limits& limits) {
  obs::info("request_rejected", {{"outcome", to_string(error.name)}, {"errorMessage", error.message}});
  auto res = handler_.error_response(error, http_version);
  res.keep_alive(false);
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(limits.write_timeout);
  // Best effort: the connection is closed whatever happens.
  co_await http::async_write(stream, res, kTuple);
}

template <class Stream>
asio::awaitable<void> Server::serve_http(Stream& stream, const config::Limits& limits,
                                         RequestContext ctx) {
  auto& tcp_layer = beast::get_lowest_layer(stream);
  ConnectionBuffer buffer;
  unsigned served = 0;

  // Registered for the drain: between requests with nothing received means
  // an empty buffer, no bytes waiting in the socket and, with TLS, no part of
  // a record inside OpenSSL.
  auto self = std::make_shared<Connection>();
  self->executor = tcp_layer.socket().get_executor();
  self->input_pending = [&buffer, &tcp_layer, &stream] {
    boost::system::error_code ec;
    if (buffer.size() != 0 || tcp_layer.socket().available(ec) != 0) return true;
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      return SSL_has_pending(stream.native_handle()) == 1;
    }
    return false;
  };
  self->close = [&tcp_layer] {
    boost::system::error_code ignored;
    tcp_layer.socket().cancel(ignored);
  };
  std::list<std::shared_ptr<Connection>>::iterator registered;
  {
    std::lock_guard lock(registry_mutex_);
    registered = registry_.insert(registry_.end(), self);
  }
  struct Unregister {
    Server& server;
    std::list<std::shared_ptr<Connection>>::iterator it;
    std::shared_ptr<Connection> connection;
    ~Unregister() {
      // A drain check may still be queued: it must not touch the stream.
      connection->open = false;
      std::lock_guard lock(server.registry_mutex_);
      server.registry_.erase(it);
    }
  } unregister{*this, registered, self};

  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);

    // Draining: a connection with nothing received closes instead of waiting
    // (a drain that started while this one was busy did not close it).
    if (draining_.load() && !self->input_pending()) co_return;
    // The first request must come promptly; later ones may idle in keep-alive.
    // The limit covers the whole header read, so a slowloris client is cut off.
    tcp_layer.expires_after(served == 0 ? limits.header_timeout : limits.idle_timeout);
    self->between_requests = true;
    auto head = co_await read_request_head(stream, buffer, parser, limits);
    self->between_requests = false;
    if (!head) {
      if (head.error().name == ErrorName::InternalException) co_return;  // peer gone
      co_await reject_and_close(stream, head.error(), 11, limits);
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
        co_await reject_and_close(stream, err, parser.get().version(), limits);
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
    // The request body may hold plaintext (Encrypt), and so may the bytes of it
    // the read buffer still holds.
    secure_wipe(request.body().data(), request.body().size());
    wipe_consumed(buffer);
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
