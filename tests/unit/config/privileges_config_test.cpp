// server.user / server.group / server.allow_root: parsed, shape-checked (whether
// the account exists is checked when the daemon drops privileges), described.
#include <nlohmann/json.hpp>

#include "config_fixture.hpp"

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;

TEST_F(ConfigTest, PrivilegeDefaults) {
  const Config c = load_config(write_config(base()));
  EXPECT_EQ(c.server.user, "");
  EXPECT_EQ(c.server.group, "");
  EXPECT_FALSE(c.server.allow_root);
}

TEST_F(ConfigTest, UserGroupAndAllowRootAreRead) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["server"]["user"] = "xks-proxy";
    n["server"]["group"] = "xks_group.1";
    n["server"]["allow_root"] = true;
  });
  EXPECT_EQ(c.server.user, "xks-proxy");
  EXPECT_EQ(c.server.group, "xks_group.1");
  EXPECT_TRUE(c.server.allow_root);
}

TEST_F(ConfigTest, NumericIdsAreAccepted) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["server"]["user"] = "65534";
    n["server"]["group"] = "65534";
  });
  EXPECT_EQ(c.server.user, "65534");
  EXPECT_EQ(c.server.group, "65534");
}

TEST_F(ConfigTest, UserNameShape) {
  for (const char* bad :
       {"", "-x", "a b", "x:y", "../etc", "a/b", "abcdefghijklmnopqrstuvwxyz0123456"}) {
    SCOPED_TRACE(bad);
    const std::string msg =
        expect_error([&](YAML::Node& n) { n["server"]["user"] = bad; }, "server.user");
    EXPECT_THAT(msg, HasSubstr("xks-proxy"));
  }
  expect_error([](YAML::Node& n) { n["server"]["user"] = YAML::Load("[a]"); }, "server.user");
}

TEST_F(ConfigTest, GroupNameShape) {
  expect_error(
      [](YAML::Node& n) {
        n["server"]["user"] = "nobody";
        n["server"]["group"] = "no group";
      },
      "server.group");
}

TEST_F(ConfigTest, GroupNeedsUser) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["group"] = "nogroup"; }, "server.group");
  EXPECT_THAT(msg, HasSubstr("server.user"));
}

TEST_F(ConfigTest, RootIsNoPrivilegeDrop) {
  for (const char* root : {"root", "0"}) {
    SCOPED_TRACE(root);
    const std::string msg =
        expect_error([&](YAML::Node& n) { n["server"]["user"] = root; }, "server.user");
    EXPECT_THAT(msg, HasSubstr("allow_root"));
  }
}

TEST_F(ConfigTest, AllowRootIsABoolean) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["allow_root"] = "yes"; }, "server.allow_root");
  EXPECT_THAT(msg, HasSubstr("true or false"));
}

TEST_F(ConfigTest, AllowRootTypoSuggested) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["allow_roots"] = true; }, "server.allow_roots");
  EXPECT_THAT(msg, HasSubstr("did you mean \"allow_root\"?"));
}

TEST_F(ConfigTest, DescribeShowsPrivilegeSettings) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["server"]["user"] = "nobody";
    n["server"]["allow_root"] = false;
  });
  const auto j = nlohmann::json::parse(describe_redacted(c));
  EXPECT_EQ(j["server"]["user"], "nobody");
  EXPECT_EQ(j["server"]["group"], "");
  EXPECT_EQ(j["server"]["allow_root"], false);
}

}  // namespace
}  // namespace xks::config::test
