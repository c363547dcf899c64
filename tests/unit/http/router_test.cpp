#include "xks/http/router.hpp"

#include <gtest/gtest.h>

#include <string>

namespace xks::http {
namespace {

const Router& router() {
  static const Router r({"/kms/xks/v1", "/tenant-a/kms/xks/v1", "/tenant-a/kms/xks/v1/b/kms/xks/v1",
                         "/T_b-2/x/kms/xks/v1"});
  return r;
}

void expect_route(std::string_view target, std::size_t keystore, Api api, std::string_view id) {
  SCOPED_TRACE(std::string(target));
  const auto r = router().route(target);
  ASSERT_TRUE(r.has_value()) << r.error().message;
  EXPECT_EQ(r->keystore, keystore);
  EXPECT_EQ(r->api, api);
  EXPECT_EQ(r->key_id, id);
  EXPECT_TRUE(router().is_api_uri(target));
}

// Returns the message so tests can check it says what is wrong.
std::string expect_invalid(std::string_view target) {
  const auto r = router().route(target);
  EXPECT_FALSE(r.has_value()) << target;
  EXPECT_FALSE(router().is_api_uri(target)) << target;
  if (r.has_value()) return {};
  EXPECT_EQ(r.error().name, ErrorName::InvalidUriPathException);
  EXPECT_FALSE(r.error().message.empty());
  return r.error().message;
}

TEST(Router, ToString) {
  EXPECT_EQ(to_string(Api::GetHealthStatus), "GetHealthStatus");
  EXPECT_EQ(to_string(Api::GetKeyMetadata), "GetKeyMetadata");
  EXPECT_EQ(to_string(Api::Encrypt), "Encrypt");
  EXPECT_EQ(to_string(Api::Decrypt), "Decrypt");
}

TEST(Router, AllFourApisOnEveryKeyStore) {
  expect_route("/kms/xks/v1/health", 0, Api::GetHealthStatus, "");
  expect_route("/kms/xks/v1/keys/k1/metadata", 0, Api::GetKeyMetadata, "k1");
  expect_route("/kms/xks/v1/keys/k1/encrypt", 0, Api::Encrypt, "k1");
  expect_route("/kms/xks/v1/keys/k1/decrypt", 0, Api::Decrypt, "k1");
  expect_route("/tenant-a/kms/xks/v1/health", 1, Api::GetHealthStatus, "");
  expect_route("/tenant-a/kms/xks/v1/keys/Key-1.a_b/encrypt", 1, Api::Encrypt, "Key-1.a_b");
  expect_route("/T_b-2/x/kms/xks/v1/keys/k/decrypt", 3, Api::Decrypt, "k");
}

TEST(Router, LongestPrefixWins) {
  expect_route("/tenant-a/kms/xks/v1/b/kms/xks/v1/health", 2, Api::GetHealthStatus, "");
  expect_route("/tenant-a/kms/xks/v1/b/kms/xks/v1/keys/z/metadata", 2, Api::GetKeyMetadata, "z");
}

TEST(Router, KeyIdsThatLookLikePathWords) {
  expect_route("/kms/xks/v1/keys/keys/metadata", 0, Api::GetKeyMetadata, "keys");
  expect_route("/kms/xks/v1/keys/health/encrypt", 0, Api::Encrypt, "health");
  expect_route("/kms/xks/v1/keys/.../encrypt", 0, Api::Encrypt, "...");
  expect_route("/kms/xks/v1/keys/.a/encrypt", 0, Api::Encrypt, ".a");
}

TEST(Router, KeyIdLength) {
  const std::string id128(128, 'a');
  expect_route("/kms/xks/v1/keys/" + id128 + "/encrypt", 0, Api::Encrypt, id128);
  const std::string msg = expect_invalid("/kms/xks/v1/keys/" + std::string(129, 'a') + "/encrypt");
  EXPECT_NE(msg.find("129"), std::string::npos) << msg;
  EXPECT_NE(msg.find("externalKeyId"), std::string::npos) << msg;
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys//encrypt").find("empty"), std::string::npos);
}

TEST(Router, WholeUriLength) {
  // A long prefix makes the 256 limit bite before the key id limit does.
  const std::string prefix = "/" + std::string(116, 'p') + "/kms/xks/v1";  // 128 chars
  ASSERT_EQ(prefix.size(), 128u);
  const Router r({prefix});
  const std::string base = prefix + "/keys/";
  const std::string op = "/decrypt";
  const std::string ok = base + std::string(256 - base.size() - op.size(), 'k') + op;
  ASSERT_EQ(ok.size(), 256u);
  EXPECT_TRUE(r.route(ok).has_value());
  const std::string too_long = base + std::string(257 - base.size() - op.size(), 'k') + op;
  const auto bad = r.route(too_long);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().name, ErrorName::InvalidUriPathException);
  EXPECT_NE(bad.error().message.find("257"), std::string::npos) << bad.error().message;
  EXPECT_NE(bad.error().message.find("256"), std::string::npos) << bad.error().message;
}

TEST(Router, UnknownPrefixDoesNotListConfiguredOnes) {
  const std::string msg = expect_invalid("/other/kms/xks/v1/keys/k/encrypt");
  EXPECT_NE(msg.find("no key store is configured at path prefix '/other/kms/xks/v1'"),
            std::string::npos)
      << msg;
  EXPECT_EQ(msg.find("tenant-a"), std::string::npos) << msg;
  EXPECT_NE(expect_invalid("/other/kms/xks/v1/health").find("'/other/kms/xks/v1'"),
            std::string::npos);
  expect_invalid("/kms/xks/v2/health");
  expect_invalid("/KMS/xks/v1/health");  // case-sensitive
  expect_invalid("/tenant-a/kms/xks/v1x/health");
  expect_invalid("/");
  EXPECT_NE(expect_invalid("/kms/xks/v1").find("stops at the key store prefix"), std::string::npos);
}

TEST(Router, UnknownOperationsAndPaths) {
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k/rotate").find("unknown operation 'rotate'"),
            std::string::npos);
  expect_invalid("/kms/xks/v1/keys/k/Encrypt");
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k").find("no operation"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k/encrypt/more").find("unexpected path segments"),
            std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/healthz").find("unknown API path"), std::string::npos);
  expect_invalid("/kms/xks/v1/health/x");
  expect_invalid("/kms/xks/v1/key/k/encrypt");
  expect_invalid("/kms/xks/v1/keys");
}

TEST(Router, RejectsWhatAnIntermediaryWouldRewrite) {
  EXPECT_NE(expect_invalid("/kms/xks/v1/health?x=1").find("query"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/health?").find("query"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/health#f").find("fragment"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k%31/encrypt").find("percent"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/health/").find("end with '/'"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k/encrypt/").find("end with '/'"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms//xks/v1/health").find("empty path segment"), std::string::npos);
  EXPECT_NE(expect_invalid("//kms/xks/v1/health").find("empty path segment"), std::string::npos);
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/../encrypt").find("'..'"), std::string::npos);
  expect_invalid("/kms/xks/v1/keys/./encrypt");
  expect_invalid("/x/../kms/xks/v1/health");
  expect_invalid("/kms/xks/v1/keys/k/..");
  EXPECT_NE(expect_invalid("/kms/xks/v1/keys/k+1/encrypt").find("character"), std::string::npos);
  expect_invalid("/kms/xks/v1/keys/k 1/encrypt");
  expect_invalid("/kms/xks/v1/keys/k~/encrypt");
  expect_invalid(std::string("/kms/xks/v1/keys/k\0/encrypt", 27));
  expect_invalid("/kms/xks/v1/keys/k\xc3\xa9/encrypt");
  EXPECT_NE(expect_invalid("kms/xks/v1/health").find("absolute"), std::string::npos);
  expect_invalid("");
  expect_invalid("https://host/kms/xks/v1/health");  // absolute-form is not accepted
  expect_invalid("*");
}

TEST(Router, NoKeyStores) {
  const Router r({});
  EXPECT_FALSE(r.route("/kms/xks/v1/health").has_value());
  EXPECT_FALSE(r.is_api_uri("/kms/xks/v1/health"));
}

}  // namespace
}  // namespace xks::http
