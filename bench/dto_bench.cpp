// Cost of the JSON layer of one request: parsing request bodies into
// DTOs and serializing responses, with bodies shaped as KMS sends them
// (requestMetadata with principal, key ARN, operation, request id and via-service;
// AAD; a CDIV request) at 32 B and 4300 B of plaintext (the spec's minimum
// supported size), plus GetHealthStatus and an error body.
//
// Each case runs in batches timed as a whole; the figure printed is the median of
// the batch means (robust against the other work on a shared machine), with the
// fastest batch beside it. Release builds only:
//   cmake -S . -B build/rel -DCMAKE_BUILD_TYPE=Release -DXKS_BUILD_TESTS=OFF
//   cmake --build build/rel --target dto_bench && build/rel/bench/dto_bench [filter] [batches]
// With a filter only the cases whose name contains it run. A negative batch count
// -N runs each case exactly N times inside measure_fixed() instead, for
// instruction counts per operation:
//   valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*measure_fixed*'
//     build/rel/bench/dto_bench 'parse encrypt 4300' -1000    (Ir / 1000 = per op)
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <string_view>
#include <tuple>
#include <utility>
#include <vector>

#include "xks/api/dto.hpp"
#include "xks/api/service.hpp"
#include "xks/crypto/aad.hpp"
#include "xks/crypto/base64.hpp"

namespace {

using Clock = std::chrono::steady_clock;
using namespace xks;

std::size_t g_sink = 0;  // results feed it so the optimizer keeps the work

xks::Bytes pattern(std::size_t n, std::uint8_t seed) {
  xks::Bytes b(n);
  for (std::size_t i = 0; i < n; ++i) b[i] = static_cast<std::uint8_t>(seed + i * 131 + (i >> 7));
  return b;
}

std::string metadata_json(std::string_view op) {
  return std::string(R"({"awsPrincipalArn":"arn:aws:iam::123456789012:role/app-service-role",)"
                     R"("kmsKeyArn":"arn:aws:kms:us-east-1:123456789012:key/)"
                     R"(1234abcd-12ab-34cd-56ef-1234567890ab","kmsOperation":")") +
         std::string(op) +
         R"(","kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae","kmsViaService":"ebs"})";
}

std::string encrypt_body(std::size_t plaintext_bytes) {
  return R"({"requestMetadata":)" + metadata_json("Encrypt") +
         R"(,"additionalAuthenticatedData":")" + crypto::base64_encode(pattern(64, 7)) +
         R"(","plaintext":")" + crypto::base64_encode(pattern(plaintext_bytes, 1)) +
         R"(","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"})";
}

std::string decrypt_body(std::size_t ciphertext_bytes) {
  return R"({"requestMetadata":)" + metadata_json("Decrypt") +
         R"(,"additionalAuthenticatedData":")" + crypto::base64_encode(pattern(64, 7)) +
         R"(","encryptionAlgorithm":"AES_GCM","ciphertext":")" +
         crypto::base64_encode(pattern(ciphertext_bytes, 2)) + R"(","ciphertextMetadata":")" +
         crypto::base64_encode(crypto::current_ciphertext_metadata()) +
         R"(","initializationVector":")" + crypto::base64_encode(pattern(12, 3)) +
         R"(","authenticationTag":")" + crypto::base64_encode(pattern(16, 4)) + R"("})";
}

api::EncryptResponse encrypt_response(std::size_t plaintext_bytes) {
  api::EncryptResponse r;
  r.ciphertext = pattern(plaintext_bytes, 5);
  r.iv = pattern(12, 6);
  r.tag = pattern(16, 8);
  r.ciphertext_metadata = crypto::current_ciphertext_metadata();
  r.cdiv = "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=";
  return r;
}

std::vector<hsm::EkmHealth> health_snapshot() {
  std::vector<hsm::EkmHealth> v;
  v.push_back({"xks-token 1a2b3c4d5e6f", "SoftHSM v2 2.6", "SoftHSM project",
               hsm::HealthStatus::Active, "", std::chrono::microseconds(350)});
  v.push_back({"xks-token-b 99aa88bb", "SoftHSM v2 2.6", "SoftHSM project",
               hsm::HealthStatus::Degraded, "slow", std::chrono::microseconds(9000)});
  return v;
}

struct Case {
  std::string name;
  std::function<void()> op;
};

void run(const Case& c, int batches) {
  constexpr int kWarmup = 2000;
  for (int i = 0; i < kWarmup; ++i) c.op();
  // Size a batch to about 2 ms so the clock read is noise.
  int per_batch = 1;
  for (;;) {
    const auto t0 = Clock::now();
    for (int i = 0; i < per_batch; ++i) c.op();
    if (Clock::now() - t0 > std::chrono::milliseconds(2) || per_batch >= (1 << 22)) break;
    per_batch *= 2;
  }
  std::vector<double> means;
  means.reserve(static_cast<std::size_t>(batches));
  for (int b = 0; b < batches; ++b) {
    const auto t0 = Clock::now();
    for (int i = 0; i < per_batch; ++i) c.op();
    const std::chrono::duration<double, std::nano> d = Clock::now() - t0;
    means.push_back(d.count() / per_batch);
  }
  std::sort(means.begin(), means.end());
  std::printf("%-34s %9.0f ns/op  (min %9.0f)\n", c.name.c_str(), means[means.size() / 2],
              means.front());
}

[[gnu::noinline]] void measure_fixed(const Case& c, int n) {
  for (int i = 0; i < n; ++i) c.op();
}

template <class T>
void sink(const Result<T>& r) {
  if (!r) std::abort();  // every bench body is valid
  g_sink += r->metadata.kms_request_id.size();
}

}  // namespace

int main(int argc, char** argv) {
  const std::string_view filter = argc > 1 ? argv[1] : "";
  const int batches = argc > 2 ? std::atoi(argv[2]) : 200;

  const std::string health_req =
      R"({"requestMetadata":{"kmsRequestId":"4112f4d6-db54-4af4-ae30-c55a22a8dfae",)"
      R"("kmsOperation":"KmsHealthCheck"}})";
  const std::string metadata_req = R"({"requestMetadata":)" + metadata_json("DescribeKey") + "}";
  const std::string enc32 = encrypt_body(32), enc4300 = encrypt_body(4300);
  const std::string dec32 = decrypt_body(32), dec4300 = decrypt_body(4300);
  const api::EncryptResponse eresp32 = encrypt_response(32), eresp4300 = encrypt_response(4300);
  const auto snapshot = health_snapshot();
  const Error error = make_error(ErrorName::ValidationException,
                                 "initializationVector must be 12 or 16 bytes (got 7)");
  api::KeyMetadataResponse key_md;
  key_md.key_usage = {"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP"};

  std::vector<Case> cases;
  cases.push_back({"parse health", [&] { sink(api::parse_health_request(health_req)); }});
  cases.push_back(
      {"parse key metadata", [&] { sink(api::parse_key_metadata_request(metadata_req)); }});
  for (auto [n, body] : {std::pair{32, &enc32}, std::pair{4300, &enc4300}}) {
    cases.push_back({"parse encrypt " + std::to_string(n),
                     [body] { sink(api::parse_encrypt_request(*body)); }});
  }
  for (auto [n, body] : {std::pair{32, &dec32}, std::pair{4300, &dec4300}}) {
    cases.push_back({"parse decrypt " + std::to_string(n),
                     [body] { sink(api::parse_decrypt_request(*body)); }});
  }
  for (auto [n, resp] : {std::pair{32, &eresp32}, std::pair{4300, &eresp4300}}) {
    cases.push_back({"serialize encrypt " + std::to_string(n),
                     [resp] { g_sink += api::serialize(*resp).size(); }});
  }
  for (std::size_t n : {std::size_t{32}, std::size_t{4300}}) {
    cases.push_back({"serialize decrypt " + std::to_string(n), [n] {
                       // As the service hands it over: a fresh wiping buffer per request.
                       api::DecryptResponse r{SecureBytes(n, 0x5a)};
                       std::string body = api::serialize(r);
                       g_sink += body.size();
                       secure_wipe(body.data(), body.size());
                     }});
  }
  for (auto [n, body, resp] :
       {std::tuple{32, &enc32, &eresp32}, std::tuple{4300, &enc4300, &eresp4300}}) {
    cases.push_back({"encrypt parse+serialize " + std::to_string(n), [body, resp] {
                       sink(api::parse_encrypt_request(*body));
                       g_sink += api::serialize(*resp).size();
                     }});
  }
  cases.push_back({"serialize key metadata", [&] { g_sink += api::serialize(key_md).size(); }});
  cases.push_back({"health response (make+serialize)", [&] {
                     g_sink += api::serialize(api::make_health_response(snapshot, 3)).size();
                   }});
  cases.push_back({"health parse+respond", [&] {
                     sink(api::parse_health_request(health_req));
                     g_sink += api::serialize(api::make_health_response(snapshot, 3)).size();
                   }});
  cases.push_back({"error body", [&] { g_sink += api::error_body(error).size(); }});

  std::printf(
      "dto_bench: median of %d batch means (bodies: encrypt %zu/%zu B, "
      "decrypt %zu/%zu B)\n",
      batches, enc32.size(), enc4300.size(), dec32.size(), dec4300.size());
  for (const Case& c : cases) {
    if (!filter.empty() && c.name.find(filter) == std::string::npos) continue;
    if (batches > 0) {
      run(c, batches);
    } else {
      for (int i = 0; i < 10; ++i) c.op();  // first-touch allocations stay out of the count
      measure_fixed(c, -batches);
      std::printf("%-34s %d runs\n", c.name.c_str(), -batches);
    }
  }
  std::printf("(sink %zu)\n", g_sink);
  return 0;
}
