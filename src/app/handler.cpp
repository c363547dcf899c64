#include "xks/app/handler.hpp"

#include <boost/beast/http/field.hpp>

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
  std::optional<Api> route_api;            // set once routed (metrics)
  std::size_t metrics_keystore = obs::Metrics::kUnknownKeystore;
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

namespace {

constexpr std::string_view kQuotaDetail = "key store quota exceeded";

net::Response json_response(http::status status, std::string body, unsigned version) {
  net::Response res{status, version};
  res.set(http::field::content_type, "application/json");
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  return res;
}

std::string_view or_dash(const std::optional<std::string>& v) {
  return v ? std::string_view(*v) : std::string_view("-");
}

void log_access(const net::Request& request, const net::RequestContext& ctx,
                const auto& outcome, unsigned status) {
  // 501 is the client asking for more than is supported (the spec's answer for
  // an oversized value): worth a warning, not an error of the proxy.
  obs::Line line(status == 501 ? obs::Level::Warn
                 : status >= 500 ? obs::Level::Error
                                 : obs::Level::Info,
                 "access");
  const auto latency = std::chrono::duration_cast<std::chrono::microseconds>(
      core::SteadyClock::now() - ctx.arrival);
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
  if (const auto legacy = outcome.version_use ? outcome.version_use->legacy_layout() : std::nullopt) {
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
Result<void> authorize(const config::KeyStore& keystore, Api api, const std::string& key_id,
                       const api::RequestMetadata& md, obs::Metrics& metrics,
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
  metrics.record_policy_decision(metrics_keystore,
                                 decision.dry_run_denied() ? obs::PolicyDecision::DryRunDeny
                                 : decision.allowed        ? obs::PolicyDecision::Allow
                                                           : obs::PolicyDecision::Deny);
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
                      "checked against this key store's region '" + *keystore.region +
                          "' (keystores[].region)");
  }
  if (*region != *keystore.region) {
    return make_error(ErrorName::AccessDeniedException,
                      "requestMetadata.kmsKeyArn names region '" + std::string(*region) +
                          "' but key store " + keystore.uri_path + " serves region '" +
                          *keystore.region + "' (keystores[].region)");
  }
  return {};
}

}  // namespace

bool XksHandler::keep_connections() const {
  return !stopping_.load() && health_.any_usable();
}

net::Response XksHandler::error_response(const Error& error, unsigned http_version) {
  return json_response(static_cast<http::status>(http_status(error.name)),
                       api::error_body(error), http_version);
}

asio::awaitable<net::Response> XksHandler::handle(net::Request& request,
                                                   net::RequestContext& ctx) {
  const auto rt = runtime_.get();
  Outcome outcome;
  net::Response response = co_await dispatch(request, ctx, rt, outcome);
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
      const auto& detail = outcome.error->detail;
      metrics_.record_throttled(detail == core::kQueueFullDetail ? obs::ThrottleReason::QueueFull
                                : detail == kQuotaDetail        ? obs::ThrottleReason::Quota
                                                                : obs::ThrottleReason::SessionWait);
    }
  }
  co_return response;
}

asio::awaitable<net::Response> XksHandler::dispatch(net::Request& request,
                                                     const net::RequestContext& ctx,
                                                     const std::shared_ptr<const Runtime>& rt,
                                                     Outcome& outcome) {
  const unsigned version = request.version();
  auto fail = [&](Error error) {
    auto res = error_response(error, version);
    outcome.error = std::move(error);
    return res;
  };
  const auto& cfg = *rt->config;
  const std::string_view target(request.target().data(), request.target().size());

  // The load balancer's probe: unauthenticated, cheap, from the health cache.
  if (target == cfg.server.ping_path) {
    outcome.api = "Ping";
    if (request.method() != http::verb::get && request.method() != http::verb::head) {
      auto res = fail(make_error(ErrorName::ValidationException,
                                 "the ping path only answers GET and HEAD"));
      res.result(http::status::method_not_allowed);
      res.set(http::field::allow, "GET, HEAD");
      co_return res;
    }
    if (stopping_.load()) {
      co_return json_response(http::status::service_unavailable, R"({"status":"stopping"})",
                              version);
    }
    const bool usable = health_.any_usable();
    co_return json_response(usable ? http::status::ok : http::status::service_unavailable,
                            usable ? R"({"status":"ok"})" : R"({"status":"unavailable"})",
                            version);
  }

  auto route = rt->router.route(target);
  if (!route) co_return fail(std::move(route).error());
  outcome.keystore = cfg.keystores[route->keystore].uri_path;
  outcome.api = std::string(xks::http::to_string(route->api));
  outcome.key_id = route->key_id;
  outcome.route_api = route->api;
  outcome.metrics_keystore = rt->keystores[route->keystore].metrics_index;

  // Spec: a GET on an API URI MUST be answered 405; other methods likewise.
  if (request.method() != http::verb::post) {
    auto res = fail(make_error(ErrorName::ValidationException,
                               "XKS API calls use POST; " +
                                   std::string(request.method_string()) + " is not allowed"));
    res.result(http::status::method_not_allowed);
    res.set(http::field::allow, "POST");
    co_return res;
  }

  const auto& index = rt->keystores[route->keystore];
  const auto& keystore = cfg.keystores[route->keystore];
  const auto now = std::chrono::system_clock::now();
  const config::Credential* expired = nullptr;
  auth::SecretLookup lookup = [&](std::string_view akid) -> const SecureString* {
    const auto it = index.credentials.find(akid);
    if (it == index.credentials.end()) return nullptr;
    const auto& cred = *it->second;
    if (cred.not_after && now > *cred.not_after) {
      expired = &cred;
      return nullptr;
    }
    return &cred.secret;
  };
  const std::string_view method(request.method_string().data(), request.method_string().size());
  auto verified = verifier_.verify(
      auth::RequestView{method, target, request.base(), request.body()}, lookup, now);
  if (!verified) {
    if (expired != nullptr) {
      co_return fail(make_error(
          ErrorName::AuthenticationFailedException,
          "access key id \"" + expired->access_key_id + "\" has expired (its not_after has passed)",
          "keystores[].credentials[].not_after"));
    }
    co_return fail(std::move(verified).error());
  }
  outcome.access_key_id = verified->access_key_id;
  metrics_.record_credential_use(index.metrics_index, verified->access_key_id, now);

  if (auto region = check_region(keystore, verified->region, ctx); !region) {
    co_return fail(std::move(region).error());
  }
  // Spec: a proxy MAY enforce a quota per path prefix. Checked after
  // authentication so that unauthenticated traffic cannot spend the quota.
  // GetHealthStatus is exempt: KMS calls it rarely, and a throttled health
  // check would make KMS see the key store as unreachable while it is busy.
  if (route->api != Api::GetHealthStatus && index.quota &&
      !index.quota->try_take(ctx.arrival)) {
    co_return fail(make_error(ErrorName::ThrottlingException,
                              "request rate above this key store's quota; retry later",
                              std::string(kQuotaDetail)));
  }

  const auto deadline = ctx.arrival + cfg.server.request_deadline;
  auto find_key = [&](const std::string& id) -> Result<const config::KeyEntry*> {
    const auto it = index.keys.find(id);
    if (it == index.keys.end()) {
      return make_error(ErrorName::KeyNotFoundException,
                        "no key with externalKeyId '" + id + "' in this key store");
    }
    outcome.key_label = it->second->label;
    outcome.key = it->second;
    return it->second;
  };

  // For the three key APIs, in the order the spec's errors imply: the key store
  // is enabled, the key exists in it and (Encrypt, Decrypt) is enabled; then,
  // with the parsed metadata, kmsKeyArn's region and the key store's policy.
  // Key usage is the HSM's to say (service). A body that does not parse is
  // judged after the key (parse_failed), so the key's error wins.
  auto check_key = [&]() -> Result<const config::KeyEntry*> {
    // The key store's kill switch; health keeps answering so that KMS still
    // sees the proxy (and its HSMs) as reachable.
    if (!keystore.enabled) {
      return make_error(
          ErrorName::InvalidStateException,
          "key store " + keystore.uri_path + " is disabled in the XKS proxy configuration",
          "keystores[].enabled: false");
    }
    auto key = find_key(route->key_id);
    if (!key) return key;
    if (route->api != Api::GetKeyMetadata && !(*key)->enabled) {
      return make_error(ErrorName::InvalidStateException,
                        "external key '" + (*key)->id +
                            "' is disabled in the XKS proxy configuration",
                        "key entry '" + (*key)->id + "' has enabled: false");
    }
    return key;
  };
  auto admit = [&](api::RequestMetadata&& md) -> Result<const config::KeyEntry*> {
    outcome.metadata = std::move(md);
    auto key = check_key();
    if (!key) return key;
    if (auto arn = check_key_arn_region(keystore, *outcome.metadata); !arn) {
      return std::move(arn).error();
    }
    if (auto allowed = authorize(keystore, route->api, route->key_id, *outcome.metadata,
                                 metrics_, index.metrics_index);
        !allowed) {
      return std::move(allowed).error();
    }
    return key;
  };
  auto respond = [&](auto& result) {
    if (!result) return fail(std::move(result).error());
    return json_response(http::status::ok, api::serialize(*result), version);
  };

  // The HSM jobs below may outlive this coroutine (a deadline answers first and
  // the job finishes on its worker), so each owns what it touches: the parsed
  // request, and the Runtime snapshot that owns the KeyEntry.
  switch (route->api) {
    case Api::GetHealthStatus: {
      auto req = api::parse_health_request(request.body());
      if (!req) co_return fail(std::move(req).error());
      outcome.metadata = std::move(req->metadata);
      co_return json_response(
          http::status::ok,
          api::serialize(api::make_health_response(health_.current(), cfg.server.fleet_size)),
          version);
    }
    case Api::GetKeyMetadata: {
      auto req = api::parse_key_metadata_request(request.body());
      if (!req) {
        auto key = check_key();
        co_return fail(key ? std::move(req).error() : std::move(key).error());
      }
      auto key = admit(std::move(req->metadata));
      if (!key) co_return fail(std::move(key).error());
      // The job is a named local, not a temporary inside the co_await
      // expression: g++ 12 destroys such temporaries twice.
      auto work = [rt, entry = *key] { return rt->engine->service.get_key_metadata(*entry); };
      auto result = co_await core::offload(pool_, deadline, std::move(work));
      co_return respond(result);
    }
    case Api::Encrypt: {
      auto req = api::parse_encrypt_request(request.body());
      if (!req) {
        auto key = check_key();
        if (!key) co_return fail(std::move(key).error());
        // A body that does not parse, for a key that does not allow the
        // operation, is the key's error (InvalidKeyUsage): asked of the HSM.
        auto work = [rt, entry = *key, e = std::move(req).error()]() mutable -> Result<void> {
          return rt->engine->service.key_error_first(*entry, api::KeyUse::Encrypt, std::move(e));
        };
        auto judged = co_await core::offload(pool_, deadline, std::move(work));
        co_return fail(std::move(judged).error());
      }
      auto key = admit(std::move(req->metadata));
      if (!key) co_return fail(std::move(key).error());
      auto job = std::make_shared<api::EncryptRequest>(std::move(*req));
      auto use = std::make_shared<api::KeyVersionUse>();
      outcome.version_use = use;
      outcome.version_op = api::KeyUse::Encrypt;
      auto work = [rt, entry = *key, job, use] {
        return rt->engine->service.encrypt(*entry, *job, use.get());
      };
      auto result = co_await core::offload(pool_, deadline, std::move(work));
      co_return respond(result);
    }
    case Api::Decrypt: {
      auto req = api::parse_decrypt_request(request.body());
      if (!req) {
        auto key = check_key();
        if (!key) co_return fail(std::move(key).error());
        // A body that does not parse, for a key that does not allow the
        // operation, is the key's error (InvalidKeyUsage): asked of the HSM.
        auto work = [rt, entry = *key, e = std::move(req).error()]() mutable -> Result<void> {
          return rt->engine->service.key_error_first(*entry, api::KeyUse::Decrypt, std::move(e));
        };
        auto judged = co_await core::offload(pool_, deadline, std::move(work));
        co_return fail(std::move(judged).error());
      }
      auto key = admit(std::move(req->metadata));
      if (!key) co_return fail(std::move(key).error());
      auto job = std::make_shared<api::DecryptRequest>(std::move(*req));
      auto use = std::make_shared<api::KeyVersionUse>();
      outcome.version_use = use;
      outcome.version_op = api::KeyUse::Decrypt;
      auto work = [rt, entry = *key, job, use] {
        return rt->engine->service.decrypt(*entry, *job, use.get());
      };
      auto result = co_await core::offload(pool_, deadline, std::move(work));
      // serialize() builds the plaintext body in place; the server wipes it once sent.
      co_return respond(result);
    }
  }
  co_return fail(make_error(ErrorName::InternalException, "unknown API"));
}

}  // namespace xks::app
