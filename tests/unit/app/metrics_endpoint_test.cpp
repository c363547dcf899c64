// The scrape endpoint over a real socket: a server on 127.0.0.1:0 with its own
// io_context thread, and a plain Beast client.
#include "xks/app/metrics_endpoint.hpp"
#include "xks/app/proxy_metrics.hpp"

#include <gtest/gtest.h>

#include <array>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "unit/obs/exposition_util.hpp"

namespace xks::app {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

class MetricsEndpointTest : public ::testing::Test {
 protected:
  void start(MetricsEndpoint::Options options = {}) {
    options.host = "127.0.0.1";
    options.port = 0;
    server_ = std::make_unique<MetricsEndpoint>(server_ioc_, metrics_.registry(), options);
    server_->start();
    ASSERT_NE(server_->local_port(), 0);
    runner_ = std::async(std::launch::async, [this] { server_ioc_.run(); });
  }

  // Stops the server and waits for its io_context to run dry: proof that
  // stop() leaves no accept or connection behind.
  void stop_and_drain() {
    if (!server_) return;
    server_->stop();
    ASSERT_EQ(runner_.wait_for(5s), std::future_status::ready) << "io_context did not drain";
    server_.reset();
  }

  void TearDown() override {
    if (server_) {
      server_->stop();
      if (runner_.wait_for(5s) != std::future_status::ready) server_ioc_.stop();
      runner_.wait();
    }
  }

  tcp::socket connect() {
    tcp::socket socket(client_ioc_);
    socket.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_->local_port()));
    return socket;
  }

  http::response<http::string_body> exchange(tcp::socket& socket, http::verb method,
                                             std::string target, bool keep_alive = false) {
    http::request<http::string_body> req(method, target, 11);
    req.set(http::field::host, "127.0.0.1");
    req.keep_alive(keep_alive);
    req.prepare_payload();
    http::write(socket, req);
    http::response<http::string_body> res;
    http::read(socket, buffer_, res);
    return res;
  }

  // The error that ends reading from `socket` (eof when the server closed it),
  // or would_block if it is still open after `limit`.
  boost::system::error_code wait_for_close(tcp::socket& socket, std::chrono::milliseconds limit) {
    boost::system::error_code result = asio::error::would_block;
    std::array<char, 512> data{};
    std::function<void(boost::system::error_code, std::size_t)> on_read =
        [&](boost::system::error_code ec, std::size_t) {
          if (ec) {
            result = ec;
            return;
          }
          socket.async_read_some(asio::buffer(data), on_read);
        };
    socket.async_read_some(asio::buffer(data), on_read);
    client_ioc_.restart();
    client_ioc_.run_for(limit);
    if (result == asio::error::would_block) {
      boost::system::error_code ignored;  // abandon the read; the test already failed
      socket.close(ignored);
      client_ioc_.restart();
      client_ioc_.run();
    }
    return result;
  }

  ProxyMetrics metrics_{
      ProxyMetrics::Options{.version = "9.9.9", .now = {}, .process_metrics = false}};
  asio::io_context server_ioc_;
  asio::io_context client_ioc_;
  std::unique_ptr<MetricsEndpoint> server_;
  std::future<void> runner_;
  beast::flat_buffer buffer_;
};

TEST_F(MetricsEndpointTest, ServesTheExpositionWithKnownValues) {
  const auto ks = metrics_.register_keystores({"/kms/xks/v1"})[0];
  for (int i = 0; i < 5; ++i) metrics_.connection_opened();
  metrics_.record_request(ks, xks::http::Api::Encrypt, std::nullopt, 2ms);
  metrics_.record_request(ks, xks::http::Api::Encrypt, ErrorName::ThrottlingException, 1ms);
  start();

  auto socket = connect();
  const auto res = exchange(socket, http::verb::get, "/metrics");
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_FALSE(res.keep_alive());
  const auto& body = res.body();
  EXPECT_EQ(obs::test::sample(body, "xks_proxy_connections_total"), "5");
  EXPECT_EQ(
      obs::test::sample(
          body, R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="Encrypt",outcome="ok"})"),
      "1");
  EXPECT_EQ(
      obs::test::sample(
          body,
          R"(xks_proxy_requests_total{keystore="/kms/xks/v1",api="Encrypt",outcome="ThrottlingException"})"),
      "1");
  EXPECT_EQ(obs::test::sample(body, R"(xks_proxy_build_info{version="9.9.9"})"), "1");
  obs::test::expect_well_formed(body);
  // Connection: close was asked for, so the server hangs up after the answer.
  EXPECT_EQ(wait_for_close(socket, 5000ms), asio::error::eof);
  stop_and_drain();
}

TEST_F(MetricsEndpointTest, QueryStringIsIgnored) {
  start();
  auto socket = connect();
  EXPECT_EQ(exchange(socket, http::verb::get, "/metrics?name[]=x").result(), http::status::ok);
}

TEST_F(MetricsEndpointTest, OtherPathsAre404AndOtherMethods405) {
  start();
  {
    auto socket = connect();
    const auto res = exchange(socket, http::verb::get, "/");
    EXPECT_EQ(res.result(), http::status::not_found);
  }
  {
    auto socket = connect();
    EXPECT_EQ(exchange(socket, http::verb::get, "/metricsx").result(), http::status::not_found);
  }
  {
    auto socket = connect();
    EXPECT_EQ(exchange(socket, http::verb::get, "/kms/xks/v1/health").result(),
              http::status::not_found);
  }
  {
    auto socket = connect();
    const auto res = exchange(socket, http::verb::post, "/metrics");
    EXPECT_EQ(res.result(), http::status::method_not_allowed);
    EXPECT_EQ(res[http::field::allow], "GET");
  }
  stop_and_drain();
}

TEST_F(MetricsEndpointTest, HeadGetsTheHeaderOfGetAndNoBody) {
  start();
  auto socket = connect();
  http::request<http::string_body> req(http::verb::head, "/metrics", 11);
  req.set(http::field::host, "127.0.0.1");
  http::write(socket, req);
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // a response to HEAD has no body whatever its Content-Length says
  http::read_header(socket, buffer_, parser);
  const auto& res = parser.get();
  EXPECT_EQ(res.result(), http::status::ok);
  EXPECT_EQ(res[http::field::content_type], "text/plain; version=0.0.4; charset=utf-8");
  EXPECT_NE(res[http::field::content_length], "0");
  EXPECT_EQ(buffer_.size(), 0u) << "bytes after the header of a HEAD response";
  // The connection is still usable: no body bytes were sent to confuse the next answer.
  EXPECT_EQ(exchange(socket, http::verb::get, "/metrics").result(), http::status::ok);
}

TEST_F(MetricsEndpointTest, ARequestWithABodyIsRefusedAndTheConnectionClosed) {
  start();
  auto socket = connect();
  http::request<http::string_body> req(http::verb::get, "/metrics", 11);
  req.set(http::field::host, "127.0.0.1");
  req.body() = "x";
  req.prepare_payload();
  http::write(socket, req);
  http::response<http::string_body> res;
  http::read(socket, buffer_, res);
  EXPECT_EQ(res.result(), http::status::bad_request);
  EXPECT_FALSE(res.keep_alive());
  EXPECT_EQ(wait_for_close(socket, 5000ms), asio::error::eof);
  // Nothing a scraper does is counted as the XKS listener's traffic.
  EXPECT_EQ(obs::test::sample(metrics_.render(), "xks_proxy_connections_total"), "0");
  EXPECT_EQ(obs::test::sample(metrics_.render(),
                              R"(xks_proxy_connections_dropped_total{cause="client_slow"})"),
            "0");
}

TEST_F(MetricsEndpointTest, KeepAliveServesSeveralScrapesOnOneConnection) {
  start();
  auto socket = connect();
  auto first = exchange(socket, http::verb::get, "/metrics", true);
  EXPECT_TRUE(first.keep_alive());
  EXPECT_EQ(obs::test::sample(first.body(), "xks_proxy_connections_total"), "0");
  metrics_.connection_opened();
  auto second = exchange(socket, http::verb::get, "/metrics", true);
  EXPECT_EQ(obs::test::sample(second.body(), "xks_proxy_connections_total"), "1");
  EXPECT_EQ(exchange(socket, http::verb::get, "/nope", true).result(), http::status::not_found);
  stop_and_drain();
}

TEST_F(MetricsEndpointTest, SilentClientIsDisconnectedAfterTheRequestTimeout) {
  MetricsEndpoint::Options options;
  options.request_timeout = 200ms;
  start(options);
  auto socket = connect();
  const auto began = std::chrono::steady_clock::now();
  const auto ec = wait_for_close(socket, 5000ms);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_LT(std::chrono::steady_clock::now() - began, 3s);
}

TEST_F(MetricsEndpointTest, TricklingClientIsCutOffToo) {
  MetricsEndpoint::Options options;
  options.request_timeout = 300ms;
  start(options);
  auto socket = connect();
  asio::write(socket, asio::buffer(std::string_view("GET /metrics HTTP/1.1\r\n")));
  const auto ec = wait_for_close(socket, 5000ms);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
}

TEST_F(MetricsEndpointTest, IdleKeepAliveConnectionEndsAfterTheIdleTimeout) {
  MetricsEndpoint::Options options;
  options.idle_timeout = 200ms;
  start(options);
  auto socket = connect();
  EXPECT_EQ(exchange(socket, http::verb::get, "/metrics", true).result(), http::status::ok);
  const auto ec = wait_for_close(socket, 5000ms);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
}

TEST_F(MetricsEndpointTest, StopClosesOpenConnectionsAndTheIoContextRunsDry) {
  start();  // default timeouts: only stop() can end this connection quickly
  auto socket = connect();
  EXPECT_EQ(exchange(socket, http::verb::get, "/metrics", true).result(), http::status::ok);
  auto idle = connect();  // accepted, never sends anything
  std::this_thread::sleep_for(50ms);
  stop_and_drain();
  const auto ec = wait_for_close(socket, 2000ms);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  const auto idle_ec = wait_for_close(idle, 2000ms);
  EXPECT_NE(idle_ec, asio::error::would_block) << "idle connection left open";
}

TEST_F(MetricsEndpointTest, AtTheLimitTheIdlestConnectionMakesRoom) {
  MetricsEndpoint::Options options;
  options.max_connections = 2;
  start(options);
  auto first = connect();
  EXPECT_EQ(exchange(first, http::verb::get, "/metrics", true).result(), http::status::ok);
  std::this_thread::sleep_for(20ms);
  auto second = connect();
  EXPECT_EQ(exchange(second, http::verb::get, "/metrics", true).result(), http::status::ok);
  auto third = connect();
  EXPECT_EQ(exchange(third, http::verb::get, "/metrics", true).result(), http::status::ok);
  // The first one, idle the longest, was closed for the third; the second is unaffected.
  const auto ec = wait_for_close(first, 5000ms);
  EXPECT_TRUE(ec == asio::error::eof || ec == asio::error::connection_reset) << ec.message();
  EXPECT_EQ(exchange(second, http::verb::get, "/metrics", true).result(), http::status::ok);
}

// Idle keep-alive and silent connections, more than the listener allows, with
// timeouts far longer than the test: a fresh scrape still gets in at once.
TEST_F(MetricsEndpointTest, IdleConnectionsCannotLockTheScraperOut) {
  MetricsEndpoint::Options options;
  options.request_timeout = 60s;
  options.idle_timeout = 60s;
  start(options);
  std::vector<tcp::socket> held;
  for (int i = 0; i < 10; ++i) {
    held.push_back(connect());
    EXPECT_EQ(exchange(held.back(), http::verb::get, "/metrics", true).result(), http::status::ok);
  }
  for (int i = 0; i < 10; ++i) held.push_back(connect());  // never send anything
  std::this_thread::sleep_for(100ms);
  for (int round = 0; round < 3; ++round) {
    const auto began = std::chrono::steady_clock::now();
    auto fresh = connect();
    EXPECT_EQ(exchange(fresh, http::verb::get, "/metrics").result(), http::status::ok) << round;
    EXPECT_LT(std::chrono::steady_clock::now() - began, 1s) << round;
  }
}

TEST_F(MetricsEndpointTest, PortInUseIsAStartupErrorNamingTheAddress) {
  start();
  asio::io_context other_ioc;
  MetricsEndpoint other(
      other_ioc, metrics_.registry(),
      MetricsEndpoint::Options{.host = "127.0.0.1", .port = server_->local_port()});
  try {
    other.start();
    FAIL() << "second bind succeeded";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1:" + std::to_string(server_->local_port())),
              std::string::npos)
        << e.what();
  }
  MetricsEndpoint bad(other_ioc, metrics_.registry(),
                      MetricsEndpoint::Options{.host = "localhost"});
  EXPECT_THROW(bad.start(), std::runtime_error);  // we bind addresses, we do not resolve
}

TEST(ParseListenAddress, AcceptsIpAndPortForms) {
  using P = std::pair<std::string, std::uint16_t>;
  EXPECT_EQ(parse_listen_address("127.0.0.1:9464"), P("127.0.0.1", 9464));
  EXPECT_EQ(parse_listen_address("0.0.0.0:0"), P("0.0.0.0", 0));
  EXPECT_EQ(parse_listen_address("[::1]:9464"), P("::1", 9464));
  EXPECT_EQ(parse_listen_address("[::]:65535"), P("::", 65535));
}

TEST(ParseListenAddress, RejectsMalformedInput) {
  for (const char* bad :
       {"", "127.0.0.1", "127.0.0.1:", ":9464", "127.0.0.1:65536", "127.0.0.1:94x4", "127.0.0.1:-1",
        "::1:9464", "[::1]9464", "[127.0.0.1]:9464", "localhost:9464", "[::1]:+1"}) {
    EXPECT_EQ(parse_listen_address(bad), std::nullopt) << bad;
  }
}

}  // namespace
}  // namespace xks::app
