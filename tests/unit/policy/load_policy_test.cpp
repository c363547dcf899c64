#include <gtest/gtest.h>

#include <string>

#include "xks/policy/policy.hpp"

namespace xks::policy {
namespace {

// The PolicyError of `yaml`, checked to be one line naming the place and a fix.
PolicyError error_of(const std::string& yaml) {
  try {
    (void)parse_policy(yaml, "test.yaml");
  } catch (const PolicyError& e) {
    const std::string what = e.what();
    EXPECT_EQ(what.rfind("test.yaml", 0), 0U) << what;
    EXPECT_NE(what.find("; fix: "), std::string::npos) << what;
    EXPECT_EQ(what.find('\n'), std::string::npos) << what;
    return e;
  }
  ADD_FAILURE() << "accepted: " << yaml;
  return PolicyError("", std::nullopt, std::nullopt, "", "", "", "");
}

TEST(LoadPolicy, CompilesFieldsAndDefaults) {
  const auto p = parse_policy(
      "version: 1\n"
      "description: test\n"
      "statements:\n"
      "  - sid: s1\n"
      "    description: why\n"
      "    effect: allow\n"
      "    apis: [Encrypt, Decrypt]\n"
      "    keys: ['k-*']\n"
      "    principals: ['arn:aws:iam::111122223333:role/*']\n"
      "    accounts: '111122223333'\n"
      "    key_accounts: ['111122223333']\n"
      "    regions: [eu-west-1]\n"
      "    kms_operations: [Encrypt]\n"
      "    via_services: [ebs]\n"
      "    source_vpcs: [vpc-1]\n"
      "    source_vpces: [vpce-1, '<absent>']\n"
      "    key_arns: ['arn:aws:kms:*']\n");
  EXPECT_TRUE(p->enforce());
  ASSERT_EQ(p->statements().size(), 1U);
  const Statement& s = p->statements()[0];
  EXPECT_EQ(s.sid, "s1");
  EXPECT_EQ(s.effect, Effect::Allow);
  EXPECT_EQ(s.api_mask,
            static_cast<std::uint8_t>(Api::Encrypt) | static_cast<std::uint8_t>(Api::Decrypt));
  ASSERT_EQ(s.conditions.size(), kFieldCount);
  // Evaluation order: cheap compares first, ARNs last.
  EXPECT_EQ(s.conditions.front().field, Field::Key);
  EXPECT_EQ(s.conditions.back().field, Field::KeyArn);
  for (const Condition& c : s.conditions) {
    EXPECT_EQ(c.patterns.size(), 1U) << field_name(c.field);  // a scalar is a one-item list
    EXPECT_EQ(c.matches_absent, c.field == Field::SourceVpce) << field_name(c.field);
  }
}

TEST(LoadPolicy, EnforceFalseAndEmptyStatements) {
  EXPECT_FALSE(parse_policy("enforce: false\nstatements: []")->enforce());
  EXPECT_TRUE(parse_policy("statements:")->statements().empty());
}

TEST(LoadPolicy, UnknownKeys) {
  auto e = error_of("statements: []\nenforced: true\n");
  EXPECT_EQ(e.field(), "enforced");
  EXPECT_NE(std::string(e.what()).find("test.yaml:2:"), std::string::npos) << e.what();

  e = error_of("statements:\n  - sid: a\n    effect: allow\n    principal: ['*']\n");
  EXPECT_EQ(e.statement(), 0U);
  EXPECT_EQ(e.sid(), "a");
  EXPECT_EQ(e.field(), "principal");
  EXPECT_NE(std::string(e.what()).find("did you mean \"principals\""), std::string::npos)
      << e.what();
  EXPECT_NE(std::string(e.what()).find("statements[0] (sid \"a\")"), std::string::npos) << e.what();
}

TEST(LoadPolicy, UnknownEffectAndApi) {
  auto e = error_of("statements: [{sid: a, effect: alow, keys: ['*']}]");
  EXPECT_EQ(e.field(), "effect");
  EXPECT_NE(std::string(e.what()).find("use allow or deny"), std::string::npos);
  e = error_of("statements: [{sid: a, effect: allow, apis: [encrypt]}]");
  EXPECT_EQ(e.field(), "apis");
  e = error_of("statements: [{sid: a, effect: allow, apis: [ReEncrypt]}]");
  EXPECT_EQ(e.field(), "apis");
}

TEST(LoadPolicy, EmptyStatementAndMissingParts) {
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow}]").field(), "");
  EXPECT_NE(
      std::string(error_of("statements: [{sid: a, effect: allow}]").what()).find("empty statement"),
      std::string::npos);
  EXPECT_EQ(error_of("statements: [{effect: allow, keys: ['*']}]").field(), "sid");
  EXPECT_EQ(error_of("statements: [{sid: a, keys: ['*']}]").field(), "effect");
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, keys: []}]").field(), "keys");
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, keys: }]").field(), "keys");
  EXPECT_EQ(error_of("enforce: true\n").field(), "statements");
  error_of("");
  error_of("- just a list");
  error_of("statements: [a, b]");
  EXPECT_EQ(error_of("enforce: yes\nstatements: []").field(), "enforce");
  EXPECT_EQ(error_of("version: 2\nstatements: []").field(), "version");
}

TEST(LoadPolicy, DuplicateAndReservedSids) {
  const auto e = error_of(
      "statements:\n"
      "  - {sid: a, effect: allow, keys: ['*']}\n"
      "  - {sid: a, effect: deny, keys: [k]}\n");
  EXPECT_EQ(e.statement(), 1U);
  EXPECT_EQ(e.field(), "sid");
  EXPECT_NE(e.problem().find("duplicate"), std::string::npos);
  EXPECT_EQ(error_of("statements: [{sid: default-deny, effect: deny, keys: ['*']}]").field(),
            "sid");
  EXPECT_EQ(error_of("statements: [{sid: health-exempt, effect: deny, keys: ['*']}]").field(),
            "sid");
  EXPECT_EQ(error_of("statements: [{sid: 'has space', effect: deny, keys: ['*']}]").field(), "sid");
}

TEST(LoadPolicy, BadWildcardsAndValues) {
  for (const char* v : {"'a**'", "'a\\'", "'a\\b'", "''"}) {
    const auto e =
        error_of(std::string("statements: [{sid: a, effect: allow, principals: [") + v + "]}]");
    EXPECT_EQ(e.field(), "principals") << v;
  }
  EXPECT_NE(
      std::string(error_of("statements: [{sid: a, effect: allow, principals: ['a**']}]").what())
          .find("bad wildcard"),
      std::string::npos);
  // An ARN where an account id belongs.
  auto e = error_of(
      "statements: [{sid: a, effect: allow, accounts: ['arn:aws:iam::111122223333:root']}]");
  EXPECT_EQ(e.field(), "accounts");
  EXPECT_NE(std::string(e.what()).find("12 digits"), std::string::npos);
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, regions: [EU-WEST-1]}]").field(),
            "regions");
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, keys: ['key/1']}]").field(), "keys");
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, keys: ['<absent>']}]").field(), "keys");
  EXPECT_EQ(error_of("statements: [{sid: a, effect: allow, keys: [[nested]]}]").field(), "keys");
}

TEST(LoadPolicy, YamlSyntaxErrorNamesTheLine) {
  const auto e = error_of("statements:\n  - {sid: a, effect: allow\n");
  EXPECT_NE(e.problem().find("YAML"), std::string::npos);
}

TEST(LoadPolicy, MissingFile) {
  EXPECT_THROW((void)load_policy("/nonexistent/policy.yaml"), PolicyError);
}

}  // namespace
}  // namespace xks::policy
