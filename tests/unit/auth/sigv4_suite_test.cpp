// Cases of the public AWS Signature Version 4 test suite (2015-08-30 edition,
// as published in the AWS General Reference and carried by botocore and
// aws-c-auth). Inputs and expected signatures are transcribed from it; none of
// them were computed with this code.
#include <gtest/gtest.h>

#include "sigv4_test_util.hpp"
#include "xks/auth/canonical.hpp"

namespace xks::auth {
namespace {

using test::OwnedRequest;

constexpr std::string_view kAkid = "AKIDEXAMPLE";
constexpr std::string_view kSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr std::string_view kHost = "example.amazonaws.com";

struct SuiteCase {
  const char* name;
  const char* method;
  const char* target;
  std::vector<std::pair<std::string, std::string>> headers;  // besides Host and X-Amz-Date
  const char* body;
  const char* signed_headers;
  const char* signature;
};

const std::vector<SuiteCase>& suite_cases() {
  static const std::vector<SuiteCase> cases = {
      {"get-vanilla",
       "GET",
       "/",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-query",
       "GET",
       "/",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"get-vanilla-empty-query-key",
       "GET",
       "/?Param1=value1",
       {},
       "",
       "host;x-amz-date",
       "a67d582fa61cc504c4bae71f336f98b97f1ea3c7a6bfe1b6e45aec72011b9aeb"},
      {"get-vanilla-query-order-key-case",
       "GET",
       "/?Param2=value2&Param1=value1",
       {},
       "",
       "host;x-amz-date",
       "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500"},
      {"get-vanilla-query-unreserved",
       "GET",
       "/?-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz="
       "-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
       {},
       "",
       "host;x-amz-date",
       "9c3e54bfcdf0b19771a7f523ee5669cdf59bc7cc0884027167c21bb143a40197"},
      {"get-vanilla-utf8-query",
       "GET",
       "/?\xe1\x88\xb4=bar",
       {},
       "",
       "host;x-amz-date",
       "2cdec8eed098649ff3a119c94853b13c643bcf08f8b0a1d91e12c9027818dd04"},
      {"get-unreserved",
       "GET",
       "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
       {},
       "",
       "host;x-amz-date",
       "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f"},
      {"get-utf8",
       "GET",
       "/\xe1\x88\xb4",
       {},
       "",
       "host;x-amz-date",
       "8318018e0b0f223aa2bbf98705b62bb787dc9c0e678f255a891fd03141be5d85"},
      {"get-header-key-duplicate",
       "GET",
       "/",
       {{"My-Header1", "value2"}, {"My-Header1", "value2"}, {"My-Header1", "value1"}},
       "",
       "host;my-header1;x-amz-date",
       "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea"},
      {"get-header-value-order",
       "GET",
       "/",
       {{"My-Header1", "value4"},
        {"My-Header1", "value1"},
        {"My-Header1", "value3"},
        {"My-Header1", "value2"}},
       "",
       "host;my-header1;x-amz-date",
       "08c7e5a9acfcfeb3ab6b2185e75ce8b1deb5e634ec47601a50643f830c755c01"},
      {"get-header-value-trim",
       "GET",
       "/",
       {{"My-Header1", " value1"}, {"My-Header2", " \"a   b   c\""}},
       "",
       "host;my-header1;my-header2;x-amz-date",
       "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736"},
      {"post-vanilla",
       "POST",
       "/",
       {},
       "",
       "host;x-amz-date",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-header-key-case",
       "POST",
       "/",
       {},
       "",
       "host;x-amz-date",
       "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b"},
      {"post-header-key-sort",
       "POST",
       "/",
       {{"My-Header1", "value1"}},
       "",
       "host;my-header1;x-amz-date",
       "c5410059b04c1ee005303aed430f6e6645f61f4dc9e1461ec8f8916fdf18852c"},
      {"post-header-value-case",
       "POST",
       "/",
       {{"My-Header1", "VALUE1"}},
       "",
       "host;my-header1;x-amz-date",
       "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d"},
      {"post-vanilla-query",
       "POST",
       "/?Param1=value1",
       {},
       "",
       "host;x-amz-date",
       "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
      {"post-vanilla-empty-query-value",
       "POST",
       "/?Param1=value1",
       {},
       "",
       "host;x-amz-date",
       "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11"},
      {"post-vanilla-query-space",
       "POST",
       "/?p",
       {},
       "",
       "host;x-amz-date",
       "e71688addb58a26418614085fb730ba3faa623b461c17f48f2fbdb9361b94a9b"},
      // The suite's raw request line is not valid HTTP here ('#', '?' and
      // '&' in the query); this is the same query as a client sends it.
      {"post-vanilla-query-nonunreserved",
       "POST",
       "/?%40%23%24%25%5E=&%2B=%2F%2C%3F%3E%3C%60%22%3B%3A%5C%7C%5D%5B%7B%7D",
       {},
       "",
       "host;x-amz-date",
       "66c82657c86e26fb25238d0e69f011edc4c6df5ae71119d7cb98ed9b87393c1e"},
      {"post-x-www-form-urlencoded",
       "POST",
       "/",
       {{"Content-Type", "application/x-www-form-urlencoded"}},
       "Param1=value1",
       "content-type;host;x-amz-date",
       "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a"},
      {"post-x-www-form-urlencoded-parameters",
       "POST",
       "/",
       {{"Content-Type", "application/x-www-form-urlencoded; charset=utf8"}},
       "Param1=value1",
       "content-type;host;x-amz-date",
       "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe"},
      {"post-sts-header-before",
       "POST",
       "/",
       {{"X-Amz-Security-Token",
         "AQoDYXdzEPT//////////"
         "wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YUu"
         "wthAx7mSEI/qkPpKPi/"
         "kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8Y"
         "QcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+"
         "scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="}},
       "",
       "host;x-amz-date;x-amz-security-token",
       "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead"},
      // normalize-path/*: what every non-S3 service does to the path.
      {"normalize-path/get-relative",
       "GET",
       "/example/..",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"normalize-path/get-relative-relative",
       "GET",
       "/example1/example2/../..",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"normalize-path/get-slash",
       "GET",
       "//",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"normalize-path/get-slash-dot-slash",
       "GET",
       "/./",
       {},
       "",
       "host;x-amz-date",
       "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"},
      {"normalize-path/get-slash-pointless-dot",
       "GET",
       "/./example",
       {},
       "",
       "host;x-amz-date",
       "ef75d96142cf21edca26f06005da7988e4f8dc83a165a80865db7089db637ec5"},
      {"normalize-path/get-slashes",
       "GET",
       "//example//",
       {},
       "",
       "host;x-amz-date",
       "9a624bd73a37c9a373b5312afbebe7a714a789de108f0bdfe846570885f57e84"},
      {"normalize-path/get-space",
       "GET",
       "/example space/",
       {},
       "",
       "host;x-amz-date",
       "652487583200325589f1fba4c7e578f72c47cb61beeca81406b39ddec1366741"},
  };
  return cases;
}

std::string expected_authorization(const SuiteCase& c) {
  return std::string(
             "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/"
             "aws4_request, SignedHeaders=") +
         c.signed_headers + ", Signature=" + c.signature;
}

OwnedRequest suite_request(const SuiteCase& c) {
  OwnedRequest r;
  r.method = c.method;
  r.target = c.target;
  r.body = c.body;
  r.headers.insert("Host", kHost);
  for (const auto& [name, value] : c.headers) r.headers.insert(name, value);
  r.headers.insert("X-Amz-Date", "20150830T123600Z");
  r.headers.insert("Authorization", expected_authorization(c));
  return r;
}

const SecureString* suite_lookup(std::string_view akid) {
  static const SecureString secret(kSecret);
  return akid == kAkid ? &secret : nullptr;
}

class AwsSuite : public ::testing::TestWithParam<SuiteCase> {};

TEST_P(AwsSuite, VerifierAcceptsTheSuiteSignature) {
  const SuiteCase& c = GetParam();
  const SigV4Verifier verifier(SigV4Options{"service", std::chrono::seconds{300}});
  const OwnedRequest r = suite_request(c);
  const auto result = verifier.verify(r.view(), suite_lookup, test::suite_time());
  ASSERT_TRUE(result) << c.name << ": " << result.error().message;
  EXPECT_EQ(result->access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(result->region, "us-east-1");
}

TEST_P(AwsSuite, VerifierRejectsTheSuiteRequestWithOneSignatureBitFlipped) {
  const SuiteCase& c = GetParam();
  const SigV4Verifier verifier(SigV4Options{"service", std::chrono::seconds{300}});
  OwnedRequest r = suite_request(c);
  std::string auth = expected_authorization(c);
  auth.back() = auth.back() == '0' ? '1' : '0';
  r.headers.set("Authorization", auth);
  const auto result = verifier.verify(r.view(), suite_lookup, test::suite_time());
  ASSERT_FALSE(result);
  EXPECT_EQ(result.error().name, ErrorName::AuthenticationFailedException);
}

TEST_P(AwsSuite, SignerProducesTheSuiteAuthorization) {
  const SuiteCase& c = GetParam();
  SignInput in;
  in.method = c.method;
  in.host = kHost;
  in.target = c.target;
  in.body = c.body;
  in.region = "us-east-1";
  in.access_key_id = kAkid;
  in.secret = kSecret;
  in.service = "service";
  in.now = test::suite_time();
  in.extra_signed_headers = c.headers;
  const SignedHeaders out = sign(in);
  EXPECT_EQ(out.amz_date, "20150830T123600Z");
  EXPECT_EQ(out.authorization, expected_authorization(c)) << c.name;
}

INSTANTIATE_TEST_SUITE_P(Sigv4TestSuite, AwsSuite, ::testing::ValuesIn(suite_cases()),
                         [](const ::testing::TestParamInfo<SuiteCase>& info) {
                           std::string n = info.param.name;
                           for (char& ch : n) {
                             if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9'))) ch = '_';
                           }
                           return n;
                         });

// The suite's canonical requests, checked piece by piece.
TEST(Canonical, UriMatchesTheSuite) {
  EXPECT_EQ(canonical_uri(""), "/");
  EXPECT_EQ(canonical_uri("/"), "/");
  EXPECT_EQ(canonical_uri("//"), "/");
  EXPECT_EQ(canonical_uri("/./"), "/");
  EXPECT_EQ(canonical_uri("/example/.."), "/");
  EXPECT_EQ(canonical_uri("/example1/example2/../.."), "/");
  EXPECT_EQ(canonical_uri("/./example"), "/example");
  EXPECT_EQ(canonical_uri("//example//"), "/example/");
  EXPECT_EQ(canonical_uri("/example space/"), "/example%20space/");
  EXPECT_EQ(canonical_uri("/\xe1\x88\xb4"), "/%E1%88%B4");
  EXPECT_EQ(canonical_uri("/../../a"), "/a");
  // Double encoding of an already-encoded path, as the AWS SDKs do (non-S3).
  EXPECT_EQ(canonical_uri("/example%20space/"), "/example%2520space/");
  EXPECT_EQ(canonical_uri("/xks/kms/xks/v1/keys/my-key_1.v2/encrypt"),
            "/xks/kms/xks/v1/keys/my-key_1.v2/encrypt");
}

// Paths that need no normalisation take a shortcut (encode the whole path
// once); it must agree with the segment-by-segment route.
TEST(Canonical, UriShortcutAgreesWithNormalisation) {
  EXPECT_EQ(canonical_uri("/a/b/"), "/a/b/");
  EXPECT_EQ(canonical_uri("/.a/..b/c."), "/.a/..b/c.");
  EXPECT_EQ(canonical_uri("/a b/~x/%2F"), "/a%20b/~x/%252F");
  EXPECT_EQ(canonical_uri("/a/."), "/a");
  EXPECT_EQ(canonical_uri("/a/.."), "/");
  EXPECT_EQ(canonical_uri("/a/b/../"), "/a/");
  EXPECT_EQ(canonical_uri("/a//b"), "/a/b");
  EXPECT_EQ(canonical_uri("relative/p"), "relative/p");
  EXPECT_EQ(canonical_uri(".."), "/");
  std::string out = "POST\n";
  canonical_uri_append(out, "/k/enc rypt");
  EXPECT_EQ(out, "POST\n/k/enc%20rypt");
  out = "POST\n";
  canonical_uri_append(out, "//");
  EXPECT_EQ(out, "POST\n/");
  out = "POST\n";
  canonical_uri_append(out, "");
  EXPECT_EQ(out, "POST\n/");
}

TEST(Canonical, QueryIsDecodedReencodedAndSorted) {
  EXPECT_EQ(canonical_query(""), "");
  EXPECT_EQ(canonical_query("Param2=value2&Param1=value1"), "Param1=value1&Param2=value2");
  EXPECT_EQ(canonical_query("b=2&a=3&a=1"), "a=1&a=3&b=2");
  EXPECT_EQ(canonical_query("p"), "p=");
  EXPECT_EQ(canonical_query("a=b%20c&d=e+f"), "a=b%20c&d=e%2Bf");
  EXPECT_EQ(canonical_query("k=%zz"), "k=%25zz");
  EXPECT_EQ(canonical_query("&&x=1&"), "x=1");
}

TEST(Canonical, HeaderValuesAreTrimmedAndCollapsed) {
  std::string out;
  canonical_header_value_append(out, "  \t\"a   b \t c\"  ");
  EXPECT_EQ(out, "\"a b c\"");
  out = "x:";
  canonical_header_value_append(out, " \t ");
  EXPECT_EQ(out, "x:");
  canonical_header_value_append(out, "a\t\tb c");
  EXPECT_EQ(out, "x:a b c");
}

}  // namespace
}  // namespace xks::auth
