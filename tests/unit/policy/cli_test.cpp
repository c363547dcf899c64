#include "xks/policy/cli.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace xks::policy {
namespace {

namespace fs = std::filesystem;

class PolicyCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(XKS_BINARY_DIR) / "policy-cli-test" /
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fs::create_directories(dir_);
  }

  std::string write(const std::string& name, const std::string& text) {
    const fs::path p = dir_ / name;
    std::ofstream(p) << text;
    return p.string();
  }

  static std::string policy(const char* name) {
    return std::string(XKS_SOURCE_DIR) + "/config/policies/" + name;
  }

  int run(int (*cmd)(std::span<const std::string_view>, std::ostream&, std::ostream&),
          std::vector<std::string> args) {
    std::vector<std::string_view> views(args.begin(), args.end());
    out_.str("");
    err_.str("");
    return cmd(views, out_, err_);
  }

  fs::path dir_;
  std::ostringstream out_;
  std::ostringstream err_;
};

constexpr const char* kEncryptBody = R"({
  "requestMetadata": {
    "awsPrincipalArn": "arn:aws:iam::111122223333:role/ingest",
    "kmsKeyArn": "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "kmsOperation": "Encrypt",
    "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
    "someFutureField": 1
  },
  "plaintext": "SGVsbG8=",
  "encryptionAlgorithm": "AES_GCM"
})";

TEST_F(PolicyCli, CheckValid) {
  EXPECT_EQ(run(policy_check, {policy("encrypt-only-role.yaml")}), kExitAllow) << err_.str();
  EXPECT_NE(out_.str().find("OK, 2 statement(s): 1 allow, 1 deny; enforce: true"),
            std::string::npos)
      << out_.str();
  EXPECT_NE(out_.str().find("#0 deny \"ingest-role-never-decrypts\" apis=Decrypt principals"),
            std::string::npos)
      << out_.str();
}

TEST_F(PolicyCli, CheckInvalidAndUsage) {
  const auto bad = write("bad.yaml", "statements: [{sid: a, effect: alow, keys: ['*']}]\n");
  EXPECT_EQ(run(policy_check, {bad}), kExitUsage);
  EXPECT_NE(err_.str().find("field 'effect'"), std::string::npos) << err_.str();
  EXPECT_EQ(run(policy_check, {}), kExitUsage);
  EXPECT_EQ(run(policy_check, {"a", "b"}), kExitUsage);
  EXPECT_EQ(run(policy_check, {(dir_ / "missing.yaml").string()}), kExitUsage);
}

TEST_F(PolicyCli, TestInfersTheApiFromTheBody) {
  const auto req = write("encrypt.json", kEncryptBody);
  EXPECT_EQ(run(policy_test, {policy("encrypt-only-role.yaml"), req, "--key", "k1"}), kExitAllow)
      << err_.str();
  EXPECT_EQ(out_.str().substr(0, out_.str().find("explanation")),
            "decision: ALLOW\nstatement: allow-account-111122223333 (#1, allow)\n");
  EXPECT_NE(out_.str().find("api=\"Encrypt\" key=\"k1\""), std::string::npos) << out_.str();
  EXPECT_TRUE(err_.str().empty()) << err_.str();
}

TEST_F(PolicyCli, TestApiOverrideDenies) {
  const auto req = write("encrypt.json", kEncryptBody);
  EXPECT_EQ(
      run(policy_test, {policy("encrypt-only-role.yaml"), req, "--api", "Decrypt", "--key=k1"}),
      kExitDeny);
  EXPECT_NE(out_.str().find("decision: DENY\nstatement: ingest-role-never-decrypts (#0, deny)\n"),
            std::string::npos)
      << out_.str();
}

TEST_F(PolicyCli, TestDryRunExitsDenyButSaysItProceeds) {
  const auto p = write("dry.yaml", "enforce: false\nstatements: []\n");
  const auto req = write("encrypt.json", kEncryptBody);
  EXPECT_EQ(run(policy_test, {p, req, "--key", "k1", "--quiet"}), kExitDeny);
  EXPECT_EQ(out_.str(),
            "decision: DENY (dry-run: enforce is false, the proxy lets it through)\n"
            "statement: default-deny\n");
}

TEST_F(PolicyCli, TestHealthIsExempt) {
  const auto req =
      write("health.json",
            R"({"requestMetadata": {"kmsRequestId": "x", "kmsOperation": "KmsHealthCheck"}})");
  EXPECT_EQ(run(policy_test, {policy("deny-all.yaml"), req, "--api", "GetHealthStatus"}),
            kExitAllow);
  EXPECT_NE(out_.str().find("statement: health-exempt"), std::string::npos) << out_.str();
}

TEST_F(PolicyCli, TestUsageAndBadInput) {
  const auto req = write("encrypt.json", kEncryptBody);
  const auto pol = policy("deny-all.yaml");
  EXPECT_EQ(run(policy_test, {pol}), kExitUsage);
  EXPECT_EQ(run(policy_test, {pol, req, "--api"}), kExitUsage);
  EXPECT_EQ(run(policy_test, {pol, req, "--api", "Health"}), kExitUsage);
  EXPECT_EQ(run(policy_test, {pol, req, "--bogus"}), kExitUsage);
  EXPECT_EQ(run(policy_test, {pol, write("x.json", "not json")}), kExitUsage);
  EXPECT_EQ(run(policy_test, {pol, write("y.json", R"({"plaintext": "x"})")}), kExitUsage);
  EXPECT_EQ(
      run(policy_test, {pol, write("z.json", R"({"requestMetadata": {"kmsViaService": 3}})")}),
      kExitUsage);
  EXPECT_NE(err_.str().find("kmsViaService is not a string"), std::string::npos) << err_.str();
}

TEST_F(PolicyCli, MainTakesArgvAfterTheCommandName) {
  const auto pol = policy("one-account.yaml");
  std::string name = "check";
  std::string arg = pol;
  char* argv[] = {name.data(), arg.data(), nullptr};
  EXPECT_EQ(policy_check_main(2, argv), kExitAllow);
}

}  // namespace
}  // namespace xks::policy
