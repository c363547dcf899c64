#include "xks/app/handler.hpp"

#include <boost/beast/http/field.hpp>
#include <type_traits>

#include "xks/api/dto.hpp"
#include "xks/app/key_versions.hpp"
#include "xks/core/offload.hpp"
#include "xks/obs/log.hpp"
#include "xks/policy/arn.hpp"
#include "xks/policy/policy.hpp"

namespace xks::app {
namespace http = boost::beast::http;
namespace asio = boost::asio;
using Api = xks::http::Api;

struct XksHandler::Outcome {
  std::optional<Api> route_api;  // set once routed (metrics)
  std::size_t metrics_keystore = ProxyMetrics::kUnknownKeystore;
  std::string keystore = "-";
  std::string api = "-";
  std::string key_id;
  std::string key_label;
  std::optional<api::RequestMetadata> metadata;  // moved out of the parsed request
  std::string access_key_id;
  std::optional<Error> error;
  // Encrypt and Decrypt: the key, and the version the HSM job chose.
  const config::KeyEntry* key = nullptr;
  std::shared_ptr<const api::KeyVersionUse> version_use;
  api::KeyUse version_op = api::KeyUse::Encrypt;
};

struct XksHandler::Call {
  net::Request& request;
  const net::RequestContext& ctx;
  const std::shared_ptr<const Runtime> rt;  // the snapshot taken at arrival
  Outcome& outcome;
  const std::string_view target;
  // Set by route().
  xks::http::Route route{};
  const config::KeyStore* keystore = nullptr;
  const Runtime::KeyStoreIndex* index = nullptr;

  unsigned version() const { return request.version(); }
  core::Deadline deadline() const { return ctx.arrival + rt->config->server.request_deadline; }
};

namespace {

net::Response json_response(http::status status, std::string body, unsigned version) {
  net::Response res{status, version};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  return res;
}

net::Response error_json(const Error& error, unsigned version) {
  return json_response(static_cast<http::status>(http_status(error.name)), api::error_body(error),
                       version);
}

std::string_view or_dash(const std::optional<std::string>& v) {
  return v ? std::string_view(*v) : std::string_view("-");
}

void log_access(const net::Request& request, const net::RequestContext& ctx, const auto& outcome,
                unsigned status) {
  // 501 is the client asking for more than is supported (the spec's answer for
  // an oversized value): worth a warning, not an error of the proxy.
  obs::Line line(status == 501   ? obs::Level::Warn
                 : status >= 500 ? obs::Level::Error
                                 : obs::Level::Info,
                 "access");
  const auto latency =
      std::chrono::duration_cast<std::chrono::microseconds>(core::SteadyClock::now() - ctx.arrival);
  const auto* md = outcome.metadata ? &*outcome.metadata : nullptr;
  line.add("kmsRequestId", md ? std::string_view(md->kms_request_id) : "-")
      .add("keystore", outcome.keystore)
      .add("api", outcome.api)
      .add("keyId", outcome.key_id.empty() ? "-" : std::string_view(outcome.key_id))
      .add("kmsOperation", md ? std::string_view(md->kms_operation) : "-")
      .add("principal", md ? or_dash(md->aws_principal_arn) : "-")
      .add("outcome", outcome.error ? to_string(outcome.error->name) : "ok")
      .add("status", std::int64_t{status})
      .add("latencyUs", std::int64_t{latency.count()})
      .add("peer", ctx.peer)
      .add("method", std::string_view(request.method_string()));
  if (md) {
    line.add("kmsKeyArn", or_dash(md->kms_key_arn))
        .add("kmsViaService", or_dash(md->kms_via_service))
        .add("awsSourceVpc", or_dash(md->aws_source_vpc))
        .add("awsSourceVpce", or_dash(md->aws_source_vpce));
  }
  const std::uint32_t key_version =
      outcome.version_use ? outcome.version_use->version.load(std::memory_order_relaxed) : 0;
  const config::KeyVersion* used =
      key_version != 0 && outcome.key ? outcome.key->version(key_version) : nullptr;
  if (used != nullptr) {
    line.add("hsmKeyLabel", used->label);
  } else if (!outcome.key_label.empty()) {
    line.add("hsmKeyLabel", outcome.key_label);
  }
  if (key_version != 0) line.add("keyVersion", std::int64_t{key_version});
  if (const auto legacy =
          outcome.version_use ? outcome.version_use->legacy_layout() : std::nullopt) {
    line.add("legacyLayout", config::to_string(*legacy));
  }
  if (!outcome.access_key_id.empty()) line.add("accessKeyId", outcome.access_key_id);
  if (outcome.error) {
    line.add("errorMessage", outcome.error->message);
    if (!outcome.error->detail.empty()) line.add("detail", outcome.error->detail);
  }
}

std::optional<std::string_view> opt_view(const std::optional<std::string>& v) {
  if (!v) return std::nullopt;
  return std::string_view(*v);
}

// Secondary authorization (spec, "Authorization"); never for GetHealthStatus.
// A dry-run denial is logged and the request goes on.
Result<void> evaluate_policy(const config::KeyStore& keystore, Api api, const std::string& key_id,
                             const api::RequestMetadata& md, ProxyMetrics& metrics,
                             std::size_t metrics_keystore) {
  if (!keystore.policy || api == Api::GetHealthStatus) return {};
  const auto decision = keystore.policy->evaluate(policy::RequestAttributes{
      .api = xks::http::to_string(api),
      .key_id = key_id,
      .principal_arn = opt_view(md.aws_principal_arn),
      .kms_key_arn = opt_view(md.kms_key_arn),
      .kms_operation = std::string_view(md.kms_operation),
      .via_service = opt_view(md.kms_via_service),
      .source_vpc = opt_view(md.aws_source_vpc),
      .source_vpce = opt_view(md.aws_source_vpce),
  });
  metrics.record_policy_decision(metrics_keystore, decision.dry_run_denied()
                                                       ? PolicyDecision::DryRunDeny
                                                   : decision.allowed ? PolicyDecision::Allow
                                                                      : PolicyDecision::Deny);
  if (decision.dry_run_denied()) {
    obs::warn("policy_dry_run_deny", {{"kmsRequestId", md.kms_request_id},
                                      {"keystore", keystore.uri_path},
                                      {"sid", decision.deciding_sid},
                                      {"explanation", decision.explanation}});
  }
  if (!decision.allowed) return policy::to_error(decision);
  return {};
}

// keystores[].region: the SigV4 credential scope names the region KMS signs
// from, and KMS's client certificate is CN=cks.kms.<region>.amazonaws.com.
// Either naming another region means the request was not made for this key
// store: AuthenticationFailedException.
Result<void> check_region(const config::KeyStore& keystore, std::string_view scope_region,
                          const net::RequestContext& ctx) {
  if (!keystore.region) return {};
  const std::string& want = *keystore.region;
  if (scope_region != want) {
    return make_error(ErrorName::AuthenticationFailedException,
                      "the SigV4 credential scope names region '" + std::string(scope_region) +
                          "' but key store " + keystore.uri_path + " serves region '" + want +
                          "' (keystores[].region)");
  }
  if (!ctx.client_subject.empty() && ctx.client_cn != config::kms_client_name(want)) {
    return make_error(ErrorName::AuthenticationFailedException,
                      "the client certificate is not KMS's for region '" + want +
                          "' (CN=" + config::kms_client_name(want) + ") that key store " +
                          keystore.uri_path + " serves (keystores[].region)",
                      "client certificate CN '" + ctx.client_cn + "'");
  }
  return {};
}

// keystores[].region against requestMetadata.kmsKeyArn (when present): a KMS key
// of another region is not one this key store serves. An authorization
// decision on the metadata, hence AccessDeniedException.
Result<void> check_key_arn_region(const config::KeyStore& keystore,
                                  const api::RequestMetadata& md) {
  if (!keystore.region || !md.kms_key_arn) return {};
  const auto region = policy::arn_region(*md.kms_key_arn);
  if (!region) {
    return make_error(ErrorName::AccessDeniedException,
                      "requestMetadata.kmsKeyArn is not an ARN with a region, so it cannot be "
                      "checked against this key store's region '" +
                          *keystore.region + "' (keystores[].region)");
  }
  if (*region != *keystore.region) {
    return make_error(ErrorName::AccessDeniedException,
                      "requestMetadata.kmsKeyArn names region '" + std::string(*region) +
                          "' but key store " + keystore.uri_path + " serves region '" +
                          *keystore.region + "' (keystores[].region)");
  }
  return {};
}

// The key operations, for XksHandler::key_operation: the request type, its
// parser, the usage a key must allow (asked of the HSM when the body does not
// parse) and the service call.
struct GetKeyMetadataOp {
  using Request = api::KeyMetadataRequest;
  // A key's usage does not decide its metadata.
  static constexpr std::optional<api::KeyUse> kUse{};
  static Result<Request> parse(std::string_view body) {
    return api::parse_key_metadata_request(body);
  }
  static auto execute(api::XksService& service, const config::KeyEntry& key, const Request&,
                      api::KeyVersionUse*) {
    return service.get_key_metadata(key);
  }
};

template <api::KeyUse Use>
struct CryptOp {
  static constexpr bool kEncrypt = Use == api::KeyUse::Encrypt;
  using Request = std::conditional_t<kEncrypt, api::EncryptRequest, api::DecryptRequest>;
  static constexpr std::optional<api::KeyUse> kUse{Use};
  static Result<Request> parse(std::string_view body) {
    if constexpr (kEncrypt)
      return api::parse_encrypt_request(body);
    else
      return api::parse_decrypt_request(body);
  }
  static auto execute(api::XksService& service, const config::KeyEntry& key, const Request& request,
                      api::KeyVersionUse* use) {
    if constexpr (kEncrypt)
      return service.encrypt(key, request, use);
    else
      return service.decrypt(key, request, use);
  }
};
using EncryptOp = CryptOp<api::KeyUse::Encrypt>;
using DecryptOp = CryptOp<api::KeyUse::Decrypt>;

// xks_proxy_throttled_total's reason for a ThrottlingException.
ThrottleReason throttle_reason(const Error& error) {
  switch (error.cause) {
    case Error::Cause::QueueFull: return ThrottleReason::QueueFull;
    case Error::Cause::Quota: return ThrottleReason::Quota;
    case Error::Cause::SessionWait:
    case Error::Cause::None: break;
  }
  // Past the queue and the quota, only an HSM session wait throttles.
  return ThrottleReason::SessionWait;
}

}  // namespace

bool XksHandler::keep_connections() const { return !stopping_.load() && health_.any_usable(); }

net::Response XksHandler::error_response(const Error& error, unsigned http_version) {
  return error_json(error, http_version);
}

asio::awaitable<net::Response> XksHandler::handle(net::Request& request, net::RequestContext& ctx) {
  Outcome outcome;
  Call call{request, ctx, runtime_.get(), outcome,
            std::string_view(request.target().data(), request.target().size())};
  net::Response response = co_await dispatch(call);
  // access_key_id is set exactly when SigV4 verified the request.
  ctx.authenticated = !outcome.access_key_id.empty();
  log_access(request, ctx, outcome, response.result_int());
  if (outcome.route_api) {
    std::optional<ErrorName> error;
    if (outcome.error) error = outcome.error->name;
    metrics_.record_request(outcome.metrics_keystore, *outcome.route_api, error,
                            core::SteadyClock::now() - ctx.arrival);
    if (outcome.version_use && outcome.key) {
      record_key_version_use(metrics_, outcome.metrics_keystore, outcome.keystore, *outcome.key,
                             *outcome.version_use, outcome.version_op, !error,
                             outcome.metadata ? std::string_view(outcome.metadata->kms_request_id)
                                              : std::string_view("-"));
    }
    if (error == ErrorName::ThrottlingException) {
      metrics_.record_throttled(throttle_reason(*outcome.error));
    }
  }
  co_return response;
}

asio::awaitable<net::Response> XksHandler::dispatch(Call& call) {
  // The load balancer's probe: unauthenticated, cheap, from the health cache.
  if (call.target == call.rt->config->server.ping_path) co_return ping(call);

  if (auto routed = route(call); !routed) co_return fail(call, std::move(routed).error());
  // Spec: a GET on an API URI MUST be answered 405; other methods likewise.
  if (call.request.method() != http::verb::post) {
    co_return method_not_allowed(
        call,
        make_error(ErrorName::ValidationException, "XKS API calls use POST; " +
                                                       std::string(call.request.method_string()) +
                                                       " is not allowed"),
        "POST");
  }
  if (auto verified = authenticate(call); !verified) {
    co_return fail(call, std::move(verified).error());
  }
  if (auto quota = take_quota(call); !quota) co_return fail(call, std::move(quota).error());

  switch (call.route.api) {
    case Api::GetHealthStatus: co_return health_status(call);
    case Api::GetKeyMetadata: co_return co_await key_operation<GetKeyMetadataOp>(call);
    case Api::Encrypt: co_return co_await key_operation<EncryptOp>(call);
    case Api::Decrypt: co_return co_await key_operation<DecryptOp>(call);
  }
  co_return fail(call, make_error(ErrorName::InternalException, "unknown API"));
}

net::Response XksHandler::ping(Call& call) const {
  call.outcome.api = "Ping";
  const auto method = call.request.method();
  if (method != http::verb::get && method != http::verb::head) {
    return method_not_allowed(
        call, make_error(ErrorName::ValidationException, "the ping path only answers GET and HEAD"),
        "GET, HEAD");
  }
  if (stopping_.load()) {
    return json_response(http::status::service_unavailable, R"({"status":"stopping"})",
                         call.version());
  }
  const bool usable = health_.any_usable();
  return json_response(usable ? http::status::ok : http::status::service_unavailable,
                       usable ? R"({"status":"ok"})" : R"({"status":"unavailable"})",
                       call.version());
}

Result<void> XksHandler::route(Call& call) const {
  auto routed = call.rt->router.route(call.target);
  if (!routed) return std::move(routed).error();
  call.route = std::move(*routed);
  call.keystore = &call.rt->config->keystores[call.route.keystore];
  call.index = &call.rt->keystores[call.route.keystore];
  call.outcome.keystore = call.keystore->uri_path;
  call.outcome.api = std::string(xks::http::to_string(call.route.api));
  call.outcome.key_id = call.route.key_id;
  call.outcome.route_api = call.route.api;
  call.outcome.metrics_keystore = call.index->metrics_index;
  return {};
}

Result<void> XksHandler::authenticate(Call& call) const {
  const auto now = std::chrono::system_clock::now();
  const auto& credentials = call.index->credentials;
  const auth::SecretLookup lookup = [&](std::string_view akid) -> auth::SecretLookupResult {
    const auto it = credentials.find(akid);
    if (it == credentials.end()) return {};
    const config::Credential& cred = *it->second;
    if (cred.not_after && now > *cred.not_after) {
      return auth::SecretLookupResult::expired(*cred.not_after);
    }
    return &cred.secret;
  };
  const auto& request = call.request;
  const std::string_view method(request.method_string().data(), request.method_string().size());
  auto verified = verifier_.verify(
      auth::RequestView{method, call.target, request.base(), request.body()}, lookup, now);
  if (!verified) return std::move(verified).error();
  call.outcome.access_key_id = verified->access_key_id;
  metrics_.record_credential_use(call.index->metrics_index, verified->access_key_id, now);
  return check_region(*call.keystore, verified->region, call.ctx);
}

// Spec: a proxy MAY enforce a quota per path prefix. Checked after
// authentication so that unauthenticated traffic cannot spend the quota.
// GetHealthStatus is exempt: KMS calls it rarely, and a throttled health
// check would make KMS see the key store as unreachable while it is busy.
Result<void> XksHandler::take_quota(const Call& call) const {
  const auto& quota = call.index->quota;
  if (call.route.api == Api::GetHealthStatus || !quota || quota->try_take(call.ctx.arrival)) {
    return {};
  }
  return make_error(ErrorName::ThrottlingException,
                    "request rate above this key store's quota; retry later",
                    "key store quota exceeded", Error::Cause::Quota);
}

net::Response XksHandler::health_status(Call& call) const {
  auto request = api::parse_health_request(call.request.body());
  if (!request) return fail(call, std::move(request).error());
  call.outcome.metadata = std::move(request->metadata);
  const auto body =
      api::make_health_response(health_.current(), call.rt->config->server.fleet_size);
  return json_response(http::status::ok, api::serialize(body), call.version());
}

// For the three key APIs, in the order the spec's errors imply: the key store
// is enabled, the key exists in it and (Encrypt, Decrypt) is enabled; then,
// with the parsed metadata, kmsKeyArn's region and the key store's policy.
// Key usage is the HSM's to say (service). A body that does not parse is
// judged after the key, so the key's error wins.
template <class Op>
asio::awaitable<net::Response> XksHandler::key_operation(Call& call) {
  auto request = Op::parse(call.request.body());
  const auto deadline = call.deadline();
  if (!request) {
    auto key = check_key(call);
    if (!key) co_return fail(call, std::move(key).error());
    if constexpr (!Op::kUse.has_value()) {
      co_return fail(call, std::move(request).error());
    } else {
      // A body that does not parse, for a key that does not allow the
      // operation, is the key's error (InvalidKeyUsage): asked of the HSM.
      auto work = [rt = call.rt, entry = *key,
                   e = std::move(request).error()]() mutable -> Result<void> {
        return rt->engine->service.key_error_first(*entry, *Op::kUse, std::move(e));
      };
      auto judged = co_await core::offload(pool_, deadline, std::move(work));
      co_return fail(call, std::move(judged).error());
    }
  }
  call.outcome.metadata = std::move(request->metadata);
  auto key = authorize(call);
  if (!key) co_return fail(call, std::move(key).error());

  // The HSM job may outlive this coroutine (a deadline answers first and the
  // job finishes on its worker), so it owns what it touches: the parsed
  // request, and the Runtime snapshot that owns the KeyEntry. The job is a
  // named local, not a temporary inside the co_await expression: g++ 12
  // destroys such temporaries twice.
  auto job = std::make_shared<typename Op::Request>(std::move(*request));
  // Encrypt and Decrypt: the version the service chose, for metrics and the access log.
  std::shared_ptr<api::KeyVersionUse> use;
  if constexpr (Op::kUse.has_value()) {
    use = std::make_shared<api::KeyVersionUse>();
    call.outcome.version_use = use;
    call.outcome.version_op = *Op::kUse;
  }
  auto work = [rt = call.rt, entry = *key, job, use] {
    return Op::execute(rt->engine->service, *entry, *job, use.get());
  };
  auto result = co_await core::offload(pool_, deadline, std::move(work));
  co_return respond(call, result);
}

Result<const config::KeyEntry*> XksHandler::check_key(Call& call) const {
  const config::KeyStore& keystore = *call.keystore;
  // The key store's kill switch; health keeps answering so that KMS still
  // sees the proxy (and its HSMs) as reachable.
  if (!keystore.enabled) {
    return make_error(
        ErrorName::InvalidStateException,
        "key store " + keystore.uri_path + " is disabled in the XKS proxy configuration",
        "keystores[].enabled: false");
  }
  const auto it = call.index->keys.find(call.route.key_id);
  if (it == call.index->keys.end()) {
    return make_error(ErrorName::KeyNotFoundException,
                      "no key with externalKeyId '" + call.route.key_id + "' in this key store");
  }
  const config::KeyEntry* key = it->second;
  call.outcome.key_label = key->label;
  call.outcome.key = key;
  if (call.route.api != Api::GetKeyMetadata && !key->enabled) {
    return make_error(ErrorName::InvalidStateException,
                      "external key '" + key->id + "' is disabled in the XKS proxy configuration",
                      "key entry '" + key->id + "' has enabled: false");
  }
  return key;
}

Result<const config::KeyEntry*> XksHandler::authorize(Call& call) const {
  auto key = check_key(call);
  if (!key) return key;
  const api::RequestMetadata& md = *call.outcome.metadata;
  if (auto arn = check_key_arn_region(*call.keystore, md); !arn) return std::move(arn).error();
  if (auto allowed = evaluate_policy(*call.keystore, call.route.api, call.route.key_id, md,
                                     metrics_, call.index->metrics_index);
      !allowed) {
    return std::move(allowed).error();
  }
  return key;
}

net::Response XksHandler::fail(Call& call, Error error) const {
  auto response = error_json(error, call.version());
  call.outcome.error = std::move(error);
  return response;
}

net::Response XksHandler::method_not_allowed(Call& call, Error error, const char* allow) const {
  auto response = fail(call, std::move(error));
  response.result(http::status::method_not_allowed);
  response.set(http::field::allow, allow);
  return response;
}

template <class T>
net::Response XksHandler::respond(Call& call, Result<T>& result) const {
  if (!result) return fail(call, std::move(result).error());
  // serialize() builds the body in place; a Decrypt's plaintext body is wiped
  // by the server once sent.
  return json_response(http::status::ok, api::serialize(*result), call.version());
}

}  // namespace xks::app
