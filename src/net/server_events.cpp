#include "xks/net/server_events.hpp"

namespace xks::net {

std::string_view to_string(TlsHandshakeResult r) noexcept {
  switch (r) {
    case TlsHandshakeResult::Ok: return "ok";
    case TlsHandshakeResult::Timeout: return "timeout";
    case TlsHandshakeResult::Protocol: return "protocol";
    case TlsHandshakeResult::Certificate: return "certificate";
    case TlsHandshakeResult::Other: return "other";
  }
  return "other";
}

std::string_view to_string(DropCause c) noexcept {
  switch (c) {
    case DropCause::HandshakeTimeout: return "handshake_timeout";
    case DropCause::HandshakeFailed: return "handshake_failed";
    case DropCause::RefusedMaxConnections: return "refused_max_connections";
    case DropCause::RefusedPerSource: return "refused_per_source";
    case DropCause::Evicted: return "evicted";
    case DropCause::ClientSlow: return "client_slow";
  }
  return "handshake_failed";
}

}  // namespace xks::net
