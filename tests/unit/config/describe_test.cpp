// describe_redacted() and config_warnings().
#include <nlohmann/json.hpp>

#include "config_fixture.hpp"

namespace xks::config::test {
namespace {

using ::testing::AllOf;
using ::testing::Contains;
using ::testing::HasSubstr;
using ::testing::IsEmpty;
using ::testing::Not;
using json = nlohmann::json;
using namespace std::chrono;

TEST_F(ConfigTest, DescribeRedactedShowsSourcesNeverValues) {
  ScopedEnv env("XKS_TEST_SECRET_2", kSecret2);
  const Config c = load_mutated([](YAML::Node& n) {
    YAML::Node c2 = YAML::Clone(n["keystores"][0]["credentials"][0]);
    c2["access_key_id"] = kAkid2;
    c2["secret"] = YAML::Load("{env: XKS_TEST_SECRET_2}");
    c2.remove("not_after");
    n["keystores"][0]["credentials"].push_back(c2);
  });
  const std::string text = describe_redacted(c);
  EXPECT_EQ(text.find(kSecret), std::string::npos);
  EXPECT_EQ(text.find(kSecret2), std::string::npos);
  EXPECT_EQ(text.find(kPin), std::string::npos);
  EXPECT_EQ(text.find('\n'), std::string::npos);  // one log line

  const json j = json::parse(text);
  EXPECT_EQ(j["hsm"][0]["pin"], "<redacted: file " + (dir_ / "secrets/hsm.pin").string() + ">");
  EXPECT_EQ(j["keystores"][0]["credentials"][0]["secret"],
            "<redacted: file " + (dir_ / "secrets/demo.secret").string() + ">");
  EXPECT_EQ(j["keystores"][0]["credentials"][1]["secret"], "<redacted: env XKS_TEST_SECRET_2>");
  EXPECT_EQ(j["keystores"][0]["credentials"][0]["not_after"], "2027-01-01T00:00:00Z");
  EXPECT_FALSE(j["keystores"][0]["credentials"][1].contains("not_after"));
  EXPECT_EQ(j["keystores"][0]["credentials"][0]["access_key_id"], kAkid);
  EXPECT_EQ(j["server"]["listen"], "127.0.0.1:0");
  EXPECT_EQ(j["server"]["limits"]["max_body_bytes"], 65536);
  EXPECT_EQ(j["tls"]["certificate"], (dir_ / "tls/server.crt").string());
  EXPECT_EQ(j["hsm"][0]["iv"], "caller_random");
  EXPECT_EQ(j["hsm"][0]["vendor"], "generic");
  EXPECT_EQ(j["hsm"][0]["auth_failure_codes"][0], "CKR_ENCRYPTED_DATA_INVALID");
  EXPECT_EQ(j["hsm"][0]["token_label"], "xks");
  EXPECT_FALSE(j["hsm"][0].contains("slot_id"));
  EXPECT_EQ(j["keystores"][0]["keys"][1]["label"], "second.key_2");
  EXPECT_EQ(j["health"]["max_age_ms"], 60000);
  EXPECT_EQ(j["logging"]["format"], "json");
  EXPECT_EQ(j["source"], c.source.string());
}

TEST_F(ConfigTest, DescribeRedactedBracketsIpv6) {
  const Config c = load_mutated([](YAML::Node& n) { n["server"]["listen"] = "[::]:443"; });
  EXPECT_EQ(json::parse(describe_redacted(c))["server"]["listen"], "[::]:443");
}

TEST_F(ConfigTest, NoWarningsForAGoodConfig) {
  const Config c = load_config(write_config(base()));
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}), IsEmpty());
}

TEST_F(ConfigTest, WarnsLoudlyWhenTlsIsDisabled) {
  const Config c = load_mutated([](YAML::Node& n) { n["tls"] = YAML::Load("{enabled: false}"); });
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}),
              Contains(HasSubstr("TLS IS DISABLED")));
}

TEST_F(ConfigTest, WarnsWhenMutualTlsIsOff) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["tls"].remove("client_ca");
    n["tls"].remove("client_names");
  });
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}),
              Contains(HasSubstr("tls.client_ca is not set")));
}

TEST_F(ConfigTest, WarnsAboutAPrivateKeyOthersCanRead) {
  write("tls/server.key", "k", 0644);
  const Config c = load_config(write_config(base()));
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}),
              Contains(HasSubstr("tls.private_key")));
}

TEST_F(ConfigTest, WarnsAboutADeadlineAbove200) {
  const Config c = load_mutated([](YAML::Node& n) { n["server"]["request_deadline_ms"] = 230; });
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}),
              Contains(AllOf(HasSubstr("request_deadline_ms"), HasSubstr("250 ms"))));
}

TEST_F(ConfigTest, WarnsWhenSessionsAreFewerThanThreads) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["server"]["threads"] = 16;
    n["hsm"]["sessions"] = 4;
  });
  EXPECT_THAT(config_warnings(c, sys_days{year{2026} / January / 1}),
              Contains(AllOf(HasSubstr("soft1"), HasSubstr("4 sessions for 16 I/O threads"))));
}

TEST_F(ConfigTest, WarnsAboutExpiredAndSoonExpiringCredentials) {
  const Config c = load_config(write_config(base()));  // not_after 2027-01-01
  const sys_days expiry{year{2027} / January / 1};
  EXPECT_THAT(config_warnings(c, expiry - days{15}), IsEmpty());
  EXPECT_THAT(config_warnings(c, expiry - days{13}),
              Contains(AllOf(HasSubstr(kAkid), HasSubstr("within 14 days"))));
  EXPECT_THAT(config_warnings(c, expiry + days{1}),
              Contains(AllOf(HasSubstr(kAkid), HasSubstr("passed its not_after"))));
  for (const auto& w : config_warnings(c, expiry + days{1})) {
    EXPECT_EQ(w.find(kSecret), std::string::npos);
    EXPECT_EQ(w.find('\n'), std::string::npos);
  }
}

}  // namespace
}  // namespace xks::config::test
