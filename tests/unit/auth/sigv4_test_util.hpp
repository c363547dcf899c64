// Helpers shared by the SigV4 unit tests.
#pragma once

#include <boost/beast/http/fields.hpp>

#include <chrono>
#include <string>
#include <utility>
#include <vector>

#include "xks/auth/sigv4.hpp"

namespace xks::auth::test {

// A request owned by the test; view() lends it to the verifier.
struct OwnedRequest {
  std::string method = "POST";
  std::string target = "/";
  boost::beast::http::fields headers;
  std::string body;

  RequestView view() const { return RequestView{method, target, headers, body}; }
};

// 2015-08-30T12:36:00Z, the time of the AWS SigV4 test suite.
inline std::chrono::system_clock::time_point suite_time() {
  using namespace std::chrono;
  return sys_days{year{2015} / August / 30} + hours{12} + minutes{36};
}

inline bool printable_ascii(std::string_view s) {
  for (const char c : s) {
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

}  // namespace xks::auth::test
