// XksHandler::handle end to end without sockets or an HSM: requests signed
// with the project's SigV4 signer, the in-memory fake KeyBackend behind the
// real XksService, the real worker pool, metrics and logger. Covers every
// errorName the pipeline produces, the order of its checks, and the fields of
// the access-log line.
#include "xks/app/handler.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/http/field.hpp>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "unit/api/fake_backend.hpp"
#include "unit/api/test_util.hpp"
#include "xks/obs/log.hpp"
#include "xks/policy/policy.hpp"

namespace xks::app {
namespace {

namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace bhttp = boost::beast::http;
using namespace std::chrono_literals;
using nlohmann::json;
using ::testing::HasSubstr;
using ::testing::Not;
using xks::testing::b64;
using xks::testing::request_metadata;

constexpr std::string_view kUriPath = "/ks/kms/xks/v1";
constexpr std::string_view kAkid = "AKIDAAAAAAAAAAAAAAAA";
constexpr std::string_view kSecret = "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2U=";
constexpr std::string_view kExpiredAkid = "AKIDEXPIREDAAAAAAAAA";
constexpr std::string_view kRegion = "us-east-2";  // request_metadata()'s kmsKeyArn region
constexpr std::string_view kRequestId = "4112f4d6-db54-4af4-ae30-c55a22a8dfae";

// A FakeKeyBackend that can be told to fail the next HSM calls with an error.
class ScriptedBackend final : public xks::testing::FakeKeyBackend {
 public:
  Result<hsm::GcmCiphertext> encrypt(std::string_view label, ByteView plaintext,
                                     ByteView aad) override {
    if (fail_with) return *fail_with;
    return FakeKeyBackend::encrypt(label, plaintext, aad);
  }
  std::optional<Error> fail_with;
};

// How a test request is signed.
struct Signing {
  std::string_view akid = kAkid;
  std::string_view secret = kSecret;
  std::string_view region = kRegion;
  bool sign = true;
};

struct Sent {
  unsigned status = 0;
  json body;
  std::string allow;
  bool authenticated = false;
};

class HandlerTest : public ::testing::Test {
 protected:
  HandlerTest() {
    config::KeyStore ks;
    ks.uri_path = std::string(kUriPath);
    config::Credential cred;
    cred.access_key_id = std::string(kAkid);
    cred.secret = SecureString(std::string(kSecret));
    cred.not_after = std::chrono::system_clock::now() + 24h;
    ks.credentials.push_back(cred);
    config::Credential expired = cred;
    expired.access_key_id = std::string(kExpiredAkid);
    expired.not_after = std::chrono::system_clock::now() - 1h;
    ks.credentials.push_back(expired);
    ks.keys.push_back(key("k1", "label-1"));
    ks.keys.push_back(key("k-disabled", "label-disabled", false));
    ks.keys.push_back(key("k-encrypt-only", "label-eo"));
    cfg_.keystores.push_back(std::move(ks));
    cfg_.server.request_deadline = 5000ms;  // sanitizers on a busy machine

    backend_ = new ScriptedBackend;
    backend_->add_key("label-1", xks::testing::FakeKeyBackend::aes256());
    backend_->add_key("label-disabled", xks::testing::FakeKeyBackend::aes256());
    backend_->add_key("label-eo", xks::testing::FakeKeyBackend::aes256(true, false));
    hsm::EkmHealth h;
    h.id = "fake";
    h.status = hsm::HealthStatus::Active;
    backend_->health = {h};
    engine_ = std::make_shared<Engine>(std::unique_ptr<hsm::KeyBackend>(backend_));

    char tmpl[] = "/tmp/xks-handler-test-XXXXXX";
    EXPECT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    config::LoggingConfig logging;
    logging.file = config::LogFileConfig{};
    logging.file->path = dir_ / "xks.log";
    obs::init_logging(logging);
  }

  ~HandlerTest() override {
    if (handler_) pool_->stop();
    obs::init_logging(config::LoggingConfig{});
    fs::remove_all(dir_);
  }

  static config::KeyEntry key(std::string id, std::string label, bool enabled = true) {
    config::KeyEntry k;
    k.id = std::move(id);
    k.label = std::move(label);
    k.enabled = enabled;
    return k;
  }
  config::KeyStore& keystore() { return cfg_.keystores[0]; }

  // Builds the pipeline from cfg_; called by the first send().
  void start() {
    auto cfg = std::make_shared<const config::Config>(cfg_);
    const auto indices = metrics_.register_keystores({std::string(kUriPath)});
    holder_ = std::make_unique<RuntimeHolder>(
        std::make_shared<const Runtime>(cfg, engine_, indices, nullptr));
    pool_ = std::make_unique<core::BlockingPool>(2, queue_capacity_, "test-hsm");
    health_ = std::make_unique<HealthMonitor>(
        ioc_, *pool_, [this] { return engine_->backend->check_health(); },
        [health = cfg_.health] { return health; });
    health_->check_now();
    handler_ = std::make_unique<XksHandler>(*holder_, *pool_, *health_, verifier_, metrics_);
  }

  Sent send(bhttp::verb method, const std::string& target, const std::string& body,
            Signing signing = {}, net::RequestContext ctx = {}) {
    if (!handler_) start();
    net::Request req{method, target, 11};
    req.set(bhttp::field::host, "xks.example.com");
    req.set(bhttp::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    if (signing.sign) {
      const auto s = auth::sign(auth::SignInput{.method = req.method_string(),
                                                .host = "xks.example.com",
                                                .target = target,
                                                .body = body,
                                                .region = signing.region,
                                                .access_key_id = signing.akid,
                                                .secret = signing.secret,
                                                .now = std::chrono::system_clock::now()});
      req.set(bhttp::field::authorization, s.authorization);
      req.set("X-Amz-Date", s.amz_date);
    }
    if (ctx.peer.empty()) ctx.peer = "192.0.2.1:40000";
    ctx.arrival = core::SteadyClock::now();
    std::optional<net::Response> res;
    asio::co_spawn(ioc_, handler_->handle(req, ctx), [&](std::exception_ptr e, net::Response r) {
      if (e) std::rethrow_exception(e);
      res = std::move(r);
    });
    ioc_.restart();
    ioc_.run();
    EXPECT_TRUE(res.has_value());
    Sent out;
    out.status = res->result_int();
    out.body = json::parse(res->body(), nullptr, false);
    out.allow = std::string((*res)[bhttp::field::allow]);
    out.authenticated = ctx.authenticated;
    EXPECT_EQ((*res)[bhttp::field::content_type], "application/json");
    return out;
  }

  Sent post(const std::string& target, const json& body, Signing signing = {},
            net::RequestContext ctx = {}) {
    return send(bhttp::verb::post, target, body.dump(), signing, ctx);
  }
  Sent post_raw(const std::string& target, const std::string& body, Signing signing = {}) {
    return send(bhttp::verb::post, target, body, signing);
  }

  static std::string path(std::string_view suffix) {
    return std::string(kUriPath) + std::string(suffix);
  }
  static std::string key_path(std::string_view id, std::string_view op) {
    return path("/keys/" + std::string(id) + "/" + std::string(op));
  }

  static json encrypt_body(std::string_view plaintext = "secret plaintext",
                           json md = request_metadata("Encrypt")) {
    return {{"requestMetadata", std::move(md)},
            {"plaintext", b64(plaintext)},
            {"encryptionAlgorithm", "AES_GCM"}};
  }
  static json metadata_body() { return {{"requestMetadata", request_metadata("DescribeKey")}}; }
  static json health_body() {
    return {
        {"requestMetadata", {{"kmsRequestId", kRequestId}, {"kmsOperation", "KmsHealthCheck"}}}};
  }
  // A decrypt body for what `encrypted` (an Encrypt response) holds.
  static json decrypt_body(const json& encrypted) {
    json body = {{"requestMetadata", request_metadata("Decrypt")},
                 {"ciphertext", encrypted["ciphertext"]},
                 {"initializationVector", encrypted["initializationVector"]},
                 {"authenticationTag", encrypted["authenticationTag"]},
                 {"encryptionAlgorithm", "AES_GCM"}};
    if (encrypted.contains("ciphertextMetadata")) {
      body["ciphertextMetadata"] = encrypted["ciphertextMetadata"];
    }
    return body;
  }

  // The access lines logged so far.
  std::vector<json> access_lines() const {
    obs::flush();
    std::vector<json> out;
    std::ifstream in(dir_ / "xks.log");
    for (std::string line; std::getline(in, line);) {
      auto j = json::parse(line, nullptr, false);
      if (!j.is_discarded() && j.value("event", "") == "access") out.push_back(std::move(j));
    }
    return out;
  }
  json last_access() const {
    auto lines = access_lines();
    EXPECT_FALSE(lines.empty());
    return lines.empty() ? json::object() : lines.back();
  }
  std::string log_text() const {
    obs::flush();
    std::ifstream in(dir_ / "xks.log");
    return std::string(std::istreambuf_iterator<char>(in), {});
  }

  std::optional<std::string> metric(const std::string& series) const {
    const std::string text = metrics_.render();
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
      if (line.starts_with(series + " ")) return line.substr(series.size() + 1);
    }
    return std::nullopt;
  }
  std::optional<std::string> requests(std::string_view api, std::string_view outcome) const {
    return metric("xks_proxy_requests_total{keystore=\"" + std::string(kUriPath) + "\",api=\"" +
                  std::string(api) + "\",outcome=\"" + std::string(outcome) + "\"}");
  }
  std::optional<std::string> throttled(std::string_view reason) const {
    return metric("xks_proxy_throttled_total{reason=\"" + std::string(reason) + "\"}");
  }

  static void expect_error(const Sent& s, unsigned status, std::string_view name,
                           std::string_view message_part = {}) {
    EXPECT_EQ(s.status, status) << s.body.dump();
    EXPECT_EQ(s.body.value("errorName", ""), name) << s.body.dump();
    if (!message_part.empty()) {
      EXPECT_THAT(s.body.value("errorMessage", ""), HasSubstr(std::string(message_part)));
    }
  }

  config::Config cfg_;
  std::size_t queue_capacity_ = 64;
  ScriptedBackend* backend_;  // owned by engine_
  std::shared_ptr<Engine> engine_;
  fs::path dir_;
  asio::io_context ioc_;
  ProxyMetrics metrics_{
      ProxyMetrics::Options{.version = "test", .now = {}, .process_metrics = false}};
  auth::SigV4Verifier verifier_;
  std::unique_ptr<RuntimeHolder> holder_;
  std::unique_ptr<core::BlockingPool> pool_;
  std::unique_ptr<HealthMonitor> health_;
  std::unique_ptr<XksHandler> handler_;
};

// ---------------------------------------------------------------- success paths

TEST_F(HandlerTest, EncryptDecryptMetadataAndHealthSucceed) {
  const auto enc = post(key_path("k1", "encrypt"), encrypt_body("hello"));
  ASSERT_EQ(enc.status, 200u) << enc.body.dump();
  EXPECT_TRUE(enc.authenticated);
  EXPECT_TRUE(enc.body.contains("ciphertext"));
  EXPECT_EQ(backend_->last_label, "label-1");

  const auto dec = post(key_path("k1", "decrypt"), decrypt_body(enc.body));
  ASSERT_EQ(dec.status, 200u) << dec.body.dump();
  EXPECT_EQ(dec.body["plaintext"], b64("hello"));

  const auto md = post(key_path("k1", "metadata"), metadata_body());
  ASSERT_EQ(md.status, 200u) << md.body.dump();
  EXPECT_EQ(md.body["keySpec"], "AES_256");
  EXPECT_EQ(md.body["keyStatus"], "ENABLED");

  const auto health = post(path("/health"), health_body());
  ASSERT_EQ(health.status, 200u) << health.body.dump();
  EXPECT_EQ(health.body["ekmFleetDetails"][0]["healthStatus"], "ACTIVE");

  EXPECT_EQ(requests("Encrypt", "ok"), "1");
  EXPECT_EQ(requests("Decrypt", "ok"), "1");
  EXPECT_EQ(requests("GetKeyMetadata", "ok"), "1");
  EXPECT_EQ(requests("GetHealthStatus", "ok"), "1");
}

TEST_F(HandlerTest, PingAnswersGetAndHeadOnlyWithoutAuthentication) {
  const auto ok = send(bhttp::verb::get, "/ping", "", Signing{.sign = false});
  EXPECT_EQ(ok.status, 200u);
  EXPECT_EQ(ok.body["status"], "ok");
  EXPECT_FALSE(ok.authenticated);
  EXPECT_EQ(last_access()["api"], "Ping");
  EXPECT_EQ(last_access()["outcome"], "ok");

  const auto posted = send(bhttp::verb::post, "/ping", "", Signing{.sign = false});
  expect_error(posted, 405, "ValidationException", "only answers GET and HEAD");
  EXPECT_EQ(posted.allow, "GET, HEAD");

  handler_->begin_stopping();
  const auto stopping = send(bhttp::verb::get, "/ping", "", Signing{.sign = false});
  EXPECT_EQ(stopping.status, 503u);
  EXPECT_EQ(stopping.body["status"], "stopping");
}

// ---------------------------------------------------------------- one test per errorName row

TEST_F(HandlerTest, UnknownPathIsInvalidUriPath) {
  const auto s = post("/other/kms/xks/v1/health", health_body());
  expect_error(s, 404, "InvalidUriPathException");
  const auto line = last_access();
  EXPECT_EQ(line["keystore"], "-");
  EXPECT_EQ(line["api"], "-");
  EXPECT_EQ(line["outcome"], "InvalidUriPathException");
  EXPECT_EQ(
      metric(
          R"(xks_proxy_requests_total{keystore="unknown",api="GetHealthStatus",outcome="InvalidUriPathException"})"),
      "0");  // not routed: no API to count it under
}

TEST_F(HandlerTest, OtherMethodsOnApiUrisAre405WithAllowPost) {
  for (const auto verb : {bhttp::verb::get, bhttp::verb::put, bhttp::verb::delete_}) {
    const auto s = send(verb, key_path("k1", "encrypt"), "", Signing{.sign = false});
    expect_error(s, 405, "ValidationException", "XKS API calls use POST");
    EXPECT_EQ(s.allow, "POST");
    EXPECT_FALSE(s.authenticated);
  }
  EXPECT_EQ(requests("Encrypt", "ValidationException"), "3");
}

TEST_F(HandlerTest, AuthenticationFailures) {
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(), Signing{.sign = false}), 401,
               "AuthenticationFailedException", "missing Authorization header");
  expect_error(
      post(key_path("k1", "encrypt"), encrypt_body(), Signing{.akid = "AKIDUNKNOWNAAAAAAAAA"}), 401,
      "AuthenticationFailedException", "unknown access key id \"AKIDUNKNOWNAAAAAAAAA\"");
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(),
                    Signing{.secret = "d3JvbmdzZWNyZXR3cm9uZ3NlY3JldHdyb25nc2VjcmV0"}),
               401, "AuthenticationFailedException", "signature does not match");
  const auto expired =
      post(key_path("k1", "encrypt"), encrypt_body(), Signing{.akid = kExpiredAkid});
  expect_error(expired, 401, "AuthenticationFailedException");
  EXPECT_EQ(expired.body["errorMessage"],
            "access key id \"AKIDEXPIREDAAAAAAAAA\" has expired (its not_after has passed)");
  EXPECT_FALSE(expired.authenticated);
  const auto line = last_access();
  EXPECT_THAT(line.value("detail", ""), HasSubstr("keystores[].credentials[].not_after"));
  EXPECT_FALSE(line.contains("accessKeyId"));
  EXPECT_EQ(backend_->encrypt_calls, 0);
  EXPECT_EQ(requests("Encrypt", "AuthenticationFailedException"), "4");
}

TEST_F(HandlerTest, ExpiredCredentialWithAWrongSignatureStillSaysExpired) {
  const auto s =
      post(key_path("k1", "encrypt"), encrypt_body(),
           Signing{.akid = kExpiredAkid, .secret = "d3JvbmdzZWNyZXR3cm9uZ3NlY3JldHdyb25nc2VjcmV0"});
  expect_error(s, 401, "AuthenticationFailedException", "has expired");
}

TEST_F(HandlerTest, RegionOfTheScopeAndOfTheClientCertificate) {
  keystore().region = std::string(kRegion);
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(), Signing{.region = "eu-west-1"}), 401,
               "AuthenticationFailedException",
               "the SigV4 credential scope names region 'eu-west-1' but key store /ks/kms/xks/v1 "
               "serves region 'us-east-2' (keystores[].region)");
  net::RequestContext mtls;
  mtls.client_subject = "CN=cks.kms.eu-west-1.amazonaws.com";
  mtls.client_cn = "cks.kms.eu-west-1.amazonaws.com";
  const auto cert = post(key_path("k1", "encrypt"), encrypt_body(), {}, mtls);
  expect_error(cert, 401, "AuthenticationFailedException", "the client certificate is not KMS's");
  EXPECT_THAT(last_access().value("detail", ""), HasSubstr("cks.kms.eu-west-1.amazonaws.com"));

  net::RequestContext kms;
  kms.client_subject = "CN=" + config::kms_client_name(kRegion);
  kms.client_cn = config::kms_client_name(kRegion);
  EXPECT_EQ(post(key_path("k1", "encrypt"), encrypt_body(), {}, kms).status, 200u);
}

TEST_F(HandlerTest, QuotaThrottlesAfterAuthenticationAndNeverHealth) {
  keystore().quota_rate = 0.001;  // one token, no refill within the test
  keystore().quota_burst = 1;
  // Unauthenticated requests do not spend the quota.
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(), Signing{.sign = false}), 401,
               "AuthenticationFailedException");
  EXPECT_EQ(post(key_path("k1", "encrypt"), encrypt_body()).status, 200u);
  const auto s = post(key_path("k1", "encrypt"), encrypt_body());
  expect_error(s, 429, "ThrottlingException", "above this key store's quota");
  EXPECT_EQ(last_access()["detail"], "key store quota exceeded");
  EXPECT_EQ(backend_->encrypt_calls, 1);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(post(path("/health"), health_body()).status, 200u);
  EXPECT_EQ(throttled("quota"), "1");
  EXPECT_EQ(throttled("queue_full"), "0");
  EXPECT_EQ(throttled("session_wait"), "0");
}

TEST_F(HandlerTest, FullHsmQueueThrottles) {
  queue_capacity_ = 0;  // every submission is refused
  const auto s = post(key_path("k1", "encrypt"), encrypt_body());
  expect_error(s, 429, "ThrottlingException", "HSM work queue full");
  EXPECT_EQ(last_access()["detail"], "HSM work queue full");
  EXPECT_EQ(backend_->encrypt_calls, 0);
  // A body that does not parse, for a key that exists, also goes through the queue.
  expect_error(post_raw(key_path("k1", "decrypt"), "{"), 429, "ThrottlingException");
  EXPECT_EQ(throttled("queue_full"), "2");
  EXPECT_EQ(throttled("quota"), "0");
  EXPECT_EQ(throttled("session_wait"), "0");
  EXPECT_EQ(requests("Encrypt", "ThrottlingException"), "1");
  EXPECT_EQ(requests("Decrypt", "ThrottlingException"), "1");
}

TEST_F(HandlerTest, HsmSessionWaitThrottles) {
  backend_->fail_with = make_error(ErrorName::ThrottlingException, "all sessions busy",
                                   "session pool exhausted", Error::Cause::SessionWait);
  expect_error(post(key_path("k1", "encrypt"), encrypt_body()), 429, "ThrottlingException");
  // A ThrottlingException without a cause is counted as a session wait too.
  backend_->fail_with = make_error(ErrorName::ThrottlingException, "busy");
  expect_error(post(key_path("k1", "encrypt"), encrypt_body()), 429, "ThrottlingException");
  EXPECT_EQ(throttled("session_wait"), "2");
  EXPECT_EQ(throttled("queue_full"), "0");
  EXPECT_EQ(throttled("quota"), "0");
}

TEST_F(HandlerTest, UnknownKeyIsKeyNotFound) {
  for (const char* op : {"encrypt", "decrypt", "metadata"}) {
    const json body = std::string_view(op) == "metadata" ? metadata_body() : encrypt_body();
    expect_error(post(key_path("nope", op), body), 404, "KeyNotFoundException",
                 "no key with externalKeyId 'nope' in this key store");
  }
  EXPECT_EQ(backend_->attribute_calls + backend_->encrypt_calls + backend_->decrypt_calls, 0);
}

TEST_F(HandlerTest, DisabledKeyStoreIsInvalidStateButHealthAnswers) {
  keystore().enabled = false;
  for (const char* op : {"encrypt", "decrypt", "metadata"}) {
    const json body = std::string_view(op) == "metadata" ? metadata_body() : encrypt_body();
    const auto s = post(key_path("k1", op), body);
    expect_error(s, 400, "InvalidStateException", "is disabled in the XKS proxy configuration");
    EXPECT_EQ(last_access()["detail"], "keystores[].enabled: false");
  }
  // Even for a key it does not hold.
  expect_error(post(key_path("nope", "encrypt"), encrypt_body()), 400, "InvalidStateException");
  EXPECT_EQ(post(path("/health"), health_body()).status, 200u);
}

TEST_F(HandlerTest, DisabledKeyIsInvalidStateExceptForMetadata) {
  expect_error(post(key_path("k-disabled", "encrypt"), encrypt_body()), 400,
               "InvalidStateException", "external key 'k-disabled' is disabled");
  EXPECT_EQ(last_access()["detail"], "key entry 'k-disabled' has enabled: false");
  const auto enc = post(key_path("k1", "encrypt"), encrypt_body());
  ASSERT_EQ(enc.status, 200u);
  expect_error(post(key_path("k-disabled", "decrypt"), decrypt_body(enc.body)), 400,
               "InvalidStateException");
  const auto md = post(key_path("k-disabled", "metadata"), metadata_body());
  ASSERT_EQ(md.status, 200u) << md.body.dump();
  EXPECT_EQ(md.body["keyStatus"], "DISABLED");
}

TEST_F(HandlerTest, PolicyDenialIsAccessDeniedAndHealthIsExempt) {
  keystore().policy = policy::parse_policy(
      "statements:\n"
      "  - {sid: only-other, effect: allow, keys: [other]}\n");
  const auto s = post(key_path("k1", "encrypt"), encrypt_body());
  expect_error(s, 403, "AccessDeniedException");
  EXPECT_EQ(backend_->encrypt_calls, 0);
  EXPECT_EQ(post(path("/health"), health_body()).status, 200u);
  EXPECT_EQ(
      metric(R"(xks_proxy_policy_decisions_total{keystore="/ks/kms/xks/v1",decision="deny"})"),
      "1");
}

TEST_F(HandlerTest, KmsKeyArnOfAnotherRegionIsAccessDenied) {
  keystore().region = std::string(kRegion);
  json md = request_metadata("Encrypt");
  md["kmsKeyArn"] = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab";
  expect_error(post(key_path("k1", "encrypt"), encrypt_body("x", md)), 403, "AccessDeniedException",
               "requestMetadata.kmsKeyArn names region 'eu-west-1' but key store "
               "/ks/kms/xks/v1 serves region 'us-east-2'");
  md["kmsKeyArn"] = "not-an-arn";
  expect_error(post(key_path("k1", "encrypt"), encrypt_body("x", md)), 403, "AccessDeniedException",
               "is not an ARN with a region");
  EXPECT_EQ(backend_->encrypt_calls, 0);
  json metadata = metadata_body();
  metadata["requestMetadata"].erase("kmsKeyArn");  // absent: nothing to check
  EXPECT_EQ(post(key_path("k1", "metadata"), metadata).status, 200u);
}

TEST_F(HandlerTest, KeyWithoutTheUsageIsInvalidKeyUsage) {
  const auto enc = post(key_path("k1", "encrypt"), encrypt_body());
  ASSERT_EQ(enc.status, 200u);
  expect_error(post(key_path("k-encrypt-only", "decrypt"), decrypt_body(enc.body)), 400,
               "InvalidKeyUsageException");
  backend_->add_key("label-1", xks::testing::FakeKeyBackend::aes256(false, true));
  expect_error(post(key_path("k1", "encrypt"), encrypt_body()), 400, "InvalidKeyUsageException");
}

TEST_F(HandlerTest, TamperedCiphertextIsInvalidCiphertext) {
  const auto enc = post(key_path("k1", "encrypt"), encrypt_body("attack at dawn"));
  ASSERT_EQ(enc.status, 200u);
  json body = decrypt_body(enc.body);
  const auto tag = xks::testing::unb64(body["authenticationTag"].get<std::string>());
  Bytes flipped = tag;
  flipped[0] ^= 1;
  body["authenticationTag"] = b64(flipped);
  expect_error(post(key_path("k1", "decrypt"), body), 400, "InvalidCiphertextException");
}

TEST_F(HandlerTest, BodiesThatDoNotParse) {
  for (const char* op : {"encrypt", "decrypt", "metadata"}) {
    expect_error(post_raw(key_path("k1", op), "not json"), 400, "ValidationException");
    expect_error(post(key_path("k1", op), json{{"plaintext", b64("x")}}), 400,
                 "ValidationException", "requestMetadata");
  }
  expect_error(post_raw(path("/health"), "not json"), 400, "ValidationException");
  json body = encrypt_body();
  body["encryptionAlgorithm"] = "AES_CBC";
  expect_error(post(key_path("k1", "encrypt"), body), 501, "UnsupportedOperationException");
  EXPECT_EQ(last_access()["kmsRequestId"], "-");  // no metadata from a body that did not parse
  EXPECT_EQ(backend_->encrypt_calls, 0);
}

// ---------------------------------------------------------------- order of the checks

TEST_F(HandlerTest, AuthenticationComesBeforeTheKey) {
  expect_error(post(key_path("nope", "encrypt"), encrypt_body(), Signing{.sign = false}), 401,
               "AuthenticationFailedException");
  keystore().enabled = false;
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(), Signing{.akid = kExpiredAkid}), 401,
               "AuthenticationFailedException");
}

TEST_F(HandlerTest, TheKeysErrorBeatsABodyThatDoesNotParse) {
  expect_error(post_raw(key_path("k-disabled", "encrypt"), "{"), 400, "InvalidStateException");
  expect_error(post_raw(key_path("nope", "decrypt"), "{"), 404, "KeyNotFoundException");
  expect_error(post_raw(key_path("k-encrypt-only", "decrypt"), "{"), 400,
               "InvalidKeyUsageException");
  EXPECT_EQ(backend_->attribute_calls, 1);  // the usage is the HSM's to say
  expect_error(post_raw(key_path("k-encrypt-only", "encrypt"), "{"), 400, "ValidationException");
  expect_error(post_raw(key_path("k1", "decrypt"), "{"), 400, "ValidationException");
  // GetKeyMetadata: a disabled key has metadata, so the body's error stands.
  expect_error(post_raw(key_path("k-disabled", "metadata"), "{"), 400, "ValidationException");
  EXPECT_EQ(backend_->attribute_calls, 3);
  keystore().enabled = false;
}

TEST_F(HandlerTest, DisabledKeyStoreBeatsABodyThatDoesNotParse) {
  keystore().enabled = false;
  expect_error(post_raw(key_path("k1", "metadata"), "{"), 400, "InvalidStateException");
  expect_error(post_raw(key_path("nope", "encrypt"), "{"), 400, "InvalidStateException");
}

TEST_F(HandlerTest, KeyStateComesBeforeRegionAndPolicy) {
  keystore().region = std::string(kRegion);
  keystore().policy = policy::parse_policy("statements: []");  // denies everything
  json md = request_metadata("Encrypt");
  md["kmsKeyArn"] = "arn:aws:kms:eu-west-1:123456789012:key/x";
  expect_error(post(key_path("k-disabled", "encrypt"), encrypt_body("x", md)), 400,
               "InvalidStateException");
  expect_error(post(key_path("nope", "encrypt"), encrypt_body("x", md)), 404,
               "KeyNotFoundException");
  // kmsKeyArn's region before the policy.
  expect_error(post(key_path("k1", "encrypt"), encrypt_body("x", md)), 403, "AccessDeniedException",
               "kmsKeyArn names region");
  EXPECT_EQ(
      metric(R"(xks_proxy_policy_decisions_total{keystore="/ks/kms/xks/v1",decision="deny"})"),
      "0");
  expect_error(post(key_path("k1", "encrypt"), encrypt_body("x")), 403, "AccessDeniedException");
  EXPECT_EQ(
      metric(R"(xks_proxy_policy_decisions_total{keystore="/ks/kms/xks/v1",decision="deny"})"),
      "1");
}

TEST_F(HandlerTest, QuotaComesAfterTheRegionCheck) {
  keystore().region = std::string(kRegion);
  keystore().quota_rate = 0.001;
  keystore().quota_burst = 1;
  expect_error(post(key_path("k1", "encrypt"), encrypt_body(), Signing{.region = "eu-west-1"}), 401,
               "AuthenticationFailedException");
  EXPECT_EQ(post(key_path("k1", "encrypt"), encrypt_body()).status, 200u);
}

// ---------------------------------------------------------------- the access log

TEST_F(HandlerTest, AccessLineOfASuccessfulEncrypt) {
  ASSERT_EQ(post(key_path("k1", "encrypt"), encrypt_body("do not log me")).status, 200u);
  const auto line = last_access();
  EXPECT_EQ(line["level"], "info");
  EXPECT_EQ(line["kmsRequestId"], kRequestId);
  EXPECT_EQ(line["keystore"], kUriPath);
  EXPECT_EQ(line["api"], "Encrypt");
  EXPECT_EQ(line["keyId"], "k1");
  EXPECT_EQ(line["kmsOperation"], "Encrypt");
  EXPECT_EQ(line["principal"], "arn:aws:iam::123456789012:user/Alice");
  EXPECT_EQ(line["outcome"], "ok");
  EXPECT_EQ(line["status"], 200);
  EXPECT_TRUE(line["latencyUs"].is_number_integer());
  EXPECT_GE(line["latencyUs"].get<std::int64_t>(), 0);
  EXPECT_EQ(line["peer"], "192.0.2.1:40000");
  EXPECT_EQ(line["method"], "POST");
  EXPECT_EQ(line["kmsKeyArn"],
            "arn:aws:kms:us-east-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab");
  EXPECT_EQ(line["kmsViaService"], "ebs");
  EXPECT_EQ(line["awsSourceVpc"], "-");
  EXPECT_EQ(line["awsSourceVpce"], "-");
  EXPECT_EQ(line["hsmKeyLabel"], "label-1");
  EXPECT_EQ(line["accessKeyId"], kAkid);
  EXPECT_FALSE(line.contains("errorMessage"));
  EXPECT_FALSE(line.contains("detail"));
  const std::string text = log_text();
  EXPECT_THAT(text, Not(HasSubstr("do not log me")));
  EXPECT_THAT(text, Not(HasSubstr(b64("do not log me"))));
  EXPECT_THAT(text, Not(HasSubstr(std::string(kSecret))));
}

TEST_F(HandlerTest, AccessLineOfAFailure) {
  const auto enc = post(key_path("k1", "encrypt"), encrypt_body());
  ASSERT_EQ(enc.status, 200u);
  json body = decrypt_body(enc.body);
  body["authenticationTag"] = b64(Bytes(16, 0));
  const auto s = post(key_path("k1", "decrypt"), body);
  const auto line = last_access();
  EXPECT_EQ(line["level"], "info");
  EXPECT_EQ(line["api"], "Decrypt");
  EXPECT_EQ(line["kmsOperation"], "Decrypt");
  EXPECT_EQ(line["outcome"], "InvalidCiphertextException");
  EXPECT_EQ(line["status"], 400);
  EXPECT_EQ(line["errorMessage"], s.body["errorMessage"]);
  EXPECT_EQ(line["hsmKeyLabel"], "label-1");
  EXPECT_EQ(line["accessKeyId"], kAkid);
  EXPECT_EQ(requests("Decrypt", "InvalidCiphertextException"), "1");
}

TEST_F(HandlerTest, AccessLineBeforeAuthenticationAndAtError) {
  (void)post(key_path("k1", "encrypt"), encrypt_body(), Signing{.sign = false});
  auto line = last_access();
  EXPECT_EQ(line["keystore"], kUriPath);
  EXPECT_EQ(line["api"], "Encrypt");
  EXPECT_EQ(line["keyId"], "k1");
  EXPECT_EQ(line["kmsRequestId"], "-");
  EXPECT_EQ(line["principal"], "-");
  EXPECT_FALSE(line.contains("kmsKeyArn"));
  EXPECT_FALSE(line.contains("hsmKeyLabel"));
  EXPECT_FALSE(line.contains("accessKeyId"));
  EXPECT_EQ(line["status"], 401);

  backend_->fail_with = make_error(ErrorName::InternalException, "HSM failure", "CKR_DEVICE_ERROR");
  expect_error(post(key_path("k1", "encrypt"), encrypt_body()), 500, "InternalException");
  line = last_access();
  EXPECT_EQ(line["level"], "error");
  EXPECT_EQ(line["detail"], "CKR_DEVICE_ERROR");

  backend_->fail_with.reset();
  json body = encrypt_body(std::string(api::kMaxPlaintextBytes + 1, 'x'));
  expect_error(post(key_path("k1", "encrypt"), body), 501, "UnsupportedOperationException");
  EXPECT_EQ(last_access()["level"], "warning");
}

}  // namespace
}  // namespace xks::app
