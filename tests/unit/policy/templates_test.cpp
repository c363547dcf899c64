// Each template in config/policies/ loads and behaves as docs/authorization.md says.
#include <gtest/gtest.h>

#include <string>

#include "xks/policy/policy.hpp"

namespace xks::policy {
namespace {

constexpr std::string_view kRole = "arn:aws:iam::111122223333:role/app";
constexpr std::string_view kOtherRole = "arn:aws:iam::444455556666:role/app";
constexpr std::string_view kKeyArn =
    "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

PolicyPtr load(const char* name) {
  return load_policy(std::string(XKS_SOURCE_DIR) + "/config/policies/" + name);
}

RequestAttributes request(std::string_view api, std::string_view principal = kRole) {
  RequestAttributes r;
  r.api = api;
  r.key_id = "k1";
  r.principal_arn = principal;
  r.kms_key_arn = kKeyArn;
  r.kms_operation = api;
  return r;
}

RequestAttributes health() {
  RequestAttributes r;
  r.api = "GetHealthStatus";
  r.kms_operation = "KmsHealthCheck";
  return r;
}

TEST(Templates, OneAccount) {
  const auto p = load("one-account.yaml");
  for (const char* api : {"Encrypt", "Decrypt", "GetKeyMetadata"}) {
    EXPECT_EQ(p->evaluate(request(api)).deciding_sid, "allow-account-111122223333") << api;
    EXPECT_TRUE(p->evaluate(request(api, "arn:aws:sts::111122223333:assumed-role/r/s")).allowed);
    EXPECT_EQ(p->evaluate(request(api, kOtherRole)).deciding_sid, kDefaultDenySid);
    EXPECT_FALSE(p->evaluate(request(api, "ec2.amazonaws.com")).allowed);
    EXPECT_FALSE(p->evaluate(request(api, "AWS Internal")).allowed);
  }
  EXPECT_TRUE(p->evaluate(health()).allowed);
}

TEST(Templates, ViaServiceOnly) {
  const auto p = load("via-service-only.yaml");
  auto r = request("Encrypt");
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);  // direct call
  r.via_service = "ebs";
  EXPECT_EQ(p->evaluate(r).deciding_sid, "crypto-only-via-ebs");
  r.api = "Decrypt";
  EXPECT_TRUE(p->evaluate(r).allowed);
  r.via_service = "rds";
  EXPECT_FALSE(p->evaluate(r).allowed);
  r = request("Encrypt", kOtherRole);
  r.via_service = "ebs";
  EXPECT_FALSE(p->evaluate(r).allowed);
  EXPECT_EQ(p->evaluate(request("GetKeyMetadata")).deciding_sid, "metadata-for-account");
  EXPECT_TRUE(p->evaluate(health()).allowed);
}

TEST(Templates, VpceOnly) {
  const auto p = load("vpce-only.yaml");
  auto r = request("Decrypt");
  EXPECT_EQ(p->evaluate(r).deciding_sid, "deny-crypto-without-vpce");
  r.source_vpce = "vpce-0123456789abcdef0";
  EXPECT_EQ(p->evaluate(r).deciding_sid, "crypto-through-vpce");
  r.source_vpce = "vpce-ffffffffffffffff0";
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);
  EXPECT_EQ(p->evaluate(request("GetKeyMetadata")).deciding_sid, "metadata-for-account");
  EXPECT_TRUE(p->evaluate(health()).allowed);
}

TEST(Templates, EncryptOnlyRole) {
  const auto p = load("encrypt-only-role.yaml");
  for (const std::string_view ingest :
       {std::string_view("arn:aws:iam::111122223333:role/ingest"),
        std::string_view("arn:aws:sts::111122223333:assumed-role/ingest/batch-42")}) {
    EXPECT_EQ(p->evaluate(request("Encrypt", ingest)).deciding_sid, "allow-account-111122223333");
    EXPECT_TRUE(p->evaluate(request("GetKeyMetadata", ingest)).allowed);
    const Decision d = p->evaluate(request("Decrypt", ingest));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.deciding_sid, "ingest-role-never-decrypts");
  }
  // Other roles of the account keep full use; "ingester" is not "ingest".
  EXPECT_TRUE(p->evaluate(request("Decrypt")).allowed);
  EXPECT_TRUE(p->evaluate(request("Decrypt", "arn:aws:iam::111122223333:role/ingester")).allowed);
  EXPECT_FALSE(p->evaluate(request("Encrypt", kOtherRole)).allowed);
}

TEST(Templates, DenyAll) {
  const auto p = load("deny-all.yaml");
  for (const char* api : {"Encrypt", "Decrypt", "GetKeyMetadata"}) {
    const Decision d = p->evaluate(request(api));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.deciding_sid, "kill-switch");
  }
  const Decision h = p->evaluate(health());
  EXPECT_TRUE(h.allowed);
  EXPECT_EQ(h.deciding_sid, kHealthExemptSid);
}

}  // namespace
}  // namespace xks::policy
