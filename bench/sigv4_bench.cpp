// SigV4 verification cost (SigV4Verifier::verify was ~10 % of the
// proxy's CPU per health request). Signs two requests as botocore sends them
// (tests/unit/auth/data/botocore_*.http: Host, Accept-Encoding, Content-Type,
// X-Amz-Date, Authorization, Content-Length, User-Agent; signed headers
// content-type;host;x-amz-date) once, then verifies each many times.
//   sigv4_bench [verifies per request kind, default 1000000] [threads, default 1]
// Prints ns per verify, the minimum and median over rounds of 10^5, twice: in
// CPU time of the verifying thread (CLOCK_THREAD_CPUTIME_ID), which a busy
// shared machine disturbs far less than wall time because time spent
// descheduled is not counted, and in wall time. With threads > 1 every thread
// verifies the same request through one shared verifier, as the I/O threads
// do, and the figures are per verify per thread.
// Instructions per verify, which do not depend on the machine's load:
//   valgrind --tool=callgrind --toggle-collect='xks::auth::SigV4Verifier::verify*'
//       build/release/bench/sigv4_bench 20000
// (one command line), then the total Ir / 40000 (both request kinds). Valgrind hides SHA-NI from
// OpenSSL, so hashing weighs more there than on a machine that has it.
#include <boost/beast/http/fields.hpp>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "xks/auth/sigv4.hpp"

namespace {

using Clock = std::chrono::steady_clock;
namespace http = boost::beast::http;

constexpr std::string_view kAkid = "XKSBENCHACCESSKEY2345";
constexpr std::string_view kSecret = "YmVuY2gtb25seS1zZWNyZXQtZG8tbm90LXVzZS0wMDAwMA==";
constexpr std::size_t kRound = 100'000;

const std::string kEncryptBody =
    R"({"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice",)"
    R"("kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",)"
    R"("kmsOperation":"Encrypt","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae"},)"
    R"("plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"})";
const std::string kHealthBody =
    R"({"requestMetadata":{"kmsRequestId":"5112f4d6-db54-4af4-ae30-c55a22a8dfae",)"
    R"("kmsOperation":"KmsHealthCheck"}})";

struct Request {
  const char* name;
  std::string method = "POST";
  std::string target;
  std::string body;
  http::fields headers;
};

Request make(const char* name, std::string target, std::string body,
             std::chrono::system_clock::time_point now) {
  Request r{name, "POST", std::move(target), std::move(body), {}};
  xks::auth::SignInput in;
  in.method = r.method;
  in.host = "xks.example.com:8443";
  in.target = r.target;
  in.body = r.body;
  in.region = "us-east-1";
  in.access_key_id = kAkid;
  in.secret = kSecret;
  in.now = now;
  in.extra_signed_headers = {{"content-type", "application/json"}};
  const auto s = xks::auth::sign(in);
  // The order botocore (urllib3) puts them on the wire.
  r.headers.insert("Host", in.host);
  r.headers.insert("Accept-Encoding", "identity");
  r.headers.insert("Content-Type", "application/json");
  r.headers.insert("X-Amz-Date", s.amz_date);
  r.headers.insert("Authorization", s.authorization);
  r.headers.insert("Content-Length", std::to_string(r.body.size()));
  r.headers.insert("User-Agent", "Boto3/1.26.27 Python/3.11.2 Linux/6.1.0 Botocore/1.29.27");
  return r;
}

const xks::SecureString* lookup(std::string_view akid) {
  static const xks::SecureString secret(kSecret);
  return akid == kAkid ? &secret : nullptr;
}

double thread_cpu_ns() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) * 1e9 + static_cast<double>(ts.tv_nsec);
}

struct Rounds {
  std::vector<double> cpu, wall;  // ns per verify, one per round
};

// Verifies r count times, timing each round of kRound.
Rounds run(const xks::auth::SigV4Verifier& verifier, const Request& r,
           std::chrono::system_clock::time_point now, std::size_t count) {
  const xks::auth::SecretLookup lk = lookup;
  const xks::auth::RequestView view{r.method, r.target, r.headers, r.body};
  Rounds rounds;
  std::size_t done = 0;
  while (done < count) {
    const std::size_t n = std::min(kRound, count - done);
    const double c0 = thread_cpu_ns();
    const auto t0 = Clock::now();
    for (std::size_t i = 0; i < n; ++i) {
      if (!verifier.verify(view, lk, now)) {
        std::fprintf(stderr, "sigv4_bench: %s does not verify\n", r.name);
        std::exit(2);
      }
    }
    const auto t1 = Clock::now();
    const double c1 = thread_cpu_ns();
    rounds.cpu.push_back((c1 - c0) / static_cast<double>(n));
    rounds.wall.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() /
                          static_cast<double>(n));
    done += n;
  }
  return rounds;
}

void report(const char* name, std::size_t threads, Rounds r) {
  std::sort(r.cpu.begin(), r.cpu.end());
  std::sort(r.wall.begin(), r.wall.end());
  std::printf(
      "%-8s threads %zu: ns per verify: cpu min %.0f median %.0f; wall min %.0f median %.0f"
      " (%zu rounds)\n",
      name, threads, r.cpu.front(), r.cpu[r.cpu.size() / 2], r.wall.front(),
      r.wall[r.wall.size() / 2], r.cpu.size());
}

}  // namespace

int main(int argc, char** argv) {
  const std::size_t count = argc > 1 ? std::strtoul(argv[1], nullptr, 10) : 1'000'000;
  const std::size_t threads = argc > 2 ? std::max(1UL, std::strtoul(argv[2], nullptr, 10)) : 1;
  const auto now = std::chrono::system_clock::now();
  const Request requests[] = {
      make("encrypt", "/xks/kms/xks/v1/keys/test-key_1.v2/encrypt", kEncryptBody, now),
      make("health", "/xks/kms/xks/v1/health", kHealthBody, now),
  };
  const xks::auth::SigV4Verifier verifier;
  for (const Request& r : requests) {
    if (threads == 1) {
      report(r.name, 1, run(verifier, r, now, count));
      continue;
    }
    std::vector<Rounds> per_thread(threads);
    std::vector<std::thread> pool;
    for (std::size_t t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] { per_thread[t] = run(verifier, r, now, count); });
    }
    for (auto& th : pool) th.join();
    Rounds all;
    for (const auto& v : per_thread) {
      all.cpu.insert(all.cpu.end(), v.cpu.begin(), v.cpu.end());
      all.wall.insert(all.wall.end(), v.wall.begin(), v.wall.end());
    }
    report(r.name, threads, std::move(all));
  }
  return 0;
}
