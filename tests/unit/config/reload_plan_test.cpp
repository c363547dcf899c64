// config::diff: which settings a reload applies at once, which need new HSM
// sessions and which wait for a restart (keeping their running value), and
// the documentation's table, which must say the same.
#include "xks/config/reload_plan.hpp"

#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "config_fixture.hpp"

namespace xks::config::test {
namespace {

using ::testing::Contains;
using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::IsEmpty;

class ReloadPlanTest : public ConfigTest {
 protected:
  Config running() { return load_config(write_config(base(), "running.yaml")); }
  Config next(const std::function<void(YAML::Node&)>& mutate) {
    YAML::Node n = base();
    mutate(n);
    return load_config(write_config(n, "next.yaml"));
  }
  static std::map<std::string, ReloadClass> classes(const ReloadPlan& plan) {
    std::map<std::string, ReloadClass> out;
    for (const auto& c : plan.changes) out[std::string(c.setting)] = c.cls;
    return out;
  }
  static std::string all_details(const ReloadPlan& plan) {
    std::string out;
    for (const auto& d : plan.describe()) out += d + " | ";
    return out;
  }
};

TEST_F(ReloadPlanTest, TheSameFileChangesNothing) {
  const Config a = running();
  const ReloadPlan plan = diff(a, running());
  EXPECT_THAT(plan.changes, IsEmpty()) << all_details(plan);
  EXPECT_FALSE(plan.needs_new_hsm_sessions());
}

TEST_F(ReloadPlanTest, LiveSettingsAreAppliedAsWritten) {
  const Config a = running();
  const ReloadPlan plan = diff(a, next([](YAML::Node& n) {
                                 n["server"]["limits"]["max_connections"] = 50;
                                 n["server"]["limits"]["hsm_queue_capacity"] = 7;
                                 n["server"]["request_deadline_ms"] = 150;
                                 n["health"]["interval_ms"] = 2000;
                                 n["health"]["degraded_latency_ms"] = 20;
                                 n["health"]["max_age_ms"] = 30000;
                                 n["logging"]["level"] = "debug";
                                 n["keystores"][0]["keys"][0]["enabled"] = false;
                               }));
  EXPECT_EQ(classes(plan), (std::map<std::string, ReloadClass>{
                               {"server.limits.max_connections", ReloadClass::Live},
                               {"server.limits.hsm_queue_capacity", ReloadClass::Live},
                               {"server.request_deadline_ms", ReloadClass::Live},
                               {"health.interval_ms", ReloadClass::Live},
                               {"health.degraded_latency_ms", ReloadClass::Live},
                               {"health.max_age_ms", ReloadClass::Live},
                               {"logging.level", ReloadClass::Live},
                               {"keystores.keys", ReloadClass::Live},
                           }));
  EXPECT_FALSE(plan.needs_new_hsm_sessions());
  EXPECT_THAT(plan.restart_settings(), IsEmpty());
  EXPECT_EQ(plan.config.server.limits.max_connections, 50U);
  EXPECT_EQ(plan.config.server.limits.hsm_queue_capacity, 7U);
  EXPECT_EQ(plan.config.health.interval, Millis(2000));
  EXPECT_EQ(plan.config.health.max_age, Millis(30000));
  EXPECT_THAT(plan.describe(), Contains("/demo/kms/xks/v1: key demo-aes-key disabled"));
  EXPECT_THAT(plan.describe(), Contains("logging.level: debug"));
  EXPECT_THAT(plan.describe(), Contains("server.limits.max_connections: 50"));
}

TEST_F(ReloadPlanTest, RestartSettingsKeepTheirRunningValue) {
  const Config a = running();
  const ReloadPlan plan = diff(a, next([](YAML::Node& n) {
                                 n["server"]["listen"] = "127.0.0.1:8443";
                                 n["server"]["threads"] = 3;
                                 n["metrics"]["listen"] = "127.0.0.1:9999";
                                 n["server"]["fleet_size"] = 2;  // live, alongside
                               }));
  EXPECT_EQ(classes(plan), (std::map<std::string, ReloadClass>{
                               {"server.listen", ReloadClass::Restart},
                               {"server.threads", ReloadClass::Restart},
                               {"metrics.enabled", ReloadClass::Restart},
                               {"metrics.listen", ReloadClass::Restart},
                               {"server.fleet_size", ReloadClass::Live},
                           }));
  EXPECT_THAT(plan.restart_settings(),
              ElementsAre("server.listen", "server.threads", "metrics.enabled", "metrics.listen"));
  EXPECT_EQ(plan.config.server.listen_port, a.server.listen_port);
  EXPECT_EQ(plan.config.server.threads, 2U);
  EXPECT_FALSE(plan.config.metrics.enabled);
  EXPECT_EQ(plan.config.metrics.listen_port, a.metrics.listen_port);
  EXPECT_EQ(plan.config.server.fleet_size, 2U);
  EXPECT_THAT(plan.describe(), Contains("server.listen: 127.0.0.1:8443"));
}

TEST_F(ReloadPlanTest, SwitchingTlsOffKeepsTheWholeRunningTlsSection) {
  const Config a = running();
  const ReloadPlan plan =
      diff(a, next([](YAML::Node& n) { n["tls"] = YAML::Load("{ enabled: false }"); }));
  EXPECT_EQ(classes(plan),
            (std::map<std::string, ReloadClass>{{"tls.enabled", ReloadClass::Restart}}));
  EXPECT_TRUE(plan.config.tls.enabled);
  EXPECT_EQ(plan.config.tls.certificate, a.tls.certificate);
  EXPECT_EQ(plan.config.tls.client_names, a.tls.client_names);
}

TEST_F(ReloadPlanTest, TlsFilesAndNamesAreLive) {
  const Config a = running();
  write("tls/new.crt", "-----BEGIN CERTIFICATE-----\n");
  const ReloadPlan plan = diff(a, next([](YAML::Node& n) {
                                 n["tls"]["certificate"] = "tls/new.crt";
                                 n["tls"]["client_names"] =
                                     YAML::Load("[cks.kms.us-east-1.amazonaws.com]");
                               }));
  EXPECT_EQ(classes(plan), (std::map<std::string, ReloadClass>{
                               {"tls.certificate", ReloadClass::Live},
                               {"tls.client_names", ReloadClass::Live},
                           }));
  EXPECT_EQ(plan.config.tls.client_names,
            std::vector<std::string>{"cks.kms.us-east-1.amazonaws.com"});
}

TEST_F(ReloadPlanTest, HsmSettingsNeedNewSessionsAndTheWorkerCountARestart) {
  const Config a = running();
  const ReloadPlan plan = diff(a, next([](YAML::Node& n) {
                                 n["hsm"]["sessions"] = 4;
                                 n["hsm"]["health_key"] = "other-health";
                               }));
  EXPECT_EQ(classes(plan), (std::map<std::string, ReloadClass>{
                               {"hsm.sessions", ReloadClass::NewHsmSessions},
                               {"hsm.sessions (sum: HSM worker threads)", ReloadClass::Restart},
                               {"hsm.health_key", ReloadClass::NewHsmSessions},
                           }));
  EXPECT_TRUE(plan.needs_new_hsm_sessions());
  EXPECT_EQ(plan.config.hsms.at(0).sessions, 4U);  // the new engine's sessions
  EXPECT_THAT(plan.describe(), Contains("hsm.health_key: other-health"));
}

TEST_F(ReloadPlanTest, ANewPinNeedsNewSessionsAndIsNeverShown) {
  const Config a = running();
  write("secrets/hsm.pin", "a-brand-new-pin-value\n");
  const ReloadPlan plan = diff(a, running());
  EXPECT_EQ(classes(plan),
            (std::map<std::string, ReloadClass>{{"hsm.pin", ReloadClass::NewHsmSessions}}));
  EXPECT_THAT(plan.describe(), ElementsAre("hsm.pin: changed"));
  EXPECT_EQ(all_details(plan).find("a-brand-new-pin-value"), std::string::npos);
  EXPECT_EQ(all_details(plan).find(kPin), std::string::npos);
}

TEST_F(ReloadPlanTest, CredentialRotationIsLiveAndNamesOnlyAccessKeyIds) {
  const Config a = running();
  const ReloadPlan added = diff(
      a, next([](YAML::Node& n) {
        n["keystores"][0]["credentials"].push_back(YAML::Load(
            "{ access_key_id: AKIAXKSPROXYEXAMPLE3, secret: { file: secrets/other.secret } }"));
      }));
  EXPECT_EQ(classes(added),
            (std::map<std::string, ReloadClass>{{"keystores.credentials", ReloadClass::Live}}));
  EXPECT_THAT(added.describe(),
              ElementsAre("/demo/kms/xks/v1: credential added: AKIAXKSPROXYEXAMPLE3"));
  const ReloadPlan removed = diff(added.config, running());
  EXPECT_THAT(removed.describe(),
              ElementsAre("/demo/kms/xks/v1: credential removed: AKIAXKSPROXYEXAMPLE3"));
  // The same access key id with a new secret: changed, the secret never shown.
  write("secrets/demo.secret", std::string(kSecret2) + "\n");
  const ReloadPlan rewritten = diff(a, running());
  EXPECT_THAT(rewritten.describe(),
              ElementsAre("/demo/kms/xks/v1: credential changed: AKIAXKSPROXYEXAMPLE2"));
  EXPECT_EQ(all_details(rewritten).find(kSecret2), std::string::npos);
}

TEST_F(ReloadPlanTest, KeyStoresAddedAndRemoved) {
  const Config a = running();
  const ReloadPlan plan = diff(a, next([](YAML::Node& n) {
                                 YAML::Node other = YAML::Clone(n["keystores"][0]);
                                 other["uri_path"] = "/other/kms/xks/v1";
                                 n["keystores"].push_back(other);
                                 n["keystores"][0]["enabled"] = false;
                                 n["keystores"][0]["quota"] = YAML::Load("{ rate: 100 }");
                               }));
  EXPECT_THAT(plan.describe(), ElementsAre("keystore added: /other/kms/xks/v1",
                                           "/demo/kms/xks/v1: keystore disabled",
                                           "/demo/kms/xks/v1: quota rate 100 burst 100"));
  const ReloadPlan back = diff(plan.config, a);
  EXPECT_THAT(back.describe(), Contains("keystore removed: /other/kms/xks/v1"));
}

TEST_F(ReloadPlanTest, EveryRuleHasAClassAndOneName) {
  std::set<std::string_view> names;
  for (const auto& rule : reload_rules()) {
    EXPECT_TRUE(names.insert(rule.setting).second) << rule.setting;
    EXPECT_NE(to_string(rule.cls), "unknown") << rule.setting;
  }
  EXPECT_GT(names.size(), 40U);
  EXPECT_EQ(to_string(ReloadClass::Live), "live");
  EXPECT_EQ(to_string(ReloadClass::NewHsmSessions), "new HSM sessions");
  EXPECT_EQ(to_string(ReloadClass::Restart), "restart");
}

// docs/operations.md, "Reload": a table of | `setting` | class | rows. It must
// list every rule with the code's class, and nothing else.
TEST(ReloadPlanDocs, TheOperationsTableIsTheCodesTable) {
  std::ifstream in(std::string(XKS_SOURCE_DIR) + "/docs/operations.md");
  ASSERT_TRUE(in) << "docs/operations.md not found";
  std::stringstream text;
  text << in.rdbuf();
  const std::string doc = text.str();
  const auto start = doc.find("\n## Reload\n");
  ASSERT_NE(start, std::string::npos) << "no \"## Reload\" section";
  const auto end = doc.find("\n## ", start + 1);
  const std::string section = doc.substr(start, end - start);

  const std::regex row(R"(^\| `([^`]+)` \| (live|new HSM sessions|restart) \|)");
  std::map<std::string, std::string> documented;
  std::istringstream lines(section);
  for (std::string line; std::getline(lines, line);) {
    std::smatch m;
    if (std::regex_search(line, m, row)) {
      EXPECT_TRUE(documented.emplace(m[1].str(), m[2].str()).second) << "twice: " << m[1];
    }
  }
  std::map<std::string, std::string> code;
  for (const auto& rule : reload_rules()) {
    code.emplace(std::string(rule.setting), std::string(to_string(rule.cls)));
  }
  EXPECT_EQ(documented, code);
}

}  // namespace
}  // namespace xks::config::test
