// Requests signed by independent SigV4 implementations (curl --aws-sigv4 and
// botocore), captured byte for byte by tests/unit/auth/data/make_fixtures.sh.
#include <gtest/gtest.h>

#include <boost/beast/core/buffers_to_string.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/string_body.hpp>

#include <fstream>
#include <map>
#include <sstream>

#include "sigv4_test_util.hpp"

namespace xks::auth {
namespace {

namespace http = boost::beast::http;

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  EXPECT_TRUE(in) << path;
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

struct Fixture {
  http::request<http::string_body> request;
  std::map<std::string, std::string> meta;
  std::chrono::system_clock::time_point now;
  SecureString secret;
};

Fixture load(const std::string& name) {
  const std::string dir = std::string(XKS_SOURCE_DIR) + "/tests/unit/auth/data/";
  Fixture f;
  std::istringstream meta(read_file(dir + name + ".meta"));
  for (std::string line; std::getline(meta, line);) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) f.meta[line.substr(0, eq)] = line.substr(eq + 1);
  }
  f.now = std::chrono::system_clock::time_point{std::chrono::seconds{std::stoll(f.meta.at("now"))}};
  f.secret = SecureString(f.meta.at("secret"));

  const std::string raw = read_file(dir + name + ".http");
  http::request_parser<http::string_body> parser;
  parser.eager(true);
  boost::system::error_code ec;
  const std::size_t used = parser.put(boost::asio::buffer(raw), ec);
  EXPECT_FALSE(ec) << name << ": " << ec.message();
  EXPECT_EQ(used, raw.size());
  EXPECT_TRUE(parser.is_done()) << name;
  f.request = parser.release();
  return f;
}

class SignedByOthers : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override { f_ = load(GetParam()); }

  Result<Verified> verify(std::chrono::system_clock::time_point now) const {
    const std::string target(f_.request.target());
    const std::string method(f_.request.method_string());
    const RequestView view{method, target, f_.request.base(), f_.request.body()};
    const auto lookup = [this](std::string_view akid) -> const SecureString* {
      return akid == f_.meta.at("access_key_id") ? &f_.secret : nullptr;
    };
    return verifier_.verify(view, lookup, now);
  }

  Fixture f_;
  SigV4Verifier verifier_;
};

TEST_P(SignedByOthers, Verifies) {
  const auto r = verify(f_.now);
  ASSERT_TRUE(r) << f_.meta["signer"] << ": " << r.error().message;
  EXPECT_EQ(r->access_key_id, f_.meta.at("access_key_id"));
  EXPECT_FALSE(r->region.empty());
}

TEST_P(SignedByOthers, StaleAfterFiveMinutes) {
  EXPECT_TRUE(verify(f_.now + std::chrono::seconds{299}));
  const auto r = verify(f_.now + std::chrono::seconds{302});
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("outside the 5-minute window"), std::string::npos)
      << r.error().message;
}

TEST_P(SignedByOthers, TamperedBodyFails) {
  f_.request.body().back() = f_.request.body().back() == '}' ? ']' : '}';
  const auto r = verify(f_.now);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("signature does not match"), std::string::npos);
}

TEST_P(SignedByOthers, ChangedHostFails) {
  f_.request.set(http::field::host, "127.0.0.1:1");
  const auto r = verify(f_.now);
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("signature does not match"), std::string::npos);
}

TEST_P(SignedByOthers, ChangedPathFails) {
  std::string target(f_.request.target());
  target.insert(1, "x");
  f_.request.target(target);
  EXPECT_FALSE(verify(f_.now));
}

TEST_P(SignedByOthers, WrongSecretFails) {
  f_.secret = SecureString("dGVzdC1vbmx5LXNlY3JldC1kby1ub3QtdXNlLTAwMDE=");
  const auto r = verify(f_.now);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::AuthenticationFailedException);
}

INSTANTIATE_TEST_SUITE_P(CurlAndBotocore, SignedByOthers,
                         ::testing::Values("curl_encrypt", "curl_health", "botocore_encrypt",
                                           "botocore_health"));

}  // namespace
}  // namespace xks::auth
