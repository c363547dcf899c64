// What a connection may cost: sizes, counts and timeouts, applied where they
// are used (handshake, header and body reads, writes, keep-alive idle time).
// server.limits (config::Limits) is this plus the HSM queue; the names in log lines and error
// messages are those settings' names.
#pragma once

#include <chrono>
#include <cstddef>

namespace xks::net {

struct Limits {
  using Millis = std::chrono::milliseconds;
  std::size_t max_body_bytes = 64 * 1024;
  std::size_t max_header_bytes = 16 * 1024;
  unsigned max_header_count = 64;
  unsigned max_connections = 4096;
  unsigned max_requests_per_connection = 0;  // 0 = unlimited
  Millis handshake_timeout{5000};
  Millis header_timeout{10000};
  Millis body_timeout{10000};
  Millis idle_timeout{120000};
  Millis write_timeout{10000};
  // Until a connection has carried a SigV4-verified request it may idle (and
  // wait for its first request) only this long, instead of idle_timeout.
  Millis unauthenticated_idle_timeout{5000};
  // Connections from one source address that have not yet carried a verified
  // request; beyond it new ones are refused. 0 = no cap (needed behind a load
  // balancer that does not preserve client addresses).
  unsigned max_unauthenticated_per_source = 0;
  bool operator==(const Limits&) const = default;
};

}  // namespace xks::net
