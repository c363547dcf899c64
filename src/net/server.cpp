#include "xks/net/server.hpp"

#include <algorithm>
#include <array>
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
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/write.hpp>
#include <cstring>
#include <functional>
#include <limits>
#include <stdexcept>
#include <tuple>
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

// Per cause of a client-caused log line: this many lines per period, then one
// summary line per period with the count held back.
constexpr unsigned kLogBurst = 20;
constexpr auto kLogPeriod = std::chrono::seconds(10);

enum class Trust : std::uint8_t { Handshake, Unauthenticated, Authenticated };

std::int64_t ticks_now() { return core::SteadyClock::now().time_since_epoch().count(); }

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

TlsHandshakeResult classify_handshake(SSL* ssl, const boost::system::error_code& ec) {
  if (!ec) return TlsHandshakeResult::Ok;
  if (ec == beast::error::timeout) return TlsHandshakeResult::Timeout;
  if (SSL_get_verify_result(ssl) != X509_V_OK) return TlsHandshakeResult::Certificate;
  if (ec.category() == asio::error::get_ssl_category()) {
    return ec.message().find("certificate") != std::string::npos ? TlsHandshakeResult::Certificate
                                                                 : TlsHandshakeResult::Protocol;
  }
  return TlsHandshakeResult::Other;
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
                                                const Limits& limits) {
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
  // RFC 9112 section 3.2: an HTTP/1.1 request carries exactly one Host field
  // (HTTP/1.0 may omit it); anything else is answered 400.
  const auto hosts = req.count(http::field::host);
  if (hosts > 1) {
    co_return make_error(ErrorName::ValidationException,
                         "request has " + std::to_string(hosts) +
                             " Host header fields; exactly one is allowed (RFC 9112 section 3.2)");
  }
  if (hosts == 0 && req.version() >= 11) {
    co_return make_error(ErrorName::ValidationException,
                         "HTTP/1.1 request without a Host header field (RFC 9112 section 3.2)");
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

Server::Server(asio::io_context& ioc, ConnectionSettingsSource settings, RequestHandler& handler,
               ServerEvents* events, std::vector<asio::io_context*> connection_contexts)
    : ioc_(ioc),
      connection_contexts_(std::move(connection_contexts)),
      acceptor_(asio::make_strand(ioc)),
      settings_(std::move(settings)),
      handler_(handler),
      events_(events),
      log_limiter_(kDropCauseCount, kLogBurst, kLogPeriod),
      summary_timer_(acceptor_.get_executor()) {}

// What a drain and an eviction need to know about a connection. The atomics
// are read by the accept loop; everything else is touched only on the
// connection's executor (drains and evictions post their work there).
struct Server::Connection {
  asio::any_io_executor executor;
  asio::ip::address source;
  std::string peer;  // "ip:port", for log lines
  std::atomic<Trust> trust{Trust::Handshake};
  std::atomic<bool> busy{false};            // a request is being handled or answered
  std::atomic<std::int64_t> idle_since{0};  // steady-clock ticks: accept or last response
  std::atomic<bool> evicting{false};        // chosen for eviction; not chosen again
  bool open = false;                        // the stream exists and `close` may be called
  bool evicted = false;                     // closed to make room
  bool between_requests = false;            // waiting for a request head
  std::function<bool()> input_pending;      // bytes received but not yet parsed
  std::function<void()> close;              // ends the pending operation
};

void Server::begin_drain() {
  draining_.store(true);
  std::lock_guard lock(registry_mutex_);
  for (const auto& connection : registry_) {
    asio::post(connection->executor, [connection] {
      if (connection->open && connection->between_requests && connection->input_pending &&
          !connection->input_pending()) {
        connection->close();
      }
    });
  }
}

void Server::close_connections() {
  draining_.store(true);
  std::lock_guard lock(registry_mutex_);
  for (const auto& connection : registry_) {
    asio::post(connection->executor, [connection] {
      if (connection->open && connection->close) connection->close();
    });
  }
}

bool Server::evict_idlest_unauthenticated() {
  std::shared_ptr<Connection> victim;
  {
    std::lock_guard lock(registry_mutex_);
    std::int64_t oldest = std::numeric_limits<std::int64_t>::max();
    for (const auto& c : registry_) {
      if (c->trust.load() == Trust::Authenticated || c->busy.load() || c->evicting.load()) {
        continue;
      }
      const auto since = c->idle_since.load();
      if (since < oldest) {
        oldest = since;
        victim = c;
      }
    }
    if (!victim) return false;
    victim->evicting.store(true);
  }
  asio::post(victim->executor, [this, victim] {
    // Re-checked on the connection's executor: it may have started serving a
    // request or been promoted since it was chosen.
    if (!victim->open || victim->busy.load() || victim->trust.load() == Trust::Authenticated) {
      victim->evicting.store(false);
      return;
    }
    victim->evicted = true;
    record_drop(
        DropCause::Evicted, obs::Level::Info, "connection_evicted",
        {{"peer", victim->peer},
         {"stage", victim->trust.load() == Trust::Handshake ? "tls_handshake" : "unauthenticated"},
         {"reason",
          "server.limits.max_connections reached; the idlest connection "
          "without a verified request makes room"}});
    victim->close();
  });
  return true;
}

void Server::promote(Connection& connection) {
  std::lock_guard lock(registry_mutex_);
  if (connection.trust.exchange(Trust::Authenticated) == Trust::Authenticated) return;
  const auto it = unauthenticated_by_source_.find(connection.source);
  if (it != unauthenticated_by_source_.end() && --it->second == 0) {
    unauthenticated_by_source_.erase(it);
  }
}

void Server::record_drop(DropCause cause, obs::Level level, std::string_view event,
                         const nlohmann::json& fields) {
  if (events_) events_->on_connection_dropped(cause);
  if (log_client_faults_ && log_limiter_.admit(static_cast<std::size_t>(cause))) {
    obs::log(level, event, fields);
  }
}

asio::awaitable<void> Server::summary_loop() {
  for (;;) {
    summary_timer_.expires_after(log_limiter_.period());
    auto [ec] = co_await summary_timer_.async_wait(kTuple);
    for (const auto& [cause, count] : log_limiter_.take_suppressed()) {
      obs::warn(
          "log_lines_suppressed",
          {{"cause", to_string(static_cast<DropCause>(cause))},
           {"suppressed", count},
           {"periodMs",
            std::chrono::duration_cast<std::chrono::milliseconds>(log_limiter_.period()).count()},
           {"reason",
            "more than " + std::to_string(kLogBurst) + " lines of this cause in one period"}});
    }
    if (ec || !acceptor_.is_open()) co_return;
  }
}

void Server::listen(const std::string& host, std::uint16_t port, std::string_view setting) {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(host, ec);
  if (ec) {
    throw std::runtime_error(std::string(setting) + ": '" + host + "' is not an IP address");
  }
  const tcp::endpoint endpoint(address, port);
  const auto where = endpoint_text(endpoint);
  acceptor_.open(endpoint.protocol(), ec);
  if (!ec) acceptor_.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_.bind(endpoint, ec);
  if (!ec) acceptor_.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;  // nothing to keep after a failed bind
    acceptor_.close(ignored);
    throw std::runtime_error(std::string(setting) + ": cannot listen on " + where + ": " +
                             ec.message() +
                             (port < 1024 ? " (ports below 1024 need CAP_NET_BIND_SERVICE)" : ""));
  }
}

tcp::endpoint Server::local_endpoint() const {
  boost::system::error_code ec;
  return acceptor_.local_endpoint(ec);
}

void Server::start() {
  asio::co_spawn(acceptor_.get_executor(), accept_loop(), asio::detached);
  asio::co_spawn(acceptor_.get_executor(), summary_loop(), asio::detached);
}

void Server::stop_accepting() {
  asio::post(acceptor_.get_executor(), [this] {
    boost::system::error_code ignored;  // closing an already closed acceptor is fine
    acceptor_.close(ignored);
    summary_timer_.cancel();
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
    const auto settings = settings_();
    const Limits* const limits = &settings->limits;
    boost::system::error_code peer_ec;
    const auto peer = socket.remote_endpoint(peer_ec);
    auto refuse = [&](tcp::socket& refused, DropCause cause, std::string reason,
                      nlohmann::json extra) {
      extra["reason"] = std::move(reason);
      extra["peer"] = peer_ec ? std::string("-") : endpoint_text(peer);
      record_drop(cause, obs::Level::Warn, "connection_refused", extra);
      boost::system::error_code ignored;  // the refused peer sees a reset
      refused.close(ignored);
    };
    if (peer_ec) {
      // The peer reset the connection before it could be looked at.
      boost::system::error_code ignored;
      socket.close(ignored);
      continue;
    }
    auto self = std::make_shared<Connection>();
    self->executor = where;
    self->source = peer.address();
    self->peer = endpoint_text(peer);
    self->idle_since.store(ticks_now());
    bool source_full = false;
    std::size_t registered = 0;  // open connections, counted from accept on
    {
      std::lock_guard lock(registry_mutex_);
      registered = registry_.size();
      const auto it = unauthenticated_by_source_.find(self->source);
      source_full = limits->max_unauthenticated_per_source != 0 &&
                    it != unauthenticated_by_source_.end() &&
                    it->second >= limits->max_unauthenticated_per_source;
    }
    if (source_full) {
      refuse(socket, DropCause::RefusedPerSource,
             "server.limits.max_unauthenticated_per_source reached for this address",
             {{"max_unauthenticated_per_source", limits->max_unauthenticated_per_source}});
      continue;
    }
    // At the limit, the idlest connection that has not proven itself makes
    // room; an authenticated one, or one being served, is never closed for it.
    if (registered >= limits->max_connections && !evict_idlest_unauthenticated()) {
      refuse(socket, DropCause::RefusedMaxConnections,
             "server.limits.max_connections reached and every connection is authenticated or busy",
             {{"max_connections", limits->max_connections}});
      continue;
    }
    {
      std::lock_guard lock(registry_mutex_);
      ++unauthenticated_by_source_[self->source];
      registry_.push_back(self);
    }
    auto executor = socket.get_executor();
    asio::co_spawn(executor, run_connection(std::move(socket), std::move(self)),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       obs::error("connection_failed", {{"error", ex.what()}});
                     }
                   });
  }
}

asio::awaitable<void> Server::run_connection(tcp::socket socket, std::shared_ptr<Connection> self) {
  // Leaves the registry (and the per-source count) however the coroutine ends.
  struct Unregister {
    Server& server;
    std::shared_ptr<Connection> connection;
    ~Unregister() {
      std::lock_guard lock(server.registry_mutex_);
      if (connection->trust.load() != Trust::Authenticated) {
        const auto it = server.unauthenticated_by_source_.find(connection->source);
        if (it != server.unauthenticated_by_source_.end() && --it->second == 0) {
          server.unauthenticated_by_source_.erase(it);
        }
      }
      server.registry_.remove(connection);
    }
  } unregister{*this, self};
  // A drain or eviction still queued must not touch the stream once it is gone.
  struct Closable {
    Connection& connection;
    Closable(Connection& c, tcp::socket& socket) : connection(c) {
      connection.close = [&socket] {
        boost::system::error_code ignored;  // a socket already closed is fine
        socket.cancel(ignored);
      };
      connection.open = true;
    }
    ~Closable() {
      connection.open = false;
      connection.close = nullptr;
      connection.input_pending = nullptr;
    }
    Closable(const Closable&) = delete;
    Closable& operator=(const Closable&) = delete;
  };
  Counted counted(connections_);
  struct Reported {
    explicit Reported(ServerEvents* e) : e_(e) {
      if (e_) e_->on_connection_opened();
    }
    ~Reported() {
      if (e_) e_->on_connection_closed();
    }
    Reported(const Reported&) = delete;
    Reported& operator=(const Reported&) = delete;
    ServerEvents* e_;
  } reported(events_);
  // Limits and TLS context from one snapshot, kept to the end of the connection.
  const auto settings = settings_();
  const Limits* const limits = &settings->limits;
  RequestContext ctx;
  {
    boost::system::error_code ec;
    ctx.peer = endpoint_text(socket.remote_endpoint(ec));
  }
  socket.set_option(tcp::no_delay(true));

  if (settings->tls == nullptr) {
    beast::tcp_stream stream(std::move(socket));
    Closable closable(*self, stream.socket());
    self->trust.store(Trust::Unauthenticated);
    co_await serve_http(stream, *limits, ctx, *self);
    boost::system::error_code ignored;  // the peer may already be gone
    stream.socket().shutdown(tcp::socket::shutdown_send, ignored);
    co_return;
  }

  // The connection keeps the context it started with, even across a reload.
  TlsStream tls_stream(std::move(socket), *settings->tls);
  Closable closable(*self, tls_stream.socket());
  ctx.tls = true;
  tls_stream.expires_after(limits->handshake_timeout);
  auto [ec] = co_await tls_stream.async_handshake(kTuple);
  if (self->evicted) co_return;
  if (events_) events_->on_tls_handshake(classify_handshake(tls_stream.native_handle(), ec));
  if (ec) {
    if (ec == beast::error::timeout) {
      record_drop(
          DropCause::HandshakeTimeout, obs::Level::Info, "tls_handshake_failed",
          {{"peer", ctx.peer},
           {"reason", "handshake not completed within server.limits.handshake_timeout_ms"}});
    } else if (!is_quiet_disconnect(ec)) {
      record_drop(DropCause::HandshakeFailed, obs::Level::Info, "tls_handshake_failed",
                  {{"peer", ctx.peer},
                   {"reason", describe_handshake_failure(tls_stream.native_handle(), ec)}});
    }
    co_return;
  }
  ctx.client_subject = peer_subject(tls_stream.native_handle());
  self->trust.store(Trust::Unauthenticated);
  ctx.client_cn = peer_common_name(tls_stream.native_handle());
  co_await serve_http(tls_stream, *limits, ctx, *self);
  tls_stream.expires_after(std::chrono::seconds(2));
  // close_notify; failures only mean the peer left first.
  co_await tls_stream.async_shutdown(kTuple);
}

template <class Stream>
asio::awaitable<void> Server::reject_and_close(Stream& stream, const Error& error,
                                               unsigned http_version, const Limits& limits) {
  if (log_client_faults_) {
    obs::info("request_rejected",
              {{"outcome", to_string(error.name)}, {"errorMessage", error.message}});
  }
  auto res = handler_.error_response(error, http_version);
  res.keep_alive(false);
  res.prepare_payload();
  beast::get_lowest_layer(stream).expires_after(limits.write_timeout);
  // Best effort: the connection is closed whatever happens.
  co_await http::async_write(stream, res, kTuple);
}

template <class Stream>
asio::awaitable<void> Server::serve_http(Stream& stream, const Limits& limits, RequestContext ctx,
                                         Connection& self) {
  auto& tcp_layer = beast::get_lowest_layer(stream);
  ConnectionBuffer buffer;
  unsigned served = 0;

  // For the drain: between requests with nothing received means an empty
  // buffer, no bytes waiting in the socket and, with TLS, no part of a record
  // inside OpenSSL.
  self.input_pending = [&buffer, &tcp_layer, &stream] {
    boost::system::error_code ec;
    if (buffer.size() != 0 || tcp_layer.socket().available(ec) != 0) return true;
    if constexpr (std::is_same_v<Stream, TlsStream>) {
      return SSL_has_pending(stream.native_handle()) == 1;
    } else {
      (void)stream;  // plain TCP: nothing is held in a TLS layer
    }
    return false;
  };
  struct ForgetInput {  // `buffer` dies with this frame
    Connection& c;
    ~ForgetInput() { c.input_pending = nullptr; }
  } forget_input{self};

  for (;;) {
    http::request_parser<http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(limits.max_header_bytes));
    parser.body_limit(limits.max_body_bytes);

    // Draining: a connection with nothing received closes instead of waiting
    // (a drain that started while this one was busy did not close it).
    if (draining_.load() && !self.input_pending()) co_return;
    // The first request must come promptly; later ones may idle in keep-alive,
    // long only once a request was SigV4-verified. The limit covers the whole
    // header read, so a slowloris client is cut off.
    const bool trusted = self.trust.load() == Trust::Authenticated;
    tcp_layer.expires_after(
        trusted       ? limits.idle_timeout
        : served == 0 ? std::min(limits.header_timeout, limits.unauthenticated_idle_timeout)
                      : limits.unauthenticated_idle_timeout);
    self.between_requests = true;
    auto head = co_await read_request_head(stream, buffer, parser, limits);
    self.between_requests = false;
    if (self.evicted) co_return;
    if (!head) {
      if (head.error().name == ErrorName::InternalException) co_return;  // peer gone
      co_await reject_and_close(stream, head.error(), 11, limits);
      co_return;
    }
    // curl sends "Expect: 100-continue" for larger bodies and waits up to a
    // second for this before sending the body.
    if (parser.get()[http::field::expect] == "100-continue") {
      http::response<http::empty_body> cont{http::status::continue_, parser.get().version()};
      tcp_layer.expires_after(limits.write_timeout);
      auto [wec, wn] = co_await http::async_write(stream, cont, kTuple);
      if (wec) co_return;
    }
    if (!parser.is_done()) {
      // The body's time is the client's: it has its own timeout, and the
      // request deadline starts only once the body is in.
      tcp_layer.expires_after(limits.body_timeout);
      auto [bec, bn] = co_await http::async_read(stream, buffer, parser, kTuple);
      if (bec == beast::error::timeout) {
        // A timed-out stream stays failed, so there is no answer to send.
        const auto expected = parser.content_length();
        record_drop(DropCause::ClientSlow, obs::Level::Warn, "client_slow",
                    {{"peer", ctx.peer},
                     {"reason",
                      "request body not received within server.limits.body_timeout_ms; "
                      "the client was slow, the HSM was not called"},
                     {"bodyTimeoutMs", limits.body_timeout.count()},
                     {"receivedBytes", parser.get().body().size()},
                     {"expectedBytes", expected ? *expected : 0}});
        co_return;
      }
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
    ctx.arrival = core::SteadyClock::now();
    ctx.authenticated = false;
    self.busy.store(true);
    struct Idle {  // however this request ends, the connection is no longer busy
      Connection& c;
      ~Idle() {
        c.idle_since.store(ticks_now());
        c.busy.store(false);
      }
    } idle{self};

    Request request = parser.release();
    const bool head_request = request.method() == http::verb::head;
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
    if (ctx.authenticated) promote(self);
    // The request body may hold plaintext (Encrypt), and so may the bytes of it
    // the read buffer still holds.
    secure_wipe(request.body().data(), request.body().size());
    wipe_consumed(buffer);
    ++served;
    const bool keep_alive =
        request.keep_alive() && !draining_.load() && handler_.keep_connections() &&
        (limits.max_requests_per_connection == 0 || served < limits.max_requests_per_connection);
    response.keep_alive(keep_alive);
    response.prepare_payload();
    tcp_layer.expires_after(limits.write_timeout);
    boost::system::error_code wec;
    if (head_request) {
      // RFC 9110 section 9.3.2: the answer to HEAD has the GET answer's header
      // fields (Content-Length included) and no body.
      http::response_serializer<http::string_body> serializer(response);
      std::tie(wec, std::ignore) = co_await http::async_write_header(stream, serializer, kTuple);
    } else {
      std::tie(wec, std::ignore) = co_await http::async_write(stream, response, kTuple);
    }
    // The response body may hold plaintext (Decrypt).
    secure_wipe(response.body().data(), response.body().size());
    if (wec || !keep_alive) co_return;
  }
}

}  // namespace xks::net
