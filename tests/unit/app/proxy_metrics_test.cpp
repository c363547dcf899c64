// The proxy's metrics: names, labels and values as a scrape sees them.
#include "xks/app/proxy_metrics.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "unit/obs/exposition_util.hpp"

namespace xks::app {
namespace {

using namespace std::chrono_literals;
using obs::test::sample;
using std::chrono::system_clock;

const system_clock::time_point kNow{1'700'000'000s};

ProxyMetrics make_metrics() {
  return ProxyMetrics(ProxyMetrics::Options{
      .version = "1.2.3", .now = [] { return kNow; }, .process_metrics = false});
}

std::size_t count_lines_starting_with(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::size_t n = 0;
  for (std::string line; std::getline(in, line);) n += line.starts_with(prefix) ? 1 : 0;
  return n;
}

config::Credential credential(std::string id, std::optional<system_clock::time_point> not_after) {
  config::Credential c;
  c.access_key_id = std::move(id);
  c.not_after = not_after;
  return c;
}

TEST(ProxyMetrics, RequestsAreCountedByKeystoreApiAndOutcome) {
  auto m = make_metrics();
  const auto idx = m.register_keystores({"/kms/xks/v1", "/tenant-b/kms/xks/v1"});
  ASSERT_EQ(idx.size(), 2u);
  EXPECT_NE(idx[0], ProxyMetrics::kUnknownKeystore);
  EXPECT_NE(idx[0], idx[1]);

  m.record_request(idx[0], http::Api::Encrypt, std::nullopt, 3ms);
  m.record_request(idx[0], http::Api::Encrypt, std::nullopt, 4ms);
  m.record_request(idx[0], http::Api::Decrypt, ErrorName::InvalidCiphertextException, 2ms);
  m.record_request(idx[1], http::Api::GetKeyMetadata, ErrorName::KeyNotFoundException, 1ms);
  m.record_request(ProxyMetrics::kUnknownKeystore, http::Api::Encrypt,
                   ErrorName::InvalidUriPathException, 100us);
  m.record_request(9999, http::Api::Encrypt, std::nullopt, 1ms);  // ignored, no crash

  const auto text = m.render();
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="Encrypt",outcome="ok"})"),
      "2");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="Decrypt",outcome="InvalidCiphertextException"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_requests_total{keystore="/tenant-b/kms/xks/v1",api="GetKeyMetadata",outcome="KeyNotFoundException"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_requests_total{keystore="unknown",api="Encrypt",outcome="InvalidUriPathException"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="GetHealthStatus",outcome="ThrottlingException"})"),
      "0");
  // Every API x outcome exists from the start, so rate() works from the first error.
  EXPECT_EQ(count_lines_starting_with(text, R"(xks_proxy_requests_total{keystore="/kms/xks/v1",)"),
            kApiCount * kOutcomeCount);
  EXPECT_EQ(kOutcomeCount, 13u);

  // 3 ms, 4 ms and 100 us; the request with a bad index was not recorded at all.
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_count{api="Encrypt"})"), "3");
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_bucket{api="Encrypt",le="0.002"})"),
            "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_bucket{api="Encrypt",le="0.005"})"),
            "3");
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_bucket{api="Encrypt",le="0.25"})"),
            "3");
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_bucket{api="Decrypt",le="+Inf"})"),
            "1");
}

TEST(ProxyMetrics, ReRegisteringOnReloadKeepsCountsAndIndices) {
  auto m = make_metrics();
  const auto before = m.register_keystores({"/a/kms/xks/v1", "/b/kms/xks/v1"});
  m.record_request(before[0], http::Api::Encrypt, std::nullopt, 1ms);
  m.record_request(before[1], http::Api::Decrypt, std::nullopt, 1ms);
  m.record_policy_decision(before[0], PolicyDecision::Deny);

  // The reload drops /b, adds /c and reorders.
  const auto after = m.register_keystores({"/c/kms/xks/v1", "/a/kms/xks/v1"});
  EXPECT_EQ(after[1], before[0]);
  EXPECT_EQ(m.keystore_index("/a/kms/xks/v1"), before[0]);
  EXPECT_EQ(m.keystore_index("/c/kms/xks/v1"), after[0]);
  EXPECT_EQ(m.keystore_index("/nope"), std::nullopt);

  // An in-flight request that resolved its index before the reload still counts.
  m.record_request(before[0], http::Api::Encrypt, std::nullopt, 1ms);
  m.record_request(after[0], http::Api::Encrypt, std::nullopt, 1ms);
  const auto text = m.render();
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_requests_total{keystore="/a/kms/xks/v1",api="Encrypt",outcome="ok"})"),
      "2");
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_requests_total{keystore="/b/kms/xks/v1",api="Decrypt",outcome="ok"})"),
      "1");  // frozen, not reset
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_requests_total{keystore="/c/kms/xks/v1",api="Encrypt",outcome="ok"})"),
      "1");
  EXPECT_EQ(
      sample(text, R"(xks_proxy_policy_decisions_total{keystore="/a/kms/xks/v1",decision="deny"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_policy_decisions_total{keystore="/c/kms/xks/v1",decision="dry_run_deny"})"),
      "0");
}

TEST(ProxyMetrics, ConcurrentRecordingFromEightThreadsSumsExactlyAcrossAReload) {
  auto m = make_metrics();
  const auto ks = m.register_keystores({"/kms/xks/v1"})[0];
  constexpr int kThreads = 8;
  constexpr int kPerThread = 20000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < kPerThread; ++i) {
        m.record_request(ks, http::Api::Encrypt, std::nullopt, 1ms);
        m.record_hsm_call(0, HsmFunction::Encrypt, 1ms);
      }
    });
  }
  // Reloads and scrapes race the recorders.
  for (int i = 0; i < 50; ++i) {
    m.register_keystores({"/other" + std::to_string(i) + "/kms/xks/v1", "/kms/xks/v1"});
    if (i == 10) m.register_hsms({"hsm0"});
    (void)m.render();
  }
  for (auto& th : threads) th.join();
  const auto text = m.render();
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="Encrypt",outcome="ok"})"),
      std::to_string(kThreads * kPerThread));
  EXPECT_EQ(sample(text, R"(xks_proxy_request_duration_seconds_count{api="Encrypt"})"),
            std::to_string(kThreads * kPerThread));
}

TEST(ProxyMetrics, HsmCallsHealthAndSampledGauges) {
  auto m = make_metrics();
  const auto hsm = m.register_hsms({"hsm0", "cloudhsm"});
  EXPECT_EQ(m.register_hsms({"cloudhsm"})[0], hsm[1]);
  EXPECT_EQ(m.hsm_index("hsm0"), hsm[0]);
  m.record_hsm_call(hsm[0], HsmFunction::Encrypt, 3ms);
  m.record_hsm_call(hsm[0], HsmFunction::GenerateRandom, 200us);
  m.record_hsm_call(hsm[1], HsmFunction::KeyAttributes, 300ms);

  m.set_hsm_health("hsm0", "DEGRADED");
  std::atomic<int> leased{3};
  m.set_hsm_session_samplers(
      "hsm0", [&] { return static_cast<double>(leased.load()); }, [] { return 8.0; });
  m.set_worker_pool_samplers([] { return 2.0; }, [] { return 5.0; });

  auto text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_hsm_call_duration_seconds_bucket{hsm="hsm0",function="encrypt",le="0.002"})"),
      "0");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_hsm_call_duration_seconds_bucket{hsm="hsm0",function="encrypt",le="0.005"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_hsm_call_duration_seconds_bucket{hsm="hsm0",function="generate_random",le="0.0005"})"),
      "1");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_hsm_call_duration_seconds_bucket{hsm="cloudhsm",function="key_attributes",le="0.25"})"),
      "0");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_hsm_call_duration_seconds_count{hsm="cloudhsm",function="key_attributes"})"),
      "1");
  EXPECT_EQ(
      sample(text,
             R"(xks_proxy_hsm_call_duration_seconds_count{hsm="hsm0",function="health_check"})"),
      "0");
  EXPECT_EQ(
      sample(text, R"(xks_proxy_hsm_call_duration_seconds_count{hsm="hsm0",function="decrypt"})"),
      "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="hsm0",status="ACTIVE"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="hsm0",status="DEGRADED"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="hsm0",status="UNAVAILABLE"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="cloudhsm",status="ACTIVE"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_sessions_in_use{hsm="hsm0"})"), "3");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_sessions_open{hsm="hsm0"})"), "8");
  EXPECT_EQ(sample(text, "xks_proxy_hsm_queue_depth"), "2");
  EXPECT_EQ(sample(text, "xks_proxy_hsm_workers_busy"), "5");

  leased = 7;  // sampled at scrape, not at registration
  m.set_hsm_health("hsm0", "ACTIVE");
  m.set_hsm_health("new-hsm", "SOMETHING_ELSE");  // registers; unknown statuses still show
  text = m.render();
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_sessions_in_use{hsm="hsm0"})"), "7");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="hsm0",status="ACTIVE"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="hsm0",status="DEGRADED"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="new-hsm",status="SOMETHING_ELSE"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_health{hsm="new-hsm",status="UNAVAILABLE"})"), "0");
  EXPECT_TRUE(m.hsm_index("new-hsm").has_value());

  // A pool torn down by a reload unregisters its samplers.
  m.set_hsm_session_samplers("hsm0", nullptr, nullptr);
  text = m.render();
  EXPECT_EQ(sample(text, R"(xks_proxy_hsm_sessions_in_use{hsm="hsm0"})"), std::nullopt);
}

TEST(ProxyMetrics, ConnectionsTlsThrottlingAndBuildInfo) {
  auto m = make_metrics();
  m.connection_opened();
  m.connection_opened();
  m.connection_opened();
  m.connection_closed();
  m.record_tls_handshake(TlsHandshakeResult::Ok);
  m.record_tls_handshake(TlsHandshakeResult::Ok);
  m.record_tls_handshake(TlsHandshakeResult::Certificate);
  m.record_throttled(ThrottleReason::QueueFull);
  m.record_throttled(ThrottleReason::SessionWait);
  m.record_throttled(ThrottleReason::SessionWait);
  m.record_connection_dropped(DropCause::Evicted);
  m.record_connection_dropped(DropCause::Evicted);
  m.record_connection_dropped(DropCause::HandshakeTimeout);

  const auto text = m.render();
  EXPECT_EQ(sample(text, "xks_proxy_connections_total"), "3");
  EXPECT_EQ(sample(text, "xks_proxy_connections_open"), "2");
  EXPECT_EQ(sample(text, R"(xks_proxy_tls_handshakes_total{result="ok"})"), "2");
  EXPECT_EQ(sample(text, R"(xks_proxy_tls_handshakes_total{result="certificate"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_tls_handshakes_total{result="timeout"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_tls_handshakes_total{result="protocol"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_tls_handshakes_total{result="other"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_throttled_total{reason="queue_full"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_throttled_total{reason="session_wait"})"), "2");
  EXPECT_EQ(sample(text, R"(xks_proxy_throttled_total{reason="quota"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_connections_dropped_total{cause="evicted"})"), "2");
  EXPECT_EQ(sample(text, R"(xks_proxy_connections_dropped_total{cause="handshake_timeout"})"), "1");
  EXPECT_EQ(sample(text, R"(xks_proxy_connections_dropped_total{cause="client_slow"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_build_info{version="1.2.3"})"), "1");
  // Test instances leave out the process metrics; their values change by the second.
  EXPECT_EQ(sample(text, "process_resident_memory_bytes"), std::nullopt);
}

TEST(ProxyMetrics, CertificateExpiryAndDaysRemaining) {
  auto m = make_metrics();
  EXPECT_EQ(sample(m.render(), "xks_proxy_tls_certificate_expiry_seconds"), std::nullopt);
  m.set_tls_certificate_not_after(kNow + 24h * 10 + 5h);
  auto text = m.render();
  EXPECT_EQ(sample(text, "xks_proxy_tls_certificate_expiry_seconds"), "1700882000");
  EXPECT_EQ(sample(text, "xks_proxy_tls_certificate_days_remaining"), "10");
  m.set_tls_certificate_not_after(kNow - 1h);  // expired: negative, alerts fire
  text = m.render();
  EXPECT_EQ(sample(text, "xks_proxy_tls_certificate_days_remaining"), "-1");
}

TEST(ProxyMetrics, CredentialsLastUseAndNotAfterSurviveReloadsOfTheSameId) {
  auto m = make_metrics();
  const auto ks = m.register_keystores({"/kms/xks/v1"})[0];
  m.set_credentials(ks, {credential("AKIAAAAAAAAAAAAAAAAA", kNow + 24h),
                         credential("AKIABBBBBBBBBBBBBBBB", std::nullopt)});
  m.record_credential_use(ks, "AKIAAAAAAAAAAAAAAAAA", kNow - 10s);
  m.record_credential_use(ks, "AKIAUNKNOWNUNKNOWNUN", kNow);  // ignored

  auto text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_last_used_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1699999990");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_last_used_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIABBBBBBBBBBBBBBBB"})"),
      "0");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_not_after_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1700086400");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_not_after_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIABBBBBBBBBBBBBBBB"})"),
      std::nullopt);  // no expiry configured: no series

  // Rotation: B is removed, C is added, A keeps its last use.
  m.set_credentials(ks, {credential("AKIAAAAAAAAAAAAAAAAA", kNow + 48h),
                         credential("AKIACCCCCCCCCCCCCCCC", std::nullopt)});
  text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_last_used_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1699999990");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_not_after_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1700172800");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_last_used_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIABBBBBBBBBBBBBBBB"})"),
      std::nullopt);
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_last_used_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIACCCCCCCCCCCCCCCC"})"),
      "0");

  // A credential that loses its not_after loses the series too.
  m.set_credentials(ks, {credential("AKIAAAAAAAAAAAAAAAAA", std::nullopt)});
  text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_not_after_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      std::nullopt);
}

TEST(ProxyMetrics, CredentialIssueTimeFollowsReloads) {
  auto m = make_metrics();
  const auto ks = m.register_keystores({"/kms/xks/v1"})[0];
  auto a = credential("AKIAAAAAAAAAAAAAAAAA", std::nullopt);
  a.issued = kNow - 24h * 80;
  m.set_credentials(ks, {a, credential("AKIABBBBBBBBBBBBBBBB", std::nullopt)});
  auto text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_issued_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1693088000");
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_issued_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIABBBBBBBBBBBBBBBB"})"),
      std::nullopt);  // a secret from the environment: no issue time
  // Rotation: A's secret file rewritten, B removed.
  a.issued = kNow;
  m.set_credentials(ks, {a});
  text = m.render();
  EXPECT_EQ(
      sample(
          text,
          R"(xks_proxy_credential_issued_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      "1700000000");
  a.issued.reset();
  m.set_credentials(ks, {a});
  EXPECT_EQ(
      sample(
          m.render(),
          R"(xks_proxy_credential_issued_timestamp_seconds{keystore="/kms/xks/v1",access_key_id="AKIAAAAAAAAAAAAAAAAA"})"),
      std::nullopt);
}

TEST(ProxyMetrics, ReloadsByResultAndLastReloadSuccessful) {
  auto m = make_metrics();
  auto text = m.render();
  EXPECT_EQ(sample(text, R"(xks_proxy_config_reloads_total{result="ok"})"), "0");
  EXPECT_EQ(sample(text, R"(xks_proxy_config_reloads_total{result="refused"})"), "0");
  EXPECT_EQ(sample(text, "xks_proxy_config_last_reload_successful"), "1");
  m.record_reload(false);
  text = m.render();
  EXPECT_EQ(sample(text, R"(xks_proxy_config_reloads_total{result="refused"})"), "1");
  EXPECT_EQ(sample(text, "xks_proxy_config_last_reload_successful"), "0");
  m.record_reload(true);
  text = m.render();
  EXPECT_EQ(sample(text, R"(xks_proxy_config_reloads_total{result="ok"})"), "1");
  EXPECT_EQ(sample(text, "xks_proxy_config_last_reload_successful"), "1");
}

TEST(ProxyMetrics, ProcessMetricsAreReadFromProc) {
  ProxyMetrics m(ProxyMetrics::Options{.version = "0.1.0"});
  const auto text = m.render();
  const auto start = sample(text, "process_start_time_seconds");
  ASSERT_TRUE(start.has_value());
  const double started = std::stod(*start);
  const double now = std::chrono::duration<double>(system_clock::now().time_since_epoch()).count();
  EXPECT_GT(started, now - 24 * 3600.0 * 365);
  EXPECT_LE(started, now + 1.0);
  const auto rss = sample(text, "process_resident_memory_bytes");
  ASSERT_TRUE(rss.has_value());
  EXPECT_GT(std::stod(*rss), 1024.0 * 1024.0);
}

TEST(ProxyMetrics, WholeExpositionIsWellFormed) {
  ProxyMetrics m(ProxyMetrics::Options{.version = "0.1.0"});
  const auto ks = m.register_keystores({"/weird\"path\\/kms/xks/v1"})[0];
  m.register_hsms({"hsm0"});
  m.record_request(ks, http::Api::Encrypt, std::nullopt, 1ms);
  m.set_tls_certificate_not_after(system_clock::now() + 24h * 90);
  m.set_worker_pool_samplers([] { return 0.0; }, [] { return 0.0; });
  m.set_hsm_session_samplers(
      "hsm0", [] { return 1.0; }, [] { return 2.0; });
  m.set_credentials(ks, {credential("AKIAAAAAAAAAAAAAAAAA", system_clock::now())});
  obs::test::expect_well_formed(m.render());

  // Every metric the issue asks for is there.
  const auto text = m.render();
  for (const char* name : {"xks_proxy_requests_total",
                           "xks_proxy_request_duration_seconds",
                           "xks_proxy_hsm_call_duration_seconds",
                           "xks_proxy_hsm_sessions_in_use",
                           "xks_proxy_hsm_sessions_open",
                           "xks_proxy_hsm_queue_depth",
                           "xks_proxy_hsm_workers_busy",
                           "xks_proxy_tls_handshakes_total",
                           "xks_proxy_connections_open",
                           "xks_proxy_connections_total",
                           "xks_proxy_hsm_health",
                           "xks_proxy_tls_certificate_expiry_seconds",
                           "xks_proxy_tls_certificate_days_remaining",
                           "xks_proxy_credential_last_used_timestamp_seconds",
                           "xks_proxy_credential_not_after_timestamp_seconds",
                           "xks_proxy_policy_decisions_total",
                           "xks_proxy_throttled_total",
                           "xks_proxy_connections_dropped_total",
                           "xks_proxy_build_info",
                           "process_start_time_seconds",
                           "process_resident_memory_bytes"}) {
    EXPECT_NE(text.find(std::string("# TYPE ") + name + " "), std::string::npos) << name;
  }
}

TEST(ProxyMetrics, TooManyKeystoresIsAStartupError) {
  auto m = make_metrics();
  std::vector<std::string> paths;
  for (std::size_t i = 0; i < ProxyMetrics::kMaxKeystores; ++i) {
    paths.push_back("/" + std::to_string(i) + "/kms/xks/v1");
  }
  EXPECT_THROW(m.register_keystores(paths), std::length_error);  // "unknown" takes a slot
}

}  // namespace
}  // namespace xks::app
