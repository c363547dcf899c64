// The HTTPS listener and its connections: one C++20 coroutine per connection
// (Beast's advanced_server_flex_awaitable is the model), each on one of the
// connection io_contexts — one per I/O thread, as nginx has one event loop per
// worker, so a request never changes threads and no strand is needed — or, without
// them, on its own strand of the listener's io_context. Limits
// and timeouts are applied where they are used: handshake, header and body
// reads, writes, keep-alive idle time, header and body sizes.
#pragma once

#include <atomic>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <functional>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xks/core/blocking_pool.hpp"
#include "xks/core/error.hpp"
#include "xks/core/secure.hpp"
#include "xks/net/limits.hpp"
#include "xks/net/server_events.hpp"
#include "xks/net/tls_context.hpp"
#include "xks/obs/log.hpp"
#include "xks/obs/log_limiter.hpp"

namespace xks::net {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

struct RequestContext {
  std::string peer;        // "ip:port"
  core::Deadline arrival;  // when the whole request was read; deadlines start here
  bool tls = false;
  std::string client_subject;  // verified mTLS client certificate, if any
  // Set by the handler when SigV4 verified this request: from then on the
  // connection is trusted (idle_timeout instead of the unauthenticated limits,
  // never evicted to make room).
  bool authenticated = false;
  std::string client_cn;  // its subject CN
};

// A connection's read buffer. Request bodies pass through it (an Encrypt
// request's plaintext), so its storage is wiped when it is freed or regrown,
// and after each request by wipe_consumed.
using ConnectionBuffer = boost::beast::basic_flat_buffer<WipingAllocator<char>>;

// Wipes the buffer's storage outside its readable bytes (those the parser has
// consumed) and keeps the readable bytes (the start of a pipelined request).
void wipe_consumed(ConnectionBuffer& buffer) noexcept;

class RequestHandler {
 public:
  virtual ~RequestHandler() = default;
  // Runs on the connection's executor (its single-threaded io_context, or its
  // strand). Must not throw; the server still catches anything that escapes
  // and answers 500 InternalException.
  virtual boost::asio::awaitable<Response> handle(Request& request, RequestContext& ctx) = 0;
  // A JSON error response for requests the server rejects before handle()
  // (malformed HTTP, oversized headers or body).
  virtual Response error_response(const Error& error, unsigned http_version) = 0;
  // False while clients should move to another proxy (shutting down, no HSM
  // usable): every response then closes its connection after it is written,
  // so a client behind a load balancer reconnects elsewhere without losing a
  // request.
  virtual bool keep_connections() const { return true; }
};

// What a new connection is served with. The server takes the current one for
// each accepted connection, which keeps it to the end, so a reload that
// replaces the limits or the certificate never changes a live connection.
struct ConnectionSettings {
  Limits limits;
  std::shared_ptr<boost::asio::ssl::context> tls;  // null: plain HTTP
};
using ConnectionSettingsSource = std::function<std::shared_ptr<const ConnectionSettings>()>;

class Server {
 public:
  // `settings` is asked once per accepted connection; its TLS context is null
  // only with an explicit tls.enabled: false. `events` may be null (nothing is
  // reported); it must outlive the server.
  // `connection_contexts`: where accepted connections run, round-robin; each
  // must be run by exactly one thread. Empty: strands on `ioc`.
  Server(boost::asio::io_context& ioc, ConnectionSettingsSource settings, RequestHandler& handler,
         ServerEvents* events = nullptr,
         std::vector<boost::asio::io_context*> connection_contexts = {});

  // Binds and listens. Throws std::runtime_error naming the setting (e.g.
  // "server.listen") and the address on failure.
  void listen(const std::string& host, std::uint16_t port,
              std::string_view setting = "server.listen");
  void start();           // starts accepting
  void stop_accepting();  // closes the listener; live connections go on
  // Graceful stop: connections waiting for their next request with nothing
  // received are closed now; the others finish the request they are receiving
  // or serving, answer it with Connection: close, and close.
  void begin_drain();
  // Hard stop: every open connection is closed now, whether it is waiting,
  // receiving or being answered (its pending read or write is aborted); one
  // accepted but not yet started closes before its first read.
  void close_connections();

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  std::size_t open_connections() const noexcept { return connections_.load(); }
  std::size_t requests_in_flight() const noexcept { return in_flight_.load(); }
  // Whether lines a client can cause (refused, evicted, slow or malformed
  // connections) are logged; they are by default. Call before start().
  void set_log_client_faults(bool on) noexcept { log_client_faults_ = on; }

 private:
  struct Connection;

  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> summary_loop();
  template <class Stream>
  boost::asio::awaitable<void> reject_and_close(Stream& stream, const Error& error,
                                                unsigned http_version, const Limits& limits);
  boost::asio::awaitable<void> run_connection(boost::asio::ip::tcp::socket socket,
                                              std::shared_ptr<Connection> self);
  template <class Stream>
  boost::asio::awaitable<void> serve_http(Stream& stream, const Limits& limits, RequestContext ctx,
                                          Connection& self);
  // Closes the idlest connection that has not carried a verified request and
  // is not being served; false if there is none.
  bool evict_idlest_unauthenticated();
  // The connection carried its first verified request.
  void promote(Connection& connection);
  // Counts the drop and logs it unless this cause's log budget is spent.
  void record_drop(DropCause cause, obs::Level level, std::string_view event,
                   const nlohmann::json& fields);

  boost::asio::io_context& ioc_;
  const std::vector<boost::asio::io_context*> connection_contexts_;
  std::size_t next_context_ = 0;  // accept loop only
  boost::asio::ip::tcp::acceptor acceptor_;
  const ConnectionSettingsSource settings_;
  RequestHandler& handler_;
  ServerEvents* events_;
  bool log_client_faults_ = true;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<bool> draining_{false};

  // Every open connection, so that a drain can close the idle ones and a full
  // server can evict unauthenticated ones. Apart from the list membership and
  // the atomics, an entry is only read and written on its connection's executor.
  std::mutex registry_mutex_;
  std::list<std::shared_ptr<Connection>> registry_;
  // Connections per source address that have not carried a verified request.
  std::map<boost::asio::ip::address, unsigned> unauthenticated_by_source_;

  // Lines a client can cause are rate-limited per cause (DropCause).
  obs::LogLimiter log_limiter_;
  boost::asio::steady_timer summary_timer_;  // on the acceptor's strand
};

}  // namespace xks::net
