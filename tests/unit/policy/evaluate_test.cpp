#include <gtest/gtest.h>

#include <string>

#include "xks/policy/policy.hpp"

namespace xks::policy {
namespace {

constexpr std::string_view kRole = "arn:aws:iam::111122223333:role/app";
constexpr std::string_view kKeyArn =
    "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";

RequestAttributes encrypt(std::string_view key = "k1") {
  RequestAttributes r;
  r.api = "Encrypt";
  r.key_id = key;
  r.principal_arn = kRole;
  r.kms_key_arn = kKeyArn;
  r.kms_operation = "Encrypt";
  return r;
}

TEST(Evaluate, DefaultIsDenyWithAPolicy) {
  const auto p = parse_policy("statements: []");
  const Decision d = p->evaluate(encrypt());
  EXPECT_FALSE(d.allowed);
  EXPECT_TRUE(d.enforced);
  EXPECT_EQ(d.deciding_sid, kDefaultDenySid);
  EXPECT_NE(d.explanation.find("default-deny"), std::string::npos) << d.explanation;
}

TEST(Evaluate, DenyBeatsAllowWhateverTheOrder) {
  for (const char* yaml : {
           "statements:\n"
           "  - {sid: allow-all, effect: allow, keys: ['*']}\n"
           "  - {sid: no-k1, effect: deny, keys: [k1]}\n",
           "statements:\n"
           "  - {sid: no-k1, effect: deny, keys: [k1]}\n"
           "  - {sid: allow-all, effect: allow, keys: ['*']}\n",
       }) {
    const auto p = parse_policy(yaml);
    const Decision d = p->evaluate(encrypt("k1"));
    EXPECT_FALSE(d.allowed);
    EXPECT_EQ(d.deciding_sid, "no-k1");
    EXPECT_NE(d.explanation.find("denied by statement \"no-k1\""), std::string::npos);
    const Decision other = p->evaluate(encrypt("k2"));
    EXPECT_TRUE(other.allowed);
    EXPECT_EQ(other.deciding_sid, "allow-all");
    EXPECT_TRUE(other.explanation.empty()) << "built only on deny or when asked";
  }
}

TEST(Evaluate, FirstMatchingStatementOfTheWinningEffectIsReported) {
  const auto p = parse_policy(
      "statements:\n"
      "  - {sid: a1, effect: allow, keys: [k2]}\n"
      "  - {sid: a2, effect: allow, keys: ['k*']}\n"
      "  - {sid: a3, effect: allow, keys: ['*']}\n");
  EXPECT_EQ(p->evaluate(encrypt("k1")).deciding_sid, "a2");
  EXPECT_EQ(p->evaluate(encrypt("k2")).deciding_sid, "a1");
  EXPECT_EQ(p->evaluate(encrypt("x")).deciding_sid, "a3");
}

TEST(Evaluate, ConditionsAreAndedValuesAreOred) {
  const auto p = parse_policy(
      "statements:\n"
      "  - sid: s\n"
      "    effect: allow\n"
      "    apis: [Encrypt]\n"
      "    keys: [k1, k2]\n"
      "    kms_operations: [Encrypt, GenerateDataKey]\n");
  EXPECT_TRUE(p->evaluate(encrypt("k1")).allowed);
  EXPECT_TRUE(p->evaluate(encrypt("k2")).allowed);
  EXPECT_FALSE(p->evaluate(encrypt("k3")).allowed);
  auto r = encrypt("k1");
  r.kms_operation = "GenerateDataKey";
  EXPECT_TRUE(p->evaluate(r).allowed);
  r.kms_operation = "ReEncrypt";
  EXPECT_FALSE(p->evaluate(r).allowed);
  r = encrypt("k1");
  r.api = "Decrypt";
  const Decision d = p->evaluate(r);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.explanation.find("no allow statement covers this api"), std::string::npos)
      << d.explanation;
}

TEST(Evaluate, ApisDefaultToAllThreeAndStarMeansAll) {
  for (const char* yaml : {"statements: [{sid: s, effect: allow, keys: [k1]}]",
                           "statements: [{sid: s, effect: allow, apis: ['*']}]"}) {
    const auto p = parse_policy(yaml);
    for (const char* api : {"Encrypt", "Decrypt", "GetKeyMetadata"}) {
      auto r = encrypt("k1");
      r.api = api;
      EXPECT_TRUE(p->evaluate(r).allowed) << yaml << " " << api;
    }
  }
}

TEST(Evaluate, AbsentFieldNeverMatchesAPatternNotEvenStar) {
  const auto p = parse_policy("statements: [{sid: vpce, effect: allow, source_vpces: ['*']}]");
  auto r = encrypt();
  EXPECT_FALSE(p->evaluate(r).allowed);
  r.source_vpce = "vpce-1";
  EXPECT_TRUE(p->evaluate(r).allowed);
  r.source_vpce = "";  // present but empty is present
  EXPECT_TRUE(p->evaluate(r).allowed);
}

TEST(Evaluate, AbsentValueMatchesAbsenceExplicitly) {
  const auto p = parse_policy(
      "statements:\n"
      "  - {sid: no-vpce, effect: deny, source_vpces: ['<absent>']}\n"
      "  - {sid: direct-or-ebs, effect: allow, via_services: ['<absent>', ebs]}\n");
  auto r = encrypt();
  Decision d = p->evaluate(r);
  EXPECT_EQ(d.deciding_sid, "no-vpce");
  EXPECT_NE(d.explanation.find("source_vpce=<absent>"), std::string::npos) << d.explanation;
  r.source_vpce = "vpce-1";
  EXPECT_EQ(p->evaluate(r).deciding_sid, "direct-or-ebs");  // via_service absent
  r.via_service = "ebs";
  EXPECT_TRUE(p->evaluate(r).allowed);
  r.via_service = "rds";
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);
}

TEST(Evaluate, DerivedFieldsAbsentWhenTheArnHasNone) {
  const auto p = parse_policy(
      "statements:\n"
      "  - {sid: acct, effect: allow, accounts: ['111122223333']}\n"
      "  - {sid: svc, effect: allow, accounts: ['<absent>'], principals: ['*.amazonaws.com']}\n");
  auto r = encrypt();
  EXPECT_EQ(p->evaluate(r).deciding_sid, "acct");
  r.principal_arn = "ec2.amazonaws.com";
  EXPECT_EQ(p->evaluate(r).deciding_sid, "svc");
  r.principal_arn = "AWS Internal";
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);
  r.principal_arn = std::nullopt;
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);
  r.principal_arn = "arn:aws:iam::999999999999:role/app";
  EXPECT_EQ(p->evaluate(r).deciding_sid, kDefaultDenySid);
}

TEST(Evaluate, AccountsIsTheCallerKeyAccountsTheKeyOwnerRegionsTheKeyRegion) {
  const auto p = parse_policy(
      "statements:\n"
      "  - sid: s\n"
      "    effect: allow\n"
      "    accounts: ['444455556666']\n"
      "    key_accounts: ['111122223333']\n"
      "    regions: ['eu-*']\n");
  auto r = encrypt();
  r.principal_arn = "arn:aws:sts::444455556666:assumed-role/x/session";
  EXPECT_TRUE(p->evaluate(r).allowed);
  r.kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/k";
  EXPECT_FALSE(p->evaluate(r).allowed);
  r.kms_key_arn = "arn:aws:kms:eu-west-1:444455556666:key/k";
  EXPECT_FALSE(p->evaluate(r).allowed);
  r.kms_key_arn = std::nullopt;  // GetKeyMetadata sometimes has no kmsKeyArn
  const Decision d = p->evaluate(r);
  EXPECT_FALSE(d.allowed);
  EXPECT_NE(d.explanation.find("\"s\" on key_accounts"), std::string::npos) << d.explanation;
}

TEST(Evaluate, UnknownKmsOperationJustMatchesOrNot) {
  const auto p = parse_policy(
      "statements:\n"
      "  - {sid: known, effect: allow, kms_operations: [Encrypt, Decrypt]}\n"
      "  - {sid: future, effect: allow, kms_operations: ['Future*']}\n");
  auto r = encrypt();
  r.kms_operation = "SomethingKmsAddsIn2030";
  const Decision d = p->evaluate(r);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.deciding_sid, kDefaultDenySid);
  r.kms_operation = "FutureOperation";
  EXPECT_EQ(p->evaluate(r).deciding_sid, "future");
}

TEST(Evaluate, HealthIsNeverEvaluated) {
  for (const char* yaml : {"statements: []", "statements: [{sid: k, effect: deny, keys: ['*']}]",
                           "enforce: false\nstatements: []"}) {
    const auto p = parse_policy(yaml);
    RequestAttributes health;
    health.api = "GetHealthStatus";
    health.kms_operation = "KmsHealthCheck";
    const Decision d = p->evaluate(health);
    EXPECT_TRUE(d.allowed);
    EXPECT_TRUE(d.policy_allowed);
    EXPECT_EQ(d.deciding_sid, kHealthExemptSid);
    EXPECT_TRUE(d.explanation.empty());
  }
  // And it cannot be named in a policy at all.
  EXPECT_THROW(parse_policy("statements: [{sid: h, effect: deny, apis: [GetHealthStatus]}]"),
               PolicyError);
  EXPECT_EQ(parse_api("GetHealthStatus"), std::nullopt);
}

TEST(Evaluate, UnknownApiIsDenied) {
  const auto p = parse_policy("statements: [{sid: s, effect: allow, keys: ['*']}]");
  auto r = encrypt();
  r.api = "encrypt";
  const Decision d = p->evaluate(r);
  EXPECT_FALSE(d.allowed);
  EXPECT_EQ(d.deciding_sid, kDefaultDenySid);
}

TEST(Evaluate, DryRunAllowsButReportsTheDeny) {
  const auto p = parse_policy(
      "enforce: false\n"
      "statements:\n"
      "  - {sid: no-k1, effect: deny, keys: [k1]}\n"
      "  - {sid: ok, effect: allow, keys: [k2]}\n");
  Decision d = p->evaluate(encrypt("k1"));
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(d.enforced);
  EXPECT_FALSE(d.policy_allowed);
  EXPECT_TRUE(d.dry_run_denied());
  EXPECT_EQ(d.deciding_sid, "no-k1");
  EXPECT_EQ(d.explanation.rfind("dry-run (enforce: false), would deny: denied by statement", 0), 0U)
      << d.explanation;

  d = p->evaluate(encrypt("k3"));
  EXPECT_TRUE(d.allowed);
  EXPECT_TRUE(d.dry_run_denied());
  EXPECT_EQ(d.deciding_sid, kDefaultDenySid);

  d = p->evaluate(encrypt("k2"));
  EXPECT_TRUE(d.allowed);
  EXPECT_FALSE(d.dry_run_denied());
  EXPECT_TRUE(d.explanation.empty());
}

TEST(Evaluate, ExplanationOnRequestNamesStatementAndEscapesRequestText) {
  const auto p = parse_policy("statements: [{sid: ok, effect: allow, keys: ['*']}]");
  auto r = encrypt();
  r.kms_operation = "Op\"with\nnewline\xff";
  const Decision d = p->evaluate(r, EvalOptions{.explain = true});
  EXPECT_TRUE(d.allowed);
  EXPECT_NE(d.explanation.find("allowed by statement \"ok\" (#0, allow)"), std::string::npos);
  EXPECT_NE(d.explanation.find("kms_operation=\"Op\\\"with\\x0anewline\\xff\""), std::string::npos)
      << d.explanation;
  EXPECT_NE(d.explanation.find("account=\"111122223333\""), std::string::npos);
  EXPECT_NE(d.explanation.find("region=\"eu-west-1\""), std::string::npos);
  EXPECT_EQ(d.explanation.find('\n'), std::string::npos);
}

TEST(Evaluate, NearMissesAreBounded) {
  std::string yaml = "statements:\n";
  for (int i = 0; i < 20; ++i) {
    yaml += "  - {sid: s" + std::to_string(i) + ", effect: allow, keys: [other]}\n";
  }
  const auto p = parse_policy(yaml);
  const Decision d = p->evaluate(encrypt());
  EXPECT_NE(d.explanation.find("\"s7\" on keys"), std::string::npos) << d.explanation;
  EXPECT_EQ(d.explanation.find("\"s8\" on keys"), std::string::npos) << d.explanation;
  EXPECT_NE(d.explanation.find("and 12 more"), std::string::npos) << d.explanation;
}

TEST(Evaluate, DecisionMapsTo403) {
  const auto p = parse_policy("statements: []");
  const Error e = to_error(p->evaluate(encrypt()));
  EXPECT_EQ(e.name, ErrorName::AccessDeniedException);
  EXPECT_EQ(http_status(e.name), 403U);
  EXPECT_EQ(e.message.find("default-deny"), std::string::npos) << "sids stay in the log";
  EXPECT_NE(e.detail.find("default-deny"), std::string::npos);
}

TEST(Evaluate, SharedPolicyOutlivesAReloadSwap) {
  auto current = parse_policy("statements: [{sid: old, effect: allow, keys: ['*']}]");
  const PolicyPtr in_flight = current;  // a request holds the policy it started with
  current = parse_policy("statements: [{sid: new, effect: deny, keys: ['*']}]");
  EXPECT_EQ(in_flight->evaluate(encrypt()).deciding_sid, "old");
  EXPECT_EQ(current->evaluate(encrypt()).deciding_sid, "new");
}

}  // namespace
}  // namespace xks::policy
