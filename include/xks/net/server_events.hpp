// What a net::Server reports about its connections, for whoever counts them
// (the proxy's metrics; a fake in tests). The server knows nothing about what
// is done with the reports.
#pragma once

#include <cstddef>
#include <string_view>

namespace xks::net {

// How a TLS handshake ended.
enum class TlsHandshakeResult { Ok, Timeout, Protocol, Certificate, Other };
inline constexpr std::size_t kTlsHandshakeResultCount = 5;
std::string_view to_string(TlsHandshakeResult r) noexcept;  // "ok", "timeout", ...

// Why the server dropped (or refused) a client connection.
enum class DropCause {
  HandshakeTimeout,       // TLS not completed within handshake_timeout_ms
  HandshakeFailed,        // TLS protocol or certificate failure
  RefusedMaxConnections,  // at max_connections with no unauthenticated connection to evict
  RefusedPerSource,       // the source address is at max_unauthenticated_per_source
  Evicted,                // an idle unauthenticated connection closed to make room
  ClientSlow,             // the request body did not arrive within body_timeout_ms
};
inline constexpr std::size_t kDropCauseCount = 6;
std::string_view to_string(DropCause c) noexcept;  // "handshake_timeout", ...

// Called from any I/O thread, concurrently: implementations must be
// thread-safe and cheap (they run on the connection's path), and must not
// throw. Every method does nothing by default.
class ServerEvents {
 public:
  virtual ~ServerEvents() = default;
  // A connection was accepted and admitted (not refused); it is open until
  // on_connection_closed.
  virtual void on_connection_opened() noexcept {}
  virtual void on_connection_closed() noexcept {}
  // A TLS handshake ended (never called for plain HTTP).
  virtual void on_tls_handshake(TlsHandshakeResult result) noexcept { (void)result; }
  // A connection was refused at accept, or closed early for `cause`. A refused
  // connection was never opened; a dropped one is closed as well.
  virtual void on_connection_dropped(DropCause cause) noexcept { (void)cause; }
};

}  // namespace xks::net
