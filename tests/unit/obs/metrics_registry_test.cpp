// The registry primitives and the text exposition format 0.0.4, byte for byte.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <thread>
#include <vector>

#include "xks/obs/metrics.hpp"

namespace xks::obs {
namespace {

using namespace std::chrono_literals;

TEST(FormatValue, SpellsValuesAsPrometheusClientsDo) {
  EXPECT_EQ(format_value(0), "0");
  EXPECT_EQ(format_value(3), "3");
  EXPECT_EQ(format_value(-1), "-1");
  EXPECT_EQ(format_value(1.5), "1.5");
  EXPECT_EQ(format_value(0.0005), "0.0005");  // not "5e-04": `le` labels must match
  EXPECT_EQ(format_value(0.025), "0.025");
  EXPECT_EQ(format_value(1e-05), "1e-05");
  EXPECT_EQ(format_value(1700000000.0), "1700000000");  // timestamps without exponent
  EXPECT_EQ(format_value(1234567.25), "1234567.25");
  EXPECT_EQ(format_value(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(format_value(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(format_value(std::nan("")), "NaN");
}

TEST(Escaping, LabelValuesEscapeBackslashQuoteAndNewline) {
  EXPECT_EQ(escape_label_value("plain/kms/xks/v1"), "plain/kms/xks/v1");
  EXPECT_EQ(escape_label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

TEST(Escaping, HelpEscapesBackslashAndNewlineButNotQuotes) {
  EXPECT_EQ(escape_help("say \"hi\"\\\n"), "say \"hi\"\\\\\\n");
}

TEST(Exposition, CounterWithLabelsGolden) {
  Registry r;
  auto& c = r.counter("test_requests_total", "Requests handled.", {"api", "code"});
  c.with({"Encrypt", "200"}).inc(3);
  c.with({"Decrypt", "500"}).inc();
  EXPECT_EQ(r.render(),
            "# HELP test_requests_total Requests handled.\n"
            "# TYPE test_requests_total counter\n"
            "test_requests_total{api=\"Encrypt\",code=\"200\"} 3\n"
            "test_requests_total{api=\"Decrypt\",code=\"500\"} 1\n");
}

TEST(Exposition, CounterWithoutLabelsGolden) {
  Registry r;
  r.counter("test_total", "Things.").with({});
  EXPECT_EQ(r.render(),
            "# HELP test_total Things.\n"
            "# TYPE test_total counter\n"
            "test_total 0\n");
}

TEST(Exposition, GaugeGolden) {
  Registry r;
  auto& g = r.gauge("test_temperature", "Line one\nline two \\ end.", {"room"});
  g.with({"a"}).set(2.5);
  g.with({"b"}).set(-1);
  auto& h = g.with({"c"});
  h.set(10);
  h.inc();
  h.dec();
  h.add(0.25);
  EXPECT_EQ(r.render(),
            "# HELP test_temperature Line one\\nline two \\\\ end.\n"
            "# TYPE test_temperature gauge\n"
            "test_temperature{room=\"a\"} 2.5\n"
            "test_temperature{room=\"b\"} -1\n"
            "test_temperature{room=\"c\"} 10.25\n");
}

TEST(Exposition, HistogramGolden) {
  Registry r;
  auto& h = r.histogram("test_seconds", "Latency.", {"api"}, {0.25, 0.5, 1});
  auto& child = h.with({"Encrypt"});
  child.observe(0.25);  // on a bound: that bucket (le is inclusive)
  child.observe(0.375);
  child.observe(1.0);  // on the last bound
  child.observe(2.0);  // above every bound: +Inf only
  EXPECT_EQ(r.render(),
            "# HELP test_seconds Latency.\n"
            "# TYPE test_seconds histogram\n"
            "test_seconds_bucket{api=\"Encrypt\",le=\"0.25\"} 1\n"
            "test_seconds_bucket{api=\"Encrypt\",le=\"0.5\"} 2\n"
            "test_seconds_bucket{api=\"Encrypt\",le=\"1\"} 3\n"
            "test_seconds_bucket{api=\"Encrypt\",le=\"+Inf\"} 4\n"
            "test_seconds_sum{api=\"Encrypt\"} 3.625\n"
            "test_seconds_count{api=\"Encrypt\"} 4\n");
}

TEST(Exposition, HistogramWithoutLabelsGolden) {
  Registry r;
  r.histogram("test_seconds", "Latency.", {}, {0.0005, 0.001}).with({}).observe(0.0005);
  EXPECT_EQ(r.render(),
            "# HELP test_seconds Latency.\n"
            "# TYPE test_seconds histogram\n"
            "test_seconds_bucket{le=\"0.0005\"} 1\n"
            "test_seconds_bucket{le=\"0.001\"} 1\n"
            "test_seconds_bucket{le=\"+Inf\"} 1\n"
            "test_seconds_sum 0.0005\n"
            "test_seconds_count 1\n");
}

TEST(Exposition, EscapedLabelValueGolden) {
  Registry r;
  r.counter("test_total", "T.", {"path"}).with({"/a\"b\\c\nd"}).inc(7);
  EXPECT_EQ(r.render(),
            "# HELP test_total T.\n"
            "# TYPE test_total counter\n"
            "test_total{path=\"/a\\\"b\\\\c\\nd\"} 7\n");
}

TEST(Exposition, CallbackGaugeGoldenAndRemoval) {
  Registry r;
  auto& g = r.callback_gauge("test_in_use", "In use.", {"pool"});
  int calls = 0;
  g.set({"p0"}, [&calls] { return static_cast<double>(++calls); });
  g.set({"p1"}, [] { return 4.0; });
  EXPECT_EQ(r.render(),
            "# HELP test_in_use In use.\n"
            "# TYPE test_in_use gauge\n"
            "test_in_use{pool=\"p0\"} 1\n"
            "test_in_use{pool=\"p1\"} 4\n");
  g.set({"p1"}, [] { return 5.0; });  // replace
  g.set({"p0"}, nullptr);             // remove
  EXPECT_EQ(r.render(),
            "# HELP test_in_use In use.\n"
            "# TYPE test_in_use gauge\n"
            "test_in_use{pool=\"p1\"} 5\n");
  EXPECT_EQ(calls, 1);
}

TEST(Exposition, FamiliesWithoutSamplesAreOmittedAndOrderIsRegistrationOrder) {
  Registry r;
  r.counter("b_total", "B.").with({}).inc();
  r.gauge("empty", "No children yet.", {"x"});
  r.gauge("a", "A.").with({}).set(1);
  EXPECT_EQ(r.render(),
            "# HELP b_total B.\n# TYPE b_total counter\nb_total 1\n"
            "# HELP a A.\n# TYPE a gauge\na 1\n");
}

TEST(Family, SameLabelsGiveTheSameChildAndRemoveDropsTheSeries) {
  Registry r;
  auto& f = r.counter("t_total", "T.", {"k"});
  auto& a = f.with({"x"});
  EXPECT_EQ(&a, &f.with({"x"}));
  a.inc(2);
  const std::vector<std::string> labels{"x"};
  f.remove(labels);
  EXPECT_EQ(r.render(), "");
  EXPECT_EQ(f.with({"x"}).value(), 0u);  // a new child starts from zero
}

TEST(Family, WrongNumberOfLabelValuesThrows) {
  Registry r;
  auto& f = r.counter("t_total", "T.", {"a", "b"});
  EXPECT_THROW(f.with({"only-one"}), std::invalid_argument);
  auto& g = r.callback_gauge("g", "G.");
  EXPECT_THROW(g.set({"unexpected"}, [] { return 1.0; }), std::invalid_argument);
}

TEST(Registry, RejectsDuplicateNamesAndBadBuckets) {
  Registry r;
  r.counter("t_total", "T.");
  EXPECT_THROW(r.gauge("t_total", "again"), std::invalid_argument);
  EXPECT_THROW(r.histogram("h1", "H.", {}, {0.5, 0.25}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h2", "H.", {}, {0.5, 0.5}), std::invalid_argument);
  EXPECT_THROW(r.histogram("h3", "H.", {}, {0.5, std::numeric_limits<double>::infinity()}),
               std::invalid_argument);
}

TEST(Histogram, EveryLatencyBoundLandsInItsOwnBucket) {
  Histogram h(kLatencyBuckets);
  for (const double bound : kLatencyBuckets) h.observe(bound);
  const auto s = h.snapshot();
  ASSERT_EQ(s.cumulative.size(), kLatencyBuckets.size() + 1);
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    EXPECT_EQ(s.cumulative[i], i + 1) << "le=" << kLatencyBuckets[i];
  }
  EXPECT_EQ(s.cumulative.back(), kLatencyBuckets.size());
  EXPECT_EQ(s.count, kLatencyBuckets.size());
}

TEST(Histogram, JustAboveABoundGoesToTheNextBucket) {
  for (std::size_t i = 0; i < kLatencyBuckets.size(); ++i) {
    Histogram h(kLatencyBuckets);
    h.observe(std::nextafter(kLatencyBuckets[i], 1.0));
    const auto s = h.snapshot();
    EXPECT_EQ(s.cumulative[i], 0u) << "le=" << kLatencyBuckets[i];
    EXPECT_EQ(s.cumulative[i + 1], 1u) << "le=" << kLatencyBuckets[i];
  }
}

TEST(Histogram, DurationsConvertToSecondsExactlyAtTheBudget) {
  Histogram h(kLatencyBuckets);
  h.observe(250ms);  // exactly the KMS budget: still inside le="0.25"
  h.observe(500us);  // exactly the first bound
  h.observe(251ms);  // over budget
  h.observe(-1ms);   // a clock step backwards: first bucket, never a crash
  h.observe(std::nan(""));
  const auto s = h.snapshot();
  EXPECT_EQ(s.cumulative[0], 2u);
  EXPECT_EQ(s.cumulative[kLatencyBuckets.size() - 1], 3u);
  EXPECT_EQ(s.cumulative.back(), 5u);
}

TEST(Concurrency, EightThreadsIncrementingSumExactly) {
  Registry r;
  auto& counter = r.counter("c_total", "C.", {"k"}).with({"x"});
  auto& gauge = r.gauge("g", "G.").with({});
  auto& hist = r.histogram("h_seconds", "H.", {}, {0.001, 0.01}).with({});
  constexpr int kThreads = 8;
  constexpr int kPerThread = 50000;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kPerThread; ++i) {
        counter.inc();
        gauge.add(1.0);
        hist.observe((i + t) % 2 == 0 ? 0.0005 : 0.5);  // half in each bucket
      }
    });
  }
  // A scrape racing the writers must not crash or tear; values are checked after.
  for (int i = 0; i < 20; ++i) (void)r.render();
  for (auto& th : threads) th.join();
  const auto total = static_cast<std::uint64_t>(kThreads) * kPerThread;
  EXPECT_EQ(counter.value(), total);
  EXPECT_EQ(gauge.value(), static_cast<double>(total));
  const auto s = hist.snapshot();
  EXPECT_EQ(s.count, total);
  EXPECT_EQ(s.cumulative[0], total / 2);
  EXPECT_EQ(s.cumulative[1], total / 2);
}

}  // namespace
}  // namespace xks::obs
