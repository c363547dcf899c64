#include "xks/obs/metrics_server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <algorithm>
#include <charconv>
#include <list>
#include <mutex>
#include <stdexcept>
#include <vector>

#include "xks/obs/log.hpp"

namespace xks::obs {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using asio::ip::tcp;

namespace {

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);
constexpr std::uint32_t kMaxHeaderBytes = 8 * 1024;  // a scrape request is a few hundred
constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

std::string endpoint_text(const tcp::endpoint& ep) {
  const auto addr = ep.address();
  return (addr.is_v6() ? "[" + addr.to_string() + "]" : addr.to_string()) + ":" +
         std::to_string(ep.port());
}

}  // namespace

struct MetricsServer::State {
  State(asio::io_context& io, const Metrics& m, Options o)
      : ioc(io), metrics(m), options(std::move(o)), acceptor(asio::make_strand(io)) {}

  asio::io_context& ioc;
  const Metrics& metrics;
  const Options options;
  tcp::acceptor acceptor;  // only touched on its strand after start()

  // A connection as stop() and a full listener see it. weak_ptr: a
  // connection that already ended is skipped.
  struct Entry {
    std::weak_ptr<beast::tcp_stream> stream;
    std::atomic<bool> busy{false};           // answering a request
    std::atomic<std::int64_t> idle_since{0}; // steady-clock ticks: accept or last answer
    bool evicting = false;                   // guarded by mutex
  };

  // Open connections, so stop() can close them instead of waiting for their
  // idle timeout, and a full listener can close the idlest.
  std::mutex mutex;
  bool stopped = false;
  std::list<std::shared_ptr<Entry>> connections;
};

namespace {

using Connections = std::list<std::shared_ptr<MetricsServer::State::Entry>>;

std::int64_t ticks_now() { return std::chrono::steady_clock::now().time_since_epoch().count(); }

// At the limit, the connection idle the longest (waiting for a request, never
// one being answered) is closed so that a fresh scrape gets in; idle
// keep-alive or silent connections cannot lock the scraper out. Called with
// the mutex held. False if every connection is busy.
bool evict_idlest(MetricsServer::State& state) {
  std::shared_ptr<MetricsServer::State::Entry> victim;
  for (const auto& entry : state.connections) {
    if (entry->evicting || entry->busy.load()) continue;
    if (!victim || entry->idle_since.load() < victim->idle_since.load()) victim = entry;
  }
  if (!victim) return false;
  auto stream = victim->stream.lock();
  if (!stream) return false;
  victim->evicting = true;
  auto executor = stream->get_executor();
  // Closing on the connection's strand aborts its pending read.
  asio::post(executor, [victim, stream = std::move(stream)] {
    if (!victim->busy.load()) stream->close();
  });
  return true;
}

http::response<http::string_body> respond(const Metrics& metrics,
                                          const http::request<http::empty_body>& req) {
  auto target = std::string_view(req.target());
  target = target.substr(0, target.find('?'));  // scrapers may add parameters
  http::response<http::string_body> res;
  res.version(req.version());
  if (target != "/metrics") {
    res.result(http::status::not_found);
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "not found\n";
  } else if (req.method() != http::verb::get) {
    res.result(http::status::method_not_allowed);
    res.set(http::field::allow, "GET");
    res.set(http::field::content_type, "text/plain; charset=utf-8");
    res.body() = "method not allowed\n";
  } else {
    res.result(http::status::ok);
    res.set(http::field::content_type, kContentType);
    res.body() = metrics.render();
  }
  res.keep_alive(req.keep_alive());
  res.prepare_payload();
  return res;
}

asio::awaitable<void> serve(std::shared_ptr<MetricsServer::State> state,
                            std::shared_ptr<beast::tcp_stream> stream,
                            Connections::iterator registration);

asio::awaitable<void> accept_loop(std::shared_ptr<MetricsServer::State> state) {
  for (;;) {
    // One strand per connection: its reads, writes and timer never race, and
    // stop() posts the close onto it.
    auto [ec, socket] = co_await state->acceptor.async_accept(asio::make_strand(state->ioc), kTuple);
    if (ec == asio::error::operation_aborted || !state->acceptor.is_open()) co_return;
    if (ec) {
      // EMFILE and friends: a scraper retries; keep the listener alive.
      warn("metrics_accept_failed", {{"error", ec.message()}});
      continue;
    }
    auto stream = std::make_shared<beast::tcp_stream>(std::move(socket));
    Connections::iterator registration;
    {
      std::lock_guard lock(state->mutex);
      const std::size_t evicting = static_cast<std::size_t>(
          std::count_if(state->connections.begin(), state->connections.end(),
                        [](const auto& e) { return e->evicting; }));
      if (state->stopped ||
          (state->connections.size() - evicting >= state->options.max_connections &&
           !evict_idlest(*state))) {
        boost::system::error_code ignored;  // the refused scraper sees a reset
        stream->socket().close(ignored);
        continue;
      }
      auto entry = std::make_shared<MetricsServer::State::Entry>();
      entry->stream = stream;
      entry->idle_since.store(ticks_now());
      registration = state->connections.insert(state->connections.end(), std::move(entry));
    }
    auto executor = stream->get_executor();
    asio::co_spawn(executor, serve(state, std::move(stream), registration),
                   [](std::exception_ptr e) {
                     if (!e) return;
                     try {
                       std::rethrow_exception(e);
                     } catch (const std::exception& ex) {
                       warn("metrics_connection_failed", {{"error", ex.what()}});
                     }
                   });
  }
}

asio::awaitable<void> serve(std::shared_ptr<MetricsServer::State> state,
                            std::shared_ptr<beast::tcp_stream> stream,
                            Connections::iterator registration) {
  struct Unregister {
    MetricsServer::State& state;
    Connections::iterator it;
    ~Unregister() {
      std::lock_guard lock(state.mutex);
      state.connections.erase(it);
    }
  } unregister{*state, registration};
  auto& entry = **registration;

  beast::flat_buffer buffer;
  bool first = true;
  for (;;) {
    http::request_parser<http::empty_body> parser;
    parser.header_limit(kMaxHeaderBytes);
    // The deadline covers the whole request read, so a client trickling bytes
    // is cut off as surely as a silent one.
    stream->expires_after(first ? state->options.request_timeout : state->options.idle_timeout);
    auto [ec, read] = co_await http::async_read(*stream, buffer, parser, kTuple);
    // Timeout, close, stop() or a malformed request: all end the connection,
    // and none deserves a log line on a scrape port.
    if (ec) break;
    entry.busy.store(true);
    const auto res = respond(state->metrics, parser.get());
    stream->expires_after(state->options.write_timeout);
    auto [wec, written] = co_await http::async_write(*stream, res, kTuple);
    entry.idle_since.store(ticks_now());
    entry.busy.store(false);
    if (wec || !res.keep_alive()) break;
    first = false;
  }
  boost::system::error_code ignored;  // the peer may already be gone
  stream->socket().shutdown(tcp::socket::shutdown_send, ignored);
}

}  // namespace

MetricsServer::MetricsServer(asio::io_context& ioc, const Metrics& metrics, Options options)
    : state_(std::make_shared<State>(ioc, metrics, std::move(options))) {}

MetricsServer::~MetricsServer() { stop(); }

void MetricsServer::start() {
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(state_->options.host, ec);
  if (ec) {
    throw std::runtime_error("metrics.listen: '" + state_->options.host +
                             "' is not an IP address");
  }
  const tcp::endpoint endpoint(address, state_->options.port);
  auto& acceptor = state_->acceptor;
  acceptor.open(endpoint.protocol(), ec);
  if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor.bind(endpoint, ec);
  if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    boost::system::error_code ignored;  // nothing to keep after a failed bind
    acceptor.close(ignored);
    throw std::runtime_error("metrics.listen: cannot listen on " + endpoint_text(endpoint) + ": " +
                             ec.message());
  }
  port_.store(acceptor.local_endpoint(ec).port());
  asio::co_spawn(acceptor.get_executor(), accept_loop(state_), asio::detached);
}

void MetricsServer::stop() {
  std::vector<std::shared_ptr<beast::tcp_stream>> open;
  {
    std::lock_guard lock(state_->mutex);
    if (state_->stopped) return;
    state_->stopped = true;
    for (const auto& entry : state_->connections) {
      if (auto stream = entry->stream.lock()) open.push_back(std::move(stream));
    }
  }
  asio::post(state_->acceptor.get_executor(), [state = state_] {
    boost::system::error_code ignored;  // closing a never-opened acceptor is fine
    state->acceptor.close(ignored);
  });
  for (auto& stream : open) {
    auto executor = stream->get_executor();
    // Closing on the connection's strand aborts its pending read or write.
    asio::post(executor, [stream = std::move(stream)] { stream->close(); });
  }
}

std::optional<std::pair<std::string, std::uint16_t>> parse_listen_address(std::string_view text) {
  std::string_view host;
  std::string_view port;
  if (text.starts_with('[')) {
    const auto close = text.find("]:");
    if (close == std::string_view::npos) return std::nullopt;
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    const auto colon = text.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos) return std::nullopt;  // bare IPv6: needs [ ]
  }
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(std::string(host), ec);
  if (ec || (text.starts_with('[') != address.is_v6())) return std::nullopt;
  unsigned value = 0;
  const auto [end, err] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || err != std::errc{} || end != port.data() + port.size() || value > 65535) {
    return std::nullopt;
  }
  return std::pair{std::string(host), static_cast<std::uint16_t>(value)};
}

}  // namespace xks::obs
