// xksctl bench: a load generator for capacity evidence (a KMS quota increase,
// the performance issue). TLS keep-alive connections, one coroutine each on 1-2
// threads, every request signed with SigV4 at send time (so every signature is
// fresh and valid). Closed loop by default; with --rate, open loop whose
// latency is measured from the intended send time, so a stalled server shows
// up as latency instead of silently lowering the offered load (no coordinated
// omission).
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <openssl/rand.h>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/crypto/base64.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/util.hpp"
#include "xks/tools/xks_client.hpp"

namespace xks::tools {

namespace {

namespace asio = boost::asio;
using Clock = std::chrono::steady_clock;

constexpr const char* kBenchHelp =
    "usage: xksctl bench --config FILE --api encrypt|decrypt|health|metadata|mix --connections N\n"
    "                    (--duration S | --requests R) [--rate RPS] [options]\n"
    "\n"
    "Load-generates signed XKS requests over TLS keep-alive connections (opened before the\n"
    "clock starts) and reports requests/s, latency p50/p90/p99/p99.9/max and errors by errorName.\n"
    "  --keystore URI_PATH   key store (default: the first); its first credential signs\n"
    "  --key K               externalKeyId (default: the key store's first key)\n"
    "  --api A               encrypt, decrypt, health, metadata, or mix (per 20 requests:\n"
    "                        9 encrypt, 9 decrypt, 1 metadata, 1 health)\n"
    "  --connections N       concurrent keep-alive connections, one coroutine each\n"
    "  --duration S | --requests R   how long, or how many requests in all\n"
    "  --rate RPS            open loop at RPS in all: latency counts from the intended send\n"
    "                        time (no coordinated omission); default closed loop\n"
    "  --size BYTES          encrypt plaintext size (default 32)\n"
    "  --cdiv                encrypt asks for ciphertextDataIntegrityValue\n"
    "  --threads T           I/O threads, 1 or 2 (default 2 with more than one connection)\n"
    "  --endpoint URL --cacert PEM --region R --timeout-ms N   as for xksctl call\n"
    "  --json                print one JSON object instead of text\n";

struct Template {
  Api api;
  std::string target;
  std::string before_id, after_id;  // the body around the kmsRequestId
};

constexpr const char* kIdPlaceholder = "kmsRequestId-placeholder-0000000000000";

Template make_template(Api api, const std::string& uri_path, const std::string& key,
                       nlohmann::json body, const std::string& region) {
  nlohmann::json rm = request_metadata(api, region);
  rm["kmsRequestId"] = kIdPlaceholder;
  body["requestMetadata"] = rm;
  const std::string text = body.dump();
  const auto at = text.find(kIdPlaceholder);
  return {api, api_target(uri_path, api, key), text.substr(0, at),
          text.substr(at + std::string_view(kIdPlaceholder).size())};
}

struct Shared {
  Endpoint endpoint;
  std::shared_ptr<asio::ssl::context> tls;
  std::chrono::milliseconds timeout{10000};
  Signer signer;
  std::vector<const Template*> schedule;  // ticket i uses schedule[i % size]
  std::atomic<std::uint64_t> next_ticket{0};
  std::uint64_t max_tickets = std::numeric_limits<std::uint64_t>::max();
  Clock::time_point start, end = Clock::time_point::max();
  double rate = 0;  // 0: closed loop
};

struct ConnStats {
  std::vector<std::uint32_t> latency_us;
  // The same latencies split by answer: 200, and the fast refusals of an
  // overloaded proxy (429 ThrottlingException, 503 DependencyTimeoutException).
  std::vector<std::uint32_t> ok_latency_us, refused_latency_us;
  std::map<std::string, std::uint64_t> errors;
  std::uint64_t ok = 0, over_budget = 0, transport_errors = 0, reconnects = 0;
  Clock::time_point last_done{};
};

asio::awaitable<void> open_connection(Connection& conn, std::string& error) {
  try {
    Timing t;
    co_await conn.connect(t);
  } catch (const std::exception& e) {
    error = e.what();
  }
}

asio::awaitable<void> drive(Shared& sh, Connection& conn, ConnStats& st) {
  asio::steady_timer timer(co_await asio::this_coro::executor);
  const bool open_loop = sh.rate > 0;
  for (;;) {
    const std::uint64_t ticket = sh.next_ticket.fetch_add(1, std::memory_order_relaxed);
    if (ticket >= sh.max_tickets) break;
    Clock::time_point intended;
    if (open_loop) {
      intended =
          sh.start + std::chrono::duration_cast<Clock::duration>(
                         std::chrono::duration<double>(static_cast<double>(ticket) / sh.rate));
      if (intended >= sh.end) break;
      if (intended > Clock::now()) {
        timer.expires_at(intended);
        (void)co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
      }
    } else if (Clock::now() >= sh.end) {
      break;
    }
    const Template& tpl = *sh.schedule[ticket % sh.schedule.size()];
    auto req = signed_post(sh.endpoint, tpl.target, tpl.before_id + uuid4() + tpl.after_id,
                           sh.signer, std::chrono::system_clock::now());
    const auto t0 = open_loop ? intended : Clock::now();
    const bool was_open = conn.is_open();
    bool failed = false;
    try {
      Timing timing;
      const Reply reply = co_await conn.send(req, timing);
      const auto done = Clock::now();
      st.last_done = done;
      if (!was_open) ++st.reconnects;
      const auto us = std::chrono::duration_cast<std::chrono::microseconds>(done - t0).count();
      const auto us32 = static_cast<std::uint32_t>(
          std::min<long long>(us, std::numeric_limits<std::uint32_t>::max()));
      st.latency_us.push_back(us32);
      if (static_cast<double>(us) > kKmsBudgetMs * 1000.0) ++st.over_budget;
      if (reply.status == 429 || reply.status == 503) st.refused_latency_us.push_back(us32);
      if (reply.status == 200) {
        st.ok_latency_us.push_back(us32);
        ++st.ok;
      } else {
        const auto j = nlohmann::json::parse(reply.body, nullptr, false);
        std::string name = "HTTP " + std::to_string(reply.status);
        if (j.is_object() && j.contains("errorName") && j["errorName"].is_string())
          name = j["errorName"].get<std::string>();
        ++st.errors[name];
      }
    } catch (const TransportError& e) {
      ++st.transport_errors;
      ++st.errors[std::string("transport:") + to_string(e.stage())];
      st.last_done = Clock::now();
      failed = true;
    }
    if (failed) {
      // A refused or broken connection fails fast: pause so an outage does
      // not turn into a busy loop.
      timer.expires_after(std::chrono::milliseconds(10));
      (void)co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
}

// One io_context per thread, each running its share of the connections: no
// completion crosses threads, so a reply never costs a wake-up of the other
// thread (with one io_context shared by two threads, futex hand-offs were a
// large part of the generator's CPU, taken from the proxy it measures).
void run_each_on_own_thread(std::vector<std::unique_ptr<asio::io_context>>& contexts) {
  std::vector<std::thread> pool;
  for (std::size_t i = 1; i < contexts.size(); ++i)
    pool.emplace_back([&ctx = *contexts[i]] { ctx.run(); });
  contexts.front()->run();
  for (auto& t : pool) t.join();
}

double percentile(const std::vector<std::uint32_t>& sorted, double p) {
  if (sorted.empty()) return 0;
  const auto rank =
      static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
  return static_cast<double>(sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1]) / 1000.0;
}

}  // namespace

int bench_main(int argc, char** argv) {
  const Args args(
      argc, argv, 2,
      {"--config", "--keystore", "--key", "--api", "--connections", "--duration", "--requests",
       "--rate", "--size", "--threads", "--endpoint", "--cacert", "--region", "--timeout-ms"},
      {"--cdiv", "--json"}, "bench");
  if (args.help()) return std::fputs(kBenchHelp, stdout), 0;
  if (!args.positional().empty())
    throw UsageError("unexpected argument '" + args.positional()[0] + "'");

  const config::Config cfg =
      config::load_config(args.require("--config", "the proxy's configuration file"));
  const config::KeyStore& ks = pick_keystore(cfg, args.get_or("--keystore", ""));
  const std::string api_name = args.require("--api", "encrypt, decrypt, health, metadata or mix");
  if (api_name != "encrypt" && api_name != "decrypt" && api_name != "health" &&
      api_name != "metadata" && api_name != "mix") {
    throw UsageError("--api '" + api_name + "': use encrypt, decrypt, health, metadata or mix");
  }
  (void)args.require("--connections", "how many concurrent keep-alive connections");
  const auto connections = static_cast<unsigned>(*args.number("--connections", 1, 10000));
  const auto duration = args.decimal("--duration", 0.001, 86400);
  const auto requests = args.number("--requests", 1, 1000000000ULL);
  if (duration.has_value() == requests.has_value()) {
    throw UsageError(
        "give exactly one of --duration SECONDS or --requests COUNT; see xksctl bench --help");
  }
  const double rate = args.decimal("--rate", 0.001, 10000000).value_or(0);
  const auto size = static_cast<std::size_t>(args.number("--size", 0, 4300 * 4).value_or(32));
  const unsigned threads =
      static_cast<unsigned>(args.number("--threads", 1, 2).value_or(connections > 1 ? 2 : 1));
  const bool json_out = args.flag("--json");

  Shared sh;
  sh.endpoint =
      args.get("--endpoint") ? parse_endpoint(*args.get("--endpoint")) : default_endpoint(cfg);
  sh.timeout = std::chrono::milliseconds(args.number("--timeout-ms", 1, 600000).value_or(10000));
  sh.signer = Signer{ks.credentials.front().access_key_id, ks.credentials.front().secret,
                     args.get_or("--region", "us-east-1")};
  const ClientTlsOptions tls_options = client_trust(cfg, sh.endpoint, args.get_or("--cacert", ""));
  sh.tls = sh.endpoint.tls ? make_client_tls_context(tls_options) : nullptr;
  const std::string key = args.get_or("--key", ks.keys.front().id);
  const std::string& region = sh.signer.region;

  // Request templates; decrypt needs one real ciphertext, made by one encrypt first.
  SecureBytes plaintext(size);
  if (size > 0 && RAND_bytes(plaintext.data(), static_cast<int>(size)) != 1)
    throw std::runtime_error("RAND_bytes failed");
  nlohmann::json enc_body = {{"plaintext", crypto::base64_encode(plaintext)},
                             {"encryptionAlgorithm", "AES_GCM"}};
  if (args.flag("--cdiv")) enc_body["ciphertextDataIntegrityValueAlgorithm"] = "SHA_256";
  const Template enc = make_template(Api::Encrypt, ks.uri_path, key, enc_body, region);
  const Template health =
      make_template(Api::Health, ks.uri_path, key, nlohmann::json::object(), region);
  const Template meta =
      make_template(Api::Metadata, ks.uri_path, key, nlohmann::json::object(), region);
  Template dec = enc;
  if (api_name == "decrypt" || api_name == "mix") {
    Reply sealed = run_sync([&]() -> asio::awaitable<Reply> {
      Connection conn(sh.endpoint, sh.tls, sh.timeout);
      Timing t;
      auto req = signed_post(sh.endpoint, enc.target, enc.before_id + uuid4() + enc.after_id,
                             sh.signer, std::chrono::system_clock::now());
      co_return co_await conn.send(req, t);
    }());
    const auto j = nlohmann::json::parse(sealed.body, nullptr, false);
    if (sealed.status != 200 || !j.is_object() || !j.contains("ciphertext")) {
      throw std::runtime_error("the encrypt that prepares the decrypt requests failed: HTTP " +
                               std::to_string(sealed.status) + " " + sealed.body.substr(0, 200));
    }
    nlohmann::json dec_body = {{"ciphertext", j["ciphertext"]},
                               {"initializationVector", j["initializationVector"]},
                               {"authenticationTag", j["authenticationTag"]},
                               {"encryptionAlgorithm", "AES_GCM"}};
    if (j.contains("ciphertextMetadata")) dec_body["ciphertextMetadata"] = j["ciphertextMetadata"];
    dec = make_template(Api::Decrypt, ks.uri_path, key, dec_body, region);
  }
  if (api_name == "encrypt") sh.schedule = {&enc};
  if (api_name == "decrypt") sh.schedule = {&dec};
  if (api_name == "health") sh.schedule = {&health};
  if (api_name == "metadata") sh.schedule = {&meta};
  if (api_name == "mix") {
    for (int i = 0; i < 9; ++i) sh.schedule.push_back(&enc), sh.schedule.push_back(&dec);
    sh.schedule.push_back(&meta);
    sh.schedule.push_back(&health);
  }

  // Phase 1: open every connection (TCP + TLS) before the clock starts.
  // Connection i lives on contexts[i % threads] in both phases.
  std::vector<std::unique_ptr<asio::io_context>> contexts;
  for (unsigned t = 0; t < threads; ++t) contexts.push_back(std::make_unique<asio::io_context>(1));
  std::vector<std::unique_ptr<Connection>> conns;
  std::vector<std::string> connect_errors(connections);
  for (unsigned i = 0; i < connections; ++i) {
    conns.push_back(std::make_unique<Connection>(sh.endpoint, sh.tls, sh.timeout));
    asio::co_spawn(*contexts[i % threads], open_connection(*conns.back(), connect_errors[i]),
                   asio::detached);
  }
  run_each_on_own_thread(contexts);
  for (const auto& e : connect_errors) {
    if (!e.empty()) throw std::runtime_error("cannot open the benchmark connections: " + e);
  }

  // Phase 2: the measured run.
  for (auto& ctx : contexts) ctx->restart();
  std::vector<ConnStats> stats(connections);
  if (requests) sh.max_tickets = *requests;
  sh.rate = rate;
  sh.start = Clock::now();
  if (duration)
    sh.end = sh.start +
             std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(*duration));
  for (unsigned i = 0; i < connections; ++i) {
    asio::co_spawn(*contexts[i % threads], drive(sh, *conns[i], stats[i]), asio::detached);
  }
  run_each_on_own_thread(contexts);
  conns.clear();

  std::vector<std::uint32_t> all, all_ok, all_refused;
  std::map<std::string, std::uint64_t> errors;
  std::uint64_t ok = 0, over = 0, transport = 0, reconnects = 0;
  Clock::time_point last = sh.start;
  for (const auto& s : stats) {
    all.insert(all.end(), s.latency_us.begin(), s.latency_us.end());
    all_ok.insert(all_ok.end(), s.ok_latency_us.begin(), s.ok_latency_us.end());
    all_refused.insert(all_refused.end(), s.refused_latency_us.begin(), s.refused_latency_us.end());
    for (const auto& [n, c] : s.errors) errors[n] += c;
    ok += s.ok;
    over += s.over_budget;
    transport += s.transport_errors;
    reconnects += s.reconnects;
    last = std::max(last, s.last_done);
  }
  std::sort(all.begin(), all.end());
  std::sort(all_ok.begin(), all_ok.end());
  std::sort(all_refused.begin(), all_refused.end());
  const auto latency_json = [](const std::vector<std::uint32_t>& v) {
    return nlohmann::json{{"count", v.size()},
                          {"p50", percentile(v, 50)},
                          {"p99", percentile(v, 99)},
                          {"max", v.empty() ? 0.0 : static_cast<double>(v.back()) / 1000.0}};
  };
  const double elapsed = std::max(1e-9, std::chrono::duration<double>(last - sh.start).count());
  const auto completed = static_cast<double>(all.size());
  const double rps = completed / elapsed;
  std::uint64_t error_count = 0;
  for (const auto& [n, c] : errors) error_count += c;
  const std::string mode = rate > 0 ? "open loop" : "closed loop";

  if (json_out) {
    nlohmann::json j = {{"api", api_name},
                        {"endpoint", sh.endpoint.url() + ks.uri_path},
                        {"key", key},
                        {"connections", connections},
                        {"threads", threads},
                        {"mode", rate > 0 ? "open" : "closed"},
                        {"elapsed_s", elapsed},
                        {"requests", all.size()},
                        {"ok", ok},
                        {"errors", errors},
                        {"transport_errors", transport},
                        {"reconnects", reconnects},
                        {"requests_per_second", rps},
                        {"latency_ms",
                         {{"p50", percentile(all, 50)},
                          {"p90", percentile(all, 90)},
                          {"p99", percentile(all, 99)},
                          {"p99.9", percentile(all, 99.9)},
                          {"max", all.empty() ? 0.0 : static_cast<double>(all.back()) / 1000.0}}},
                        {"ok_per_second", static_cast<double>(ok) / elapsed},
                        {"latency_ms_ok", latency_json(all_ok)},
                        {"latency_ms_refused", latency_json(all_refused)},
                        {"over_250ms", over},
                        {"size", size}};
    if (rate > 0) j["rate"] = rate;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf(
        "bench: %s on %s%s key %s, %u connection(s), %u thread(s), %s%s, %.2f s, %zu-byte "
        "plaintext\n",
        api_name.c_str(), sh.endpoint.url().c_str(), ks.uri_path.c_str(), key.c_str(), connections,
        threads, mode.c_str(),
        rate > 0 ? (" at " + std::to_string(static_cast<long long>(rate)) + " req/s").c_str() : "",
        elapsed, size);
    std::printf("%.1f requests/s\n", rps);
    std::printf("requests: %zu completed, %llu ok, %llu errors (%llu transport), %llu reconnects\n",
                all.size(), static_cast<unsigned long long>(ok),
                static_cast<unsigned long long>(error_count),
                static_cast<unsigned long long>(transport),
                static_cast<unsigned long long>(reconnects));
    std::printf("latency ms%s: p50 %.2f  p90 %.2f  p99 %.2f  p99.9 %.2f  max %.2f\n",
                rate > 0 ? " (from intended send time)" : "", percentile(all, 50),
                percentile(all, 90), percentile(all, 99), percentile(all, 99.9),
                all.empty() ? 0.0 : static_cast<double>(all.back()) / 1000.0);
    std::printf("over KMS's 250 ms budget: %llu\n", static_cast<unsigned long long>(over));
    if (!all_refused.empty()) {
      std::printf("refused (429/503): %zu, latency ms p50 %.2f  p99 %.2f  max %.2f\n",
                  all_refused.size(), percentile(all_refused, 50), percentile(all_refused, 99),
                  static_cast<double>(all_refused.back()) / 1000.0);
    }
    for (const auto& [n, c] : errors)
      std::printf("error %s: %llu\n", n.c_str(), static_cast<unsigned long long>(c));
  }
  return ok > 0 ? 0 : 1;
}

}  // namespace xks::tools
