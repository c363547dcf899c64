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
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/core/blocking_pool.hpp"
#include "xks/core/error.hpp"
#include "xks/core/secure.hpp"
#include "xks/net/tls_context.hpp"
#include "xks/obs/metrics.hpp"

namespace xks::net {

using Request = boost::beast::http::request<boost::beast::http::string_body>;
using Response = boost::beast::http::response<boost::beast::http::string_body>;

struct RequestContext {
  std::string peer;               // "ip:port"
  core::Deadline arrival;         // when the request head was read
  bool tls = false;
  std::string client_subject;     // verified mTLS client certificate, if any
  std::string client_cn;          // its subject CN
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
  virtual boost::asio::awaitable<Response> handle(Request& request, const RequestContext& ctx) = 0;
  // A JSON error response for requests the server rejects before handle()
  // (malformed HTTP, oversized headers or body).
  virtual Response error_response(const Error& error, unsigned http_version) = 0;
};

class Server {
 public:
  // `tls` null means plain HTTP (only with an explicit tls.enabled: false).
  // `metrics` may be null (tests).
  // `connection_contexts`: where accepted connections run, round-robin; each
  // must be run by exactly one thread. Empty: strands on `ioc`.
  Server(boost::asio::io_context& ioc, config::Limits limits, TlsContextProvider* tls,
         RequestHandler& handler, obs::Metrics* metrics = nullptr,
         std::vector<boost::asio::io_context*> connection_contexts = {});

  // Binds and listens. Throws std::runtime_error naming the address on failure.
  void listen(const std::string& host, std::uint16_t port);
  void start();            // starts accepting
  void stop_accepting();   // closes the listener; live connections go on
  // Graceful stop: connections waiting for their next request with nothing
  // received are closed now; the others finish the request they are receiving
  // or serving, answer it with Connection: close, and close.
  void begin_drain();

  boost::asio::ip::tcp::endpoint local_endpoint() const;
  std::size_t open_connections() const noexcept { return connections_.load(); }
  std::size_t requests_in_flight() const noexcept { return in_flight_.load(); }
  void set_limits(const config::Limits& limits);  // applies to new connections

 private:
  boost::asio::awaitable<void> accept_loop();
  template <class Stream>
  boost::asio::awaitable<void> reject_and_close(Stream& stream, const Error& error,
                                                unsigned http_version,
                                                const config::Limits& limits);
  boost::asio::awaitable<void> run_connection(boost::asio::ip::tcp::socket socket);
  template <class Stream>
  boost::asio::awaitable<void> serve_http(Stream& stream, const config::Limits& limits,
                                          RequestContext ctx);

  boost::asio::io_context& ioc_;
  const std::vector<boost::asio::io_context*> connection_contexts_;
  std::size_t next_context_ = 0;  // accept loop only
  boost::asio::ip::tcp::acceptor acceptor_;
  std::shared_ptr<const config::Limits> limits_;
  mutable std::mutex limits_mutex_;
  TlsContextProvider* tls_;
  RequestHandler& handler_;
  obs::Metrics* metrics_;
  std::atomic<std::size_t> connections_{0};
  std::atomic<std::size_t> in_flight_{0};
  std::atomic<bool> draining_{false};

  // Every open connection, so that a drain can close the idle ones. An entry
  // is only read and written on its connection's executor, apart from the list
  // membership itself.
  struct Connection;
  std::mutex registry_mutex_;
  std::list<std::shared_ptr<Connection>> registry_;
};

}  // namespace xks::net
