// Policy evaluation latency with a realistic 100-statement policy (p99 of
// one evaluation under 5 us). Two views of the same work:
//  - per evaluation: steady_clock read around every call, so the tail is visible
//    (each sample includes one clock read, whose cost is measured and printed);
//  - batches of 1000 calls timed as a whole, whose mean has no clock overhead.
// Exit status 1 when the per-evaluation p99 misses the target, for CI.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "xks/policy/policy.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using xks::policy::Decision;
using xks::policy::RequestAttributes;

constexpr int kTenants = 12;  // 12 x 8 statements + 4 global = 100
constexpr std::size_t kEvaluations = 1'000'000;
constexpr std::size_t kBatch = 1000;
constexpr std::size_t kDistinctRequests = 4096;
constexpr double kTargetP99Ns = 5000.0;

std::string account(int tenant) {
  std::string a = std::to_string(100000000000LL + tenant * 1111111LL);
  return a;
}

// A policy shaped like a multi-tenant proxy's: per tenant, account-wide metadata,
// crypto for its app roles on its keys, a via-service rule, a VPC endpoint rule,
// a decrypt ban for an ingest role and a key-region rule; plus global denies.
std::string build_policy() {
  std::string y = "version: 1\nenforce: true\nstatements:\n";
  y += "  - {sid: kill-retired-keys, effect: deny, keys: ['retired-*', 'old-?-key']}\n";
  y += "  - {sid: no-internal-decrypt, effect: deny, apis: [Decrypt], principals: ['AWS "
       "Internal']}\n";
  y += "  - {sid: no-service-principals, effect: deny, accounts: ['<absent>'], principals: "
       "['*.amazonaws.com']}\n";
  y += "  - {sid: block-us-gov, effect: deny, regions: ['us-gov-*']}\n";
  for (int t = 0; t < kTenants; ++t) {
    const std::string a = account(t);
    const std::string n = std::to_string(t);
    y += "  - {sid: t" + n +
         "-ingest-no-decrypt, effect: deny, apis: [Decrypt], principals: ['arn:aws:iam::" + a +
         ":role/ingest', 'arn:aws:sts::" + a + ":assumed-role/ingest/*']}\n";
    y += "  - {sid: t" + n +
         "-vpce-keys-need-vpce, effect: deny, apis: [Encrypt, Decrypt], keys: ['t" + n +
         "-vpc-*'], source_vpces: ['<absent>']}\n";
    y += "  - {sid: t" + n + "-metadata, effect: allow, apis: [GetKeyMetadata], accounts: ['" + a +
         "']}\n";
    y += "  - {sid: t" + n + "-apps, effect: allow, apis: [Encrypt, Decrypt], keys: ['t" + n +
         "-app-*'], principals: ['arn:aws:iam::" + a + ":role/app-*', 'arn:aws:sts::" + a +
         ":assumed-role/app-*/*'], key_accounts: ['" + a + "']}\n";
    y += "  - {sid: t" + n + "-ebs, effect: allow, apis: [Encrypt, Decrypt], keys: ['t" + n +
         "-ebs-*'], accounts: ['" + a +
         "'], via_services: [ebs], kms_operations: [Encrypt, Decrypt, "
         "GenerateDataKey*, ReEncrypt*, CreateGrant]}\n";
    y += "  - {sid: t" + n + "-vpce, effect: allow, keys: ['t" + n + "-vpc-*'], accounts: ['" + a +
         "'], source_vpces: ['vpce-0" + n + "*'], source_vpcs: ['vpc-*']}\n";
    y += "  - {sid: t" + n + "-eu-only, effect: allow, keys: ['t" + n + "-eu-*'], accounts: ['" +
         a + "'], regions: ['eu-*-?'], key_arns: ['arn:aws:kms:eu-*:" + a + ":key/*']}\n";
    y += "  - {sid: t" + n +
         "-ops, effect: allow, apis: [GetKeyMetadata, Encrypt], principals: ['arn:aws:iam::" + a +
         ":user/ops-*'], kms_operations: [DescribeKey, CreateKey, Encrypt]}\n";
  }
  return y;
}

struct OwnedRequest {
  std::string api, key;
  std::optional<std::string> principal, key_arn, op, via, vpc, vpce;
  RequestAttributes view() const {
    auto v = [](const std::optional<std::string>& s) -> std::optional<std::string_view> {
      if (!s) return std::nullopt;
      return std::string_view(*s);
    };
    return {api, key, v(principal), v(key_arn), v(op), v(via), v(vpc), v(vpce)};
  }
};

// Mostly what the policy was written for (about 4 in 5 requests fit an allow
// statement of their tenant, as in production), plus noise: other tenants,
// service principals, "AWS Internal", retired keys, wrong regions and endpoints,
// unknown kmsOperation values.
std::vector<OwnedRequest> build_requests() {
  std::mt19937 rng(42);  // fixed seed: runs are comparable
  auto pick = [&](int n) { return static_cast<int>(rng() % static_cast<unsigned>(n)); };
  const char* ops[] = {"Encrypt",       "Decrypt",     "GenerateDataKey",
                       "ReEncryptFrom", "DescribeKey", "FutureOp"};
  const char* regions[] = {"eu-west-1", "us-east-1", "eu-central-1", "ap-south-1", "us-gov-west-1"};
  std::vector<OwnedRequest> out;
  out.reserve(kDistinctRequests);
  for (std::size_t i = 0; i < kDistinctRequests; ++i) {
    OwnedRequest r;
    const int t = pick(kTenants);
    const std::string a = account(t);
    const std::string n = std::to_string(t);
    const std::string key_arn_tail =
        ":" + a + ":key/1234abcd-12ab-34cd-56ef-" + std::to_string(100000000000 + pick(1000000));
    const std::string app_session = "arn:aws:sts::" + a + ":assumed-role/app-" +
                                    std::to_string(pick(9)) + "/i-0" + std::to_string(rng()) +
                                    "-session";
    r.api = pick(4) == 0 ? "Encrypt" : "Decrypt";
    r.op = r.api;
    r.key_arn = "arn:aws:kms:us-east-1" + key_arn_tail;
    switch (pick(5)) {
      case 0:  // an application role on its keys
        r.key = "t" + n + "-app-" + std::to_string(pick(50));
        r.principal = app_session;
        break;
      case 1:  // EBS on behalf of a user of the account
        r.key = "t" + n + "-ebs-" + std::to_string(pick(50));
        r.principal = "arn:aws:iam::" + a + ":role/ec2-fleet";
        r.via = "ebs";
        r.op = pick(2) == 0 ? "GenerateDataKeyWithoutPlaintext" : "Decrypt";
        break;
      case 2:  // through the tenant's VPC endpoint
        r.key = "t" + n + "-vpc-" + std::to_string(pick(50));
        r.principal = app_session;
        r.vpc = "vpc-" + std::to_string(pick(100000));
        r.vpce = "vpce-0" + n + "abcdef";
        break;
      case 3:  // keys confined to EU regions
        r.key = "t" + n + "-eu-" + std::to_string(pick(50));
        r.principal = app_session;
        r.key_arn = "arn:aws:kms:eu-west-1" + key_arn_tail;
        break;
      default:  // key administration: metadata
        r.api = "GetKeyMetadata";
        r.op = pick(2) == 0 ? "CreateKey" : "DescribeKey";
        r.key = "t" + n + "-app-" + std::to_string(pick(50));
        r.principal = "arn:aws:iam::" + a + ":user/ops-" + std::to_string(pick(9));
        if (pick(2) == 0) r.key_arn.reset();
        break;
    }
    if (pick(5) == 0) {  // noise: one thing is off
      switch (pick(8)) {
        case 0: r.principal = "ec2.amazonaws.com"; break;
        case 1: r.principal = "AWS Internal"; break;
        case 2: r.principal = "arn:aws:iam::" + account(kTenants + 1) + ":role/app-1"; break;
        case 3: r.key = "retired-" + r.key; break;
        case 4: r.key_arn = std::string("arn:aws:kms:") + regions[pick(5)] + key_arn_tail; break;
        case 5: r.vpce.reset(); break;
        case 6: r.op = ops[pick(6)]; break;
        default:
          r.principal =
              "arn:aws:sts::" + a + ":assumed-role/ingest/batch-" + std::to_string(pick(1000));
      }
    }
    out.push_back(std::move(r));
  }
  return out;
}

double percentile(const std::vector<std::int64_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto i = static_cast<std::size_t>(p * static_cast<double>(sorted.size() - 1));
  return static_cast<double>(sorted[i]);
}

}  // namespace

int main() {
  const auto policy = xks::policy::parse_policy(build_policy(), "bench");
  const std::vector<OwnedRequest> owned = build_requests();
  std::vector<RequestAttributes> requests;
  requests.reserve(owned.size());
  for (const OwnedRequest& r : owned) requests.push_back(r.view());

  std::size_t sink = 0;
  for (std::size_t i = 0; i < 20'000; ++i) {  // warm caches and the branch predictor
    sink += policy->evaluate(requests[i % requests.size()]).explanation.size();
  }

  // The cost of the clock read that every per-evaluation sample includes.
  std::vector<std::int64_t> overhead(100'000);
  for (auto& o : overhead) {
    const auto t0 = Clock::now();
    const auto t1 = Clock::now();
    o = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
  }
  std::sort(overhead.begin(), overhead.end());

  std::vector<std::int64_t> all, allowed, denied;
  all.reserve(kEvaluations);
  allowed.reserve(kEvaluations);
  denied.reserve(kEvaluations);
  for (std::size_t i = 0; i < kEvaluations; ++i) {
    const RequestAttributes& r = requests[i % requests.size()];
    const auto t0 = Clock::now();
    const Decision d = policy->evaluate(r);
    const auto t1 = Clock::now();
    const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
    sink += d.explanation.size() + d.deciding_sid.size();
    all.push_back(ns);
    (d.allowed ? allowed : denied).push_back(ns);
  }

  std::vector<std::int64_t> batch_means;  // in ns per evaluation, rounded down
  const auto b_start = Clock::now();
  for (std::size_t b = 0; b < kEvaluations / kBatch; ++b) {
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < kBatch; ++i) {
      const Decision d = policy->evaluate(requests[(b * kBatch + i) % requests.size()]);
      sink += d.explanation.size();
    }
    const auto t1 = Clock::now();
    batch_means.push_back(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count() /
                          static_cast<std::int64_t>(kBatch));
  }
  const double total_s = std::chrono::duration<double>(Clock::now() - b_start).count();

  for (auto* v : {&all, &allowed, &denied, &batch_means}) std::sort(v->begin(), v->end());
  const double p99 = percentile(all, 0.99);
  std::printf(
      "policy_bench: %zu statements, %zu distinct requests, %zu evaluations "
      "(%.1f%% allowed, %.1f%% denied; denials build their explanation)\n",
      policy->statements().size(), requests.size(), kEvaluations,
      100.0 * static_cast<double>(allowed.size()) / static_cast<double>(kEvaluations),
      100.0 * static_cast<double>(denied.size()) / static_cast<double>(kEvaluations));
  std::printf("clock read overhead: p50 %.0f ns (included in the per-evaluation samples)\n",
              percentile(overhead, 0.5));
  std::printf("per evaluation: p50 %.0f ns, p99 %.0f ns, p99.9 %.0f ns, max %.0f ns\n",
              percentile(all, 0.5), p99, percentile(all, 0.999), static_cast<double>(all.back()));
  std::printf("  allowed: p50 %.0f ns, p99 %.0f ns; denied: p50 %.0f ns, p99 %.0f ns\n",
              percentile(allowed, 0.5), percentile(allowed, 0.99), percentile(denied, 0.5),
              percentile(denied, 0.99));
  std::printf(
      "batches of %zu: mean per evaluation p50 %.0f ns, p99 %.0f ns, max %.0f ns; "
      "%.2f M evaluations/s on one thread\n",
      kBatch, percentile(batch_means, 0.5), percentile(batch_means, 0.99),
      static_cast<double>(batch_means.back()), static_cast<double>(kEvaluations) / total_s / 1e6);
  const bool ok = p99 < kTargetP99Ns;
  std::printf("target p99 < %.0f ns: %s (sink %zu)\n", kTargetP99Ns, ok ? "met" : "MISSED", sink);
  return ok ? 0 : 1;
}
