// libFuzzer target for SigV4 verification: the Authorization header, X-Amz-Date,
// target, method, body and extra headers all come from the input, which is cut
// into fields at '\n' (in order: authorization, x-amz-date, target, method,
// host, then "name:value" headers up to an empty line, then the body).
// Invariants: no crash, no sanitizer report, every failure is
// AuthenticationFailedException with a printable message under 512 bytes that
// never contains the secret; and a request signed with sign() from the same
// fields verifies.
#include <boost/beast/http/fields.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "xks/auth/sigv4.hpp"

namespace {

constexpr std::string_view kAkid = "AKIAXKSFUZZKEY234567";
constexpr std::string_view kSecret = "ZnV6ei1zZWNyZXQtbm90LWEtcmVhbC1vbmUtMDAwMDAw";

std::string_view next_line(std::string_view& in) {
  const std::size_t nl = in.find('\n');
  const std::string_view line = in.substr(0, nl);
  in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
  return line;
}

const xks::SecureString* lookup(std::string_view akid) {
  static const xks::SecureString secret(kSecret);
  return akid == kAkid ? &secret : nullptr;
}

// `input`: the whole request. Error messages may quote what the client sent
// (a credential scope, a header name); the secret in a message is a leak only
// when the client did not send it.
void check_error(const xks::Error& e, std::string_view input) {
  if (e.name != xks::ErrorName::AuthenticationFailedException) std::abort();
  if (e.message.empty() || e.message.size() >= 512) std::abort();
  for (const char c : e.message) {
    if (c < 0x20 || c > 0x7e) std::abort();
  }
  if (e.message.find(kSecret) != std::string::npos &&
      input.find(kSecret) == std::string_view::npos) {
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const xks::auth::SigV4Verifier verifier;
  // A fixed clock: 2023-01-01T00:00:00Z.
  static const auto now = std::chrono::system_clock::time_point{std::chrono::seconds{1672531200}};

  const std::string_view input(reinterpret_cast<const char*>(data), size);  // NOLINT
  std::string_view in = input;
  const std::string_view authorization = next_line(in);
  const std::string_view amz_date = next_line(in);
  const std::string_view target = next_line(in);
  const std::string_view method = next_line(in);
  const std::string_view host = next_line(in);

  boost::beast::http::fields headers;
  std::vector<std::pair<std::string, std::string>> extra;
  while (!in.empty()) {
    const std::string_view line = next_line(in);
    if (line.empty()) break;
    const std::size_t colon = line.find(':');
    const std::string_view name = line.substr(0, colon);
    const std::string_view value = colon == std::string_view::npos ? "" : line.substr(colon + 1);
    if (name.empty() || name.find_first_of(" \t\r") != std::string_view::npos) continue;
    // A std::string, not a view into the input: Boost 1.81's beast::iequals
    // reads one byte past the end of a name that differs only in case (fixed
    // in later Boost). Names Beast parses itself, or that the verifier takes
    // from the Authorization value, always have a byte after them.
    headers.insert(std::string(name), value);
  }
  const std::string_view body = in;

  headers.set("Authorization", authorization);
  headers.set("X-Amz-Date", amz_date);
  headers.set("Host", host);
  const xks::auth::RequestView view{method, target, headers, body};
  if (auto r = verifier.verify(view, lookup, now); !r) check_error(r.error(), input);

  // The same request signed properly must verify (when it is a request the
  // verifier can take at all: an absolute path).
  if (!target.empty() && target.front() == '/') {
    xks::auth::SignInput sin;
    sin.method = method;
    sin.host = host;
    sin.target = target;
    sin.body = body;
    sin.region = "us-east-1";
    sin.access_key_id = kAkid;
    sin.secret = kSecret;
    sin.now = now;
    const auto signed_headers = xks::auth::sign(sin);
    boost::beast::http::fields good;
    good.set("Host", host);
    good.set("X-Amz-Date", signed_headers.amz_date);
    good.set("Authorization", signed_headers.authorization);
    const xks::auth::RequestView good_view{method, target, good, body};
    if (!verifier.verify(good_view, lookup, now)) std::abort();
  }
  return 0;
}
