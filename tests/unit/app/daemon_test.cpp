// Daemon::reload with a real configuration file, a fake HSM backend and an
// injected engine factory: what a reload applies at once (into the one
// Runtime, the HSM pool and the health settings), what it opens new HSM
// sessions for, what it keeps until a restart, and what it refuses.
#include "xks/app/daemon.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "unit/api/fake_backend.hpp"
#include "unit/config/config_fixture.hpp"

namespace xks::app {
namespace {

using config::Millis;
using ::testing::Contains;
using ::testing::HasSubstr;

std::shared_ptr<Engine> fake_engine(hsm::HealthStatus status = hsm::HealthStatus::Active) {
  auto backend = std::make_unique<testing::FakeKeyBackend>();
  backend->add_key("demo-aes-label", testing::FakeKeyBackend::aes256());
  hsm::EkmHealth health;
  health.id = "fake";
  health.status = status;
  backend->health = {health};
  return std::make_shared<Engine>(std::move(backend));
}

class DaemonReloadTest : public config::test::ConfigTest {
 protected:
  void SetUp() override {
    ConfigTest::SetUp();
    YAML::Node n = base();
    n["tls"] = YAML::Load("{ enabled: false }");
    write_yaml(n);
    start_engine_ = fake_engine();
    daemon_ = std::make_unique<Daemon>(
        config_file_, std::make_shared<const config::Config>(config::load_config(config_file_)),
        start_engine_, metrics_,
        [this](const config::Config& cfg) -> Result<std::shared_ptr<Engine>> {
          opened_.push_back(cfg.hsms.at(0).sessions);
          if (!factory_error_.empty())
            return make_error(ErrorName::InternalException, factory_error_);
          return fake_engine(next_status_);
        });
  }
  void TearDown() override {
    daemon_.reset();
    ConfigTest::TearDown();
  }

  void write_yaml(const YAML::Node& n) { config_file_ = write_config(n); }
  // The running file, changed by `mutate`, as the next reload reads it.
  void rewrite(const std::function<void(YAML::Node&)>& mutate) {
    YAML::Node n = base();
    n["tls"] = YAML::Load("{ enabled: false }");
    mutate(n);
    write_yaml(n);
  }

  ProxyMetrics metrics_{
      ProxyMetrics::Options{.version = "test", .now = {}, .process_metrics = false}};
  std::filesystem::path config_file_;
  std::shared_ptr<Engine> start_engine_;
  std::vector<unsigned> opened_;  // sessions of each engine the factory opened
  std::string factory_error_;
  hsm::HealthStatus next_status_ = hsm::HealthStatus::Active;
  std::unique_ptr<Daemon> daemon_;
};

TEST_F(DaemonReloadTest, LiveSettingsReachTheRuntimePoolAndHealth) {
  const auto before = daemon_->runtime();
  EXPECT_EQ(daemon_->hsm_pool().queue_capacity(), 1024U);
  rewrite([](YAML::Node& n) {
    n["server"]["limits"]["max_connections"] = 50;
    n["server"]["limits"]["idle_timeout_ms"] = 3000;
    n["server"]["limits"]["hsm_queue_capacity"] = 7;
    n["health"]["interval_ms"] = 2000;
    n["health"]["max_age_ms"] = 30000;
    n["keystores"][0]["keys"][0]["enabled"] = false;
    n["keystores"][0]["credentials"].push_back(YAML::Load(
        "{ access_key_id: AKIAXKSPROXYEXAMPLE3, secret: { file: secrets/other.secret } }"));
  });
  const auto result = daemon_->reload();
  ASSERT_TRUE(result.applied) << result.error;
  EXPECT_FALSE(result.new_hsm_sessions);
  EXPECT_TRUE(opened_.empty());

  const auto rt = daemon_->runtime();
  ASSERT_NE(rt, before);
  EXPECT_EQ(rt->engine, start_engine_);  // the same HSM sessions
  EXPECT_EQ(rt->connection->limits.max_connections, 50U);
  EXPECT_EQ(rt->connection->limits.idle_timeout, Millis(3000));
  EXPECT_EQ(rt->connection->tls, nullptr);
  EXPECT_EQ(daemon_->hsm_pool().queue_capacity(), 7U);
  EXPECT_EQ(rt->config->health.interval, Millis(2000));
  EXPECT_EQ(rt->config->health.max_age, Millis(30000));
  EXPECT_FALSE(rt->keystores.at(0).keys.at("demo-aes-key")->enabled);
  EXPECT_EQ(rt->keystores.at(0).credentials.count(config::test::kAkid2), 1U);
  // The snapshot taken before the reload is untouched.
  EXPECT_EQ(before->connection->limits.max_connections, 100U);
  EXPECT_TRUE(before->keystores.at(0).keys.at("demo-aes-key")->enabled);
  EXPECT_THAT(result.plan->describe(),
              Contains("/demo/kms/xks/v1: credential added: AKIAXKSPROXYEXAMPLE3"));
}

TEST_F(DaemonReloadTest, RestartSettingsKeepTheirRunningValues) {
  const auto port = daemon_->runtime()->config->server.listen_port;
  rewrite([](YAML::Node& n) {
    n["server"]["listen"] = "127.0.0.1:8443";
    n["server"]["threads"] = 5;
    n["metrics"] = YAML::Load("{ listen: \"127.0.0.1:9999\" }");
    n["server"]["fleet_size"] = 3;
  });
  const auto result = daemon_->reload();
  ASSERT_TRUE(result.applied) << result.error;
  EXPECT_THAT(result.plan->restart_settings(), Contains("server.listen"));
  EXPECT_THAT(result.plan->restart_settings(), Contains("server.threads"));
  EXPECT_THAT(result.plan->restart_settings(), Contains("metrics.enabled"));
  const auto cfg = daemon_->runtime()->config;
  EXPECT_EQ(cfg->server.listen_port, port);
  EXPECT_EQ(cfg->server.threads, 2U);
  EXPECT_FALSE(cfg->metrics.enabled);
  EXPECT_EQ(cfg->server.fleet_size, 3U);  // live
  EXPECT_TRUE(opened_.empty());
}

TEST_F(DaemonReloadTest, HsmSettingsOpenNewSessionsOnTheSameWorkers) {
  EXPECT_EQ(daemon_->hsm_pool().threads(), 8U);
  rewrite([](YAML::Node& n) { n["hsm"]["sessions"] = 4; });
  const auto result = daemon_->reload();
  ASSERT_TRUE(result.applied) << result.error;
  EXPECT_TRUE(result.new_hsm_sessions);
  EXPECT_EQ(opened_, std::vector<unsigned>{4});
  EXPECT_NE(daemon_->runtime()->engine, start_engine_);
  EXPECT_EQ(daemon_->runtime()->config->hsms.at(0).sessions, 4U);
  // The worker threads stay as started.
  EXPECT_EQ(daemon_->hsm_pool().threads(), 8U);
  EXPECT_THAT(result.plan->restart_settings(), Contains("hsm.sessions (sum: HSM worker threads)"));
}

TEST_F(DaemonReloadTest, AnUnavailableHsmIsReopenedByAnyReload) {
  // First reload: new sessions (a new health key); the new engine reports UNAVAILABLE.
  next_status_ = hsm::HealthStatus::Unavailable;
  rewrite([](YAML::Node& n) { n["hsm"]["health_key"] = "other-health"; });
  ASSERT_TRUE(daemon_->reload().applied);
  ASSERT_EQ(daemon_->health().current().at(0).status, hsm::HealthStatus::Unavailable);
  ASSERT_EQ(opened_.size(), 1U);
  // Second reload of the same file: nothing changed, but the HSM is reopened.
  next_status_ = hsm::HealthStatus::Active;
  const auto result = daemon_->reload();
  ASSERT_TRUE(result.applied) << result.error;
  EXPECT_TRUE(result.plan->changes.empty());
  EXPECT_TRUE(result.new_hsm_sessions);
  EXPECT_EQ(opened_.size(), 2U);
  EXPECT_EQ(daemon_->health().current().at(0).status, hsm::HealthStatus::Active);
}

TEST_F(DaemonReloadTest, AFileThatDoesNotLoadIsRefused) {
  const auto before = daemon_->runtime();
  write_config_text("server: [unclosed\n");
  const auto result = daemon_->reload();
  EXPECT_FALSE(result.applied);
  EXPECT_THAT(result.error, HasSubstr("syntax error"));
  EXPECT_FALSE(result.plan.has_value());
  EXPECT_EQ(daemon_->runtime(), before);
}

TEST_F(DaemonReloadTest, HsmsThatDoNotOpenRefuseTheWholeReload) {
  const auto before = daemon_->runtime();
  factory_error_ = "HSM login refused (CKR_PIN_INCORRECT)";
  rewrite([](YAML::Node& n) {
    n["hsm"]["health_key"] = "other-health";
    n["server"]["limits"]["hsm_queue_capacity"] = 7;
  });
  const auto result = daemon_->reload();
  EXPECT_FALSE(result.applied);
  EXPECT_THAT(result.error, HasSubstr("CKR_PIN_INCORRECT"));
  EXPECT_EQ(daemon_->runtime(), before);
  EXPECT_EQ(daemon_->hsm_pool().queue_capacity(), 1024U);  // nothing applied
}

TEST_F(DaemonReloadTest, OpenConnectionsKeepTheirSettingsButNotTheOldEngine) {
  std::weak_ptr<Engine> old_engine = start_engine_;
  auto settings = daemon_->runtime()->connection;  // as an open connection holds it
  start_engine_.reset();
  rewrite([](YAML::Node& n) {
    n["server"]["limits"]["max_connections"] = 50;
    n["hsm"]["health_key"] = "other-health";
  });
  ASSERT_TRUE(daemon_->reload().applied);
  EXPECT_EQ(settings->limits.max_connections, 100U);
  EXPECT_EQ(daemon_->runtime()->connection->limits.max_connections, 50U);
  EXPECT_TRUE(old_engine.expired());  // its sessions are closed
}

}  // namespace
}  // namespace xks::app
