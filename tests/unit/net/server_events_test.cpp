// What net::Server reports through ServerEvents, seen by a fake: a real server
// on 127.0.0.1:0 (plain HTTP, or TLS with a context that has no certificate for
// the handshake failures) with its own io_context thread, blocking clients.
#include "xks/net/server_events.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "xks/net/server.hpp"

namespace xks::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;
using namespace std::chrono_literals;

class FakeEvents final : public ServerEvents {
 public:
  void on_connection_opened() noexcept override { ++opened; }
  void on_connection_closed() noexcept override { ++closed; }
  void on_tls_handshake(TlsHandshakeResult result) noexcept override {
    std::lock_guard lock(mutex);
    ++handshakes[result];
  }
  void on_connection_dropped(DropCause cause) noexcept override {
    std::lock_guard lock(mutex);
    ++drops[cause];
  }

  int dropped(DropCause cause) {
    std::lock_guard lock(mutex);
    return drops.contains(cause) ? drops[cause] : 0;
  }
  int handshake(TlsHandshakeResult result) {
    std::lock_guard lock(mutex);
    return handshakes.contains(result) ? handshakes[result] : 0;
  }
  int total_drops() {
    std::lock_guard lock(mutex);
    int n = 0;
    for (const auto& [cause, count] : drops) n += count;
    return n;
  }

  std::atomic<int> opened{0};
  std::atomic<int> closed{0};
  std::mutex mutex;
  std::map<TlsHandshakeResult, int> handshakes;
  std::map<DropCause, int> drops;
};

// Answers 200 "ok"; a request to /verified counts as SigV4-verified.
class OkHandler final : public RequestHandler {
 public:
  asio::awaitable<Response> handle(Request& request, RequestContext& ctx) override {
    ctx.authenticated = request.target() == "/verified";
    Response res{http::status::ok, request.version()};
    res.body() = "ok";
    co_return res;
  }
  Response error_response(const Error&, unsigned http_version) override {
    return Response{http::status::bad_request, http_version};
  }
};

// Waits until `done` holds, up to 5 s.
bool eventually(const std::function<bool()>& done) {
  const auto until = std::chrono::steady_clock::now() + 5s;
  while (!done()) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

class ServerEventsTest : public ::testing::Test {
 protected:
  void start(Limits limits, std::shared_ptr<asio::ssl::context> tls = nullptr) {
    settings_ =
        std::make_shared<const ConnectionSettings>(ConnectionSettings{limits, std::move(tls)});
    server_ = std::make_unique<Server>(
        ioc_, [this] { return settings_; }, handler_, &events_);
    server_->listen("127.0.0.1", 0);
    server_->start();
    runner_ = std::async(std::launch::async, [this] { ioc_.run(); });
  }

  void TearDown() override {
    if (!server_) return;
    server_->stop_accepting();
    server_->close_connections();
    if (runner_.wait_for(5s) != std::future_status::ready) ioc_.stop();
    runner_.wait();
  }

  tcp::socket connect() {
    tcp::socket socket(client_ioc_);
    socket.connect(server_->local_endpoint());
    return socket;
  }

  http::status get(tcp::socket& socket, const std::string& target) {
    http::request<http::string_body> req(http::verb::get, target, 11);
    req.set(http::field::host, "127.0.0.1");
    http::write(socket, req);
    http::response<http::string_body> res;
    beast::flat_buffer buffer;
    http::read(socket, buffer, res);
    return res.result();
  }

  // True once the server has closed `socket` (a read ends in eof or a reset).
  static bool closed_by_server(tcp::socket& socket) {
    std::array<char, 64> data{};
    boost::system::error_code ec;
    socket.read_some(asio::buffer(data), ec);
    return ec == asio::error::eof || ec == asio::error::connection_reset;
  }

  asio::io_context ioc_;
  asio::io_context client_ioc_;
  OkHandler handler_;
  FakeEvents events_;
  std::shared_ptr<const ConnectionSettings> settings_;
  std::unique_ptr<Server> server_;
  std::future<void> runner_;
};

TEST_F(ServerEventsTest, AServedConnectionIsOpenedThenClosedAndNothingElse) {
  start(Limits{});
  {
    auto socket = connect();
    EXPECT_EQ(get(socket, "/"), http::status::ok);
    EXPECT_TRUE(eventually([&] { return events_.opened == 1; }));
    EXPECT_EQ(events_.closed, 0) << "closed while the keep-alive connection is open";
  }
  EXPECT_TRUE(eventually([&] { return events_.closed == 1; }));
  EXPECT_EQ(events_.opened, 1);
  EXPECT_EQ(events_.total_drops(), 0);
  EXPECT_EQ(events_.handshake(TlsHandshakeResult::Ok), 0) << "plain HTTP has no handshake";
}

TEST_F(ServerEventsTest, AtMaxConnectionsAnIdleUnverifiedConnectionIsEvicted) {
  Limits limits;
  limits.max_connections = 1;
  start(limits);
  auto first = connect();
  EXPECT_EQ(get(first, "/"), http::status::ok);
  auto second = connect();
  EXPECT_EQ(get(second, "/"), http::status::ok);
  EXPECT_TRUE(closed_by_server(first));
  EXPECT_TRUE(eventually([&] { return events_.dropped(DropCause::Evicted) == 1; }));
  EXPECT_EQ(events_.opened, 2);
  EXPECT_EQ(events_.total_drops(), 1);
}

TEST_F(ServerEventsTest, AtMaxConnectionsWithOnlyVerifiedOnesTheNewOneIsRefused) {
  Limits limits;
  limits.max_connections = 1;
  start(limits);
  auto verified = connect();
  EXPECT_EQ(get(verified, "/verified"), http::status::ok);
  auto refused = connect();
  EXPECT_TRUE(closed_by_server(refused));
  EXPECT_TRUE(eventually([&] { return events_.dropped(DropCause::RefusedMaxConnections) == 1; }));
  // A refused connection was never opened.
  EXPECT_EQ(events_.opened, 1);
  EXPECT_EQ(get(verified, "/verified"), http::status::ok);
}

TEST_F(ServerEventsTest, TooManyUnverifiedConnectionsFromOneSourceAreRefused) {
  Limits limits;
  limits.max_unauthenticated_per_source = 1;
  start(limits);
  auto first = connect();
  EXPECT_TRUE(eventually([&] { return events_.opened == 1; }));
  auto second = connect();
  EXPECT_TRUE(closed_by_server(second));
  EXPECT_TRUE(eventually([&] { return events_.dropped(DropCause::RefusedPerSource) == 1; }));
  EXPECT_EQ(events_.opened, 1);
}

TEST_F(ServerEventsTest, TlsHandshakeFailureAndTimeoutAreReportedWithTheirDrops) {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_server);
  Limits limits;
  limits.handshake_timeout = 200ms;
  start(limits, ctx);
  {
    auto garbage = connect();  // not a ClientHello
    asio::write(garbage, asio::buffer(std::string_view("GET / HTTP/1.1\r\nHost: x\r\n\r\n")));
    EXPECT_TRUE(closed_by_server(garbage));
  }
  EXPECT_TRUE(eventually([&] { return events_.dropped(DropCause::HandshakeFailed) == 1; }));
  EXPECT_EQ(events_.handshake(TlsHandshakeResult::Protocol), 1);
  {
    auto silent = connect();
    EXPECT_TRUE(closed_by_server(silent));
  }
  EXPECT_TRUE(eventually([&] { return events_.dropped(DropCause::HandshakeTimeout) == 1; }));
  EXPECT_EQ(events_.handshake(TlsHandshakeResult::Timeout), 1);
  EXPECT_EQ(events_.handshake(TlsHandshakeResult::Ok), 0);
  EXPECT_TRUE(eventually([&] { return events_.closed == 2; }));
  EXPECT_EQ(events_.opened, 2);
}

TEST_F(ServerEventsTest, CloseConnectionsEndsEveryConnectionAndTheIoContextRunsDry) {
  start(Limits{});
  auto served = connect();
  EXPECT_EQ(get(served, "/verified"), http::status::ok);
  auto silent = connect();
  auto partial = connect();  // half a request head: not idle, a drain would wait for it
  asio::write(partial, asio::buffer(std::string_view("GET / HTTP/1.1\r\n")));
  EXPECT_TRUE(eventually([&] { return events_.opened == 3; }));
  server_->stop_accepting();
  server_->close_connections();
  EXPECT_TRUE(closed_by_server(served));
  EXPECT_TRUE(closed_by_server(silent));
  EXPECT_TRUE(closed_by_server(partial));
  EXPECT_EQ(runner_.wait_for(5s), std::future_status::ready) << "io_context did not run dry";
  EXPECT_EQ(events_.closed, 3);
  server_.reset();
}

TEST(DropCauseNames, AreTheMetricLabels) {
  EXPECT_EQ(to_string(DropCause::HandshakeTimeout), "handshake_timeout");
  EXPECT_EQ(to_string(DropCause::HandshakeFailed), "handshake_failed");
  EXPECT_EQ(to_string(DropCause::RefusedMaxConnections), "refused_max_connections");
  EXPECT_EQ(to_string(DropCause::RefusedPerSource), "refused_per_source");
  EXPECT_EQ(to_string(DropCause::Evicted), "evicted");
  EXPECT_EQ(to_string(DropCause::ClientSlow), "client_slow");
  EXPECT_EQ(to_string(TlsHandshakeResult::Ok), "ok");
  EXPECT_EQ(to_string(TlsHandshakeResult::Certificate), "certificate");
}

}  // namespace
}  // namespace xks::net
