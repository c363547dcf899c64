// TlsStream against a real OpenSSL client (asio::ssl::stream, blocking, in its
// own thread) over loopback, with a throwaway EC PKI generated here and the
// daemon's own server context (make_server_tls_context): handshakes in TLS 1.2
// and 1.3, small and large echoes with tiny socket buffers (WANT_WRITE retries),
// multi-buffer writes gathered into one record, Beast HTTP on top, close_notify
// and truncation, read/handshake/write timeouts and replaced deadlines, mTLS
// accepted and refused (the reasons the server logs), garbage instead of a
// ClientHello, and a vanished peer costing EPIPE rather than SIGPIPE.
#include "xks/net/tls_stream.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/stream_traits.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/net/tls_context.hpp"

namespace xks::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;
using asio::ip::tcp;
using boost::system::error_code;
using ::testing::HasSubstr;
using ::testing::Not;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

static_assert(beast::is_async_stream<TlsStream>::value);
static_assert(
    std::is_same_v<decltype(beast::get_lowest_layer(std::declval<TlsStream&>())), TlsStream&>);

constexpr auto kTuple = asio::as_tuple(asio::use_awaitable);

// --- a throwaway PKI ----------------------------------------------------------------

using KeyPtr = std::unique_ptr<EVP_PKEY, decltype(&EVP_PKEY_free)>;
using CertPtr = std::unique_ptr<X509, decltype(&X509_free)>;

KeyPtr new_key() { return {EVP_EC_gen("P-256"), EVP_PKEY_free}; }

void add_ext(X509* cert, X509* issuer, int nid, const char* value) {
  X509V3_CTX v3;
  X509V3_set_ctx_nodb(&v3);
  X509V3_set_ctx(&v3, issuer, cert, nullptr, nullptr, 0);
  X509_EXTENSION* ext = X509V3_EXT_conf_nid(nullptr, &v3, nid, value);
  ASSERT_NE(ext, nullptr);
  X509_add_ext(cert, ext, -1);
  X509_EXTENSION_free(ext);
}

// A certificate for `key` named CN=`cn`, signed by issuer (self-signed when null).
CertPtr new_cert(EVP_PKEY* key, const char* cn, X509* issuer, EVP_PKEY* issuer_key, bool ca) {
  static long serial = 1;
  CertPtr cert(X509_new(), X509_free);
  X509_set_version(cert.get(), 2);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), serial++);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key);
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(cn),
                             -1, -1, 0);
  X509* signer = issuer ? issuer : cert.get();
  X509_set_issuer_name(cert.get(), X509_get_subject_name(signer));
  if (ca) {
    add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(cert.get(), signer, NID_key_usage, "critical,keyCertSign,cRLSign");
  } else {
    add_ext(cert.get(), signer, NID_basic_constraints, "critical,CA:FALSE");
    add_ext(cert.get(), signer, NID_subject_alt_name, "DNS:localhost");
  }
  X509_sign(cert.get(), issuer_key ? issuer_key : key, EVP_sha256());
  return cert;
}

void write_pem(const fs::path& path, X509* cert, EVP_PKEY* key) {
  std::unique_ptr<FILE, decltype(&std::fclose)> f(std::fopen(path.c_str(), "w"), std::fclose);
  ASSERT_TRUE(f);
  if (cert) PEM_write_X509(f.get(), cert);
  if (key) PEM_write_PrivateKey(f.get(), key, nullptr, nullptr, 0, nullptr, nullptr);
}

struct Pki {
  fs::path dir;
  fs::path ca, server_cert, server_key, client_cert, client_key, rogue_cert, rogue_key;
};

Pki make_pki() {
  Pki p;
  std::string tmpl = (fs::temp_directory_path() / "xks-tls-stream-test-XXXXXX").string();
  if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp");
  p.dir = tmpl;
  p.ca = p.dir / "ca.pem";
  p.server_cert = p.dir / "server.pem";
  p.server_key = p.dir / "server.key";
  p.client_cert = p.dir / "client.pem";
  p.client_key = p.dir / "client.key";
  p.rogue_cert = p.dir / "rogue.pem";
  p.rogue_key = p.dir / "rogue.key";
  auto ca_key = new_key();
  auto ca = new_cert(ca_key.get(), "xks test CA", nullptr, nullptr, true);
  auto server_key = new_key();
  auto server = new_cert(server_key.get(), "localhost", ca.get(), ca_key.get(), false);
  auto client_key = new_key();
  auto client = new_cert(client_key.get(), "client.example", ca.get(), ca_key.get(), false);
  auto rogue_key = new_key();  // self-signed: not from the CA the server trusts
  auto rogue = new_cert(rogue_key.get(), "rogue.example", nullptr, nullptr, false);
  write_pem(p.ca, ca.get(), nullptr);
  write_pem(p.server_cert, server.get(), nullptr);
  write_pem(p.server_key, nullptr, server_key.get());
  write_pem(p.client_cert, client.get(), nullptr);
  write_pem(p.client_key, nullptr, client_key.get());
  write_pem(p.rogue_cert, rogue.get(), nullptr);
  write_pem(p.rogue_key, nullptr, rogue_key.get());
  return p;
}

// --- the client side: blocking OpenSSL through asio::ssl::stream -----------------------

struct ClientOptions {
  int min_version = TLS1_2_VERSION;
  int max_version = TLS1_3_VERSION;
  fs::path cert, key;  // empty: no client certificate
  int rcvbuf = 0;      // SO_RCVBUF when non-zero
};

using ClientStream = asio::ssl::stream<tcp::socket>;

std::unique_ptr<asio::ssl::context> client_context(const Pki& pki, const ClientOptions& o) {
  auto ctx = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_client);
  SSL_CTX_set_min_proto_version(ctx->native_handle(), o.min_version);
  SSL_CTX_set_max_proto_version(ctx->native_handle(), o.max_version);
  ctx->load_verify_file(pki.ca.string());
  ctx->set_verify_mode(asio::ssl::verify_peer);
  if (!o.cert.empty()) {
    ctx->use_certificate_file(o.cert.string(), asio::ssl::context::pem);
    ctx->use_private_key_file(o.key.string(), asio::ssl::context::pem);
  }
  return ctx;
}

// --- fixture ---------------------------------------------------------------------------

using ServerBody = std::function<asio::awaitable<void>(TlsStream&)>;
using SocketTweak = std::function<void(tcp::socket&)>;

asio::awaitable<void> serve_one(tcp::acceptor& acceptor, asio::ssl::context& ctx,
                                const SocketTweak& tweak, const ServerBody& body) {
  tcp::socket socket = co_await acceptor.async_accept(asio::use_awaitable);
  if (tweak) tweak(socket);
  TlsStream stream(std::move(socket), ctx);
  co_await body(stream);
}

class TlsStreamTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(make_pki()); }
  static void TearDownTestSuite() {
    std::error_code ignored;
    fs::remove_all(pki_->dir, ignored);
    delete pki_;
    pki_ = nullptr;
  }

  std::shared_ptr<asio::ssl::context> server_context(
      bool mtls = false, bool tickets = true, std::vector<std::string> names = {"client.example"},
      config::TlsConfig::NameMatch match = config::TlsConfig::NameMatch::Cn) const {
    config::TlsConfig c;
    c.certificate = pki_->server_cert;
    c.private_key = pki_->server_key;
    if (mtls) {
      c.client_ca = pki_->ca;
      c.client_names = std::move(names);
      c.client_names_match = match;
    }
    c.session_tickets = tickets;
    return make_server_tls_context(c, pki_->dir / "xks-proxy.yaml");
  }

  // A server body: handshake, one read whose error goes to `read`, then a
  // shutdown whose error goes to `shutdown`.
  static ServerBody read_once_then_shutdown(error_code& read, error_code& shutdown) {
    return [&read, &shutdown](TlsStream& s) -> asio::awaitable<void> {
      s.expires_after(5s);
      auto [hec] = co_await s.async_handshake(kTuple);
      if (hec) co_return;
      char buf[16];
      auto into = asio::buffer(buf);
      std::size_t n = 0;
      std::tie(read, n) = co_await s.async_read_some(into, kTuple);
      std::tie(shutdown) = co_await s.async_shutdown(kTuple);
    };
  }

  // Runs `server` on the first accepted connection (this thread's io_context)
  // while `client(port)` runs in its own thread; 30 s at most.
  void run(asio::ssl::context& ctx, const ServerBody& server,
           const std::function<void(std::uint16_t)>& client, const SocketTweak& tweak = {}) {
    const auto port = acceptor_.local_endpoint().port();
    ioc_.restart();  // a test may run several connections
    std::thread client_thread([&] { client(port); });
    bool finished = false;
    std::exception_ptr failure;
    asio::co_spawn(ioc_, serve_one(acceptor_, ctx, tweak, server), [&](std::exception_ptr e) {
      finished = true;
      failure = e;
    });
    ioc_.run_for(30s);
    client_thread.join();
    EXPECT_TRUE(finished) << "server side did not finish within 30 s";
    if (failure) std::rethrow_exception(failure);
  }

  // Connects and, unless told not to, completes the client handshake.
  static std::unique_ptr<ClientStream> connect(asio::io_context& io, asio::ssl::context& ctx,
                                               std::uint16_t port, const ClientOptions& o = {},
                                               bool handshake = true) {
    auto s = std::make_unique<ClientStream>(io, ctx);
    if (o.rcvbuf) {
      s->next_layer().open(tcp::v4());
      s->next_layer().set_option(asio::socket_base::receive_buffer_size(o.rcvbuf));
    }
    s->next_layer().connect({asio::ip::make_address("127.0.0.1"), port});
    if (handshake) s->handshake(asio::ssl::stream_base::client);
    return s;
  }

  // Blocks until the server closes the connection (whatever the client sees).
  static void wait_for_close(tcp::socket& s) {
    char c;
    error_code ec;
    while (!ec) s.read_some(asio::buffer(&c, 1), ec);
  }

  static Pki* pki_;
  asio::io_context ioc_;
  tcp::acceptor acceptor_{ioc_, {asio::ip::make_address("127.0.0.1"), 0}};
};
Pki* TlsStreamTest::pki_ = nullptr;

std::string random_bytes(std::size_t n, unsigned seed) {
  std::mt19937 gen(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(gen());
  return s;
}

const SocketTweak kTinySendBuffer = [](tcp::socket& s) {
  s.set_option(asio::socket_base::send_buffer_size(4096));
};

// --- handshake and echo, TLS 1.2 and 1.3 ---------------------------------------------------

class TlsStreamVersionTest : public TlsStreamTest, public ::testing::WithParamInterface<int> {};

INSTANTIATE_TEST_SUITE_P(Versions, TlsStreamVersionTest,
                         ::testing::Values(TLS1_2_VERSION, TLS1_3_VERSION), [](const auto& info) {
                           return info.param == TLS1_3_VERSION ? std::string("Tls13")
                                                               : std::string("Tls12");
                         });

TEST_P(TlsStreamVersionTest, HandshakeAndSmallEcho) {
  auto ctx = server_context();
  error_code hec, rec, wec, sec;
  int version = 0;
  std::string got;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        std::tie(hec) = co_await s.async_handshake(kTuple);
        version = SSL_version(s.native_handle());
        char buf[64];
        auto into = asio::buffer(buf);
        auto [ec, n] = co_await s.async_read_some(into, kTuple);
        rec = ec;
        got.assign(buf, n);
        const std::string answer = "pong:" + got;
        auto out = asio::buffer(answer);
        std::size_t written = 0;
        std::tie(wec, written) = co_await asio::async_write(s, out, kTuple);
        std::tie(sec) = co_await s.async_shutdown(kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.min_version = o.max_version = GetParam();
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o);
        asio::write(*c, asio::buffer(std::string_view("ping")));
        std::string answer(9, '\0');
        asio::read(*c, asio::buffer(answer));
        EXPECT_EQ(answer, "pong:ping");
        error_code ec;
        c->shutdown(ec);  // answers the server's close_notify
      });
  EXPECT_FALSE(hec) << hec.message();
  EXPECT_EQ(version, GetParam());
  EXPECT_FALSE(rec) << rec.message();
  EXPECT_EQ(got, "ping");
  EXPECT_FALSE(wec) << wec.message();
  EXPECT_FALSE(sec) << sec.message();
}

// Larger than several records each way, through 4 KiB socket buffers on both
// ends so that SSL_write meets EAGAIN and is retried.
TEST_P(TlsStreamVersionTest, LargeEchoBothDirections) {
  constexpr std::size_t kSize = 300 * 1024;
  const std::string payload = random_bytes(kSize, 7);
  auto ctx = server_context();
  std::string received;
  error_code rec, wec;
  std::size_t written = 0;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(20s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        received.resize(kSize);
        auto into = asio::buffer(received);
        std::size_t n = 0;
        std::tie(rec, n) = co_await asio::async_read(s, into, kTuple);
        auto out = asio::buffer(received);
        std::tie(wec, written) = co_await asio::async_write(s, out, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.min_version = o.max_version = GetParam();
        o.rcvbuf = 4096;
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o);
        asio::write(*c, asio::buffer(payload));
        std::string echo(kSize, '\0');
        error_code ec;
        asio::read(*c, asio::buffer(echo), ec);
        EXPECT_FALSE(ec) << ec.message();
        EXPECT_TRUE(echo == payload) << "echo differs";
      },
      kTinySendBuffer);
  EXPECT_FALSE(rec) << rec.message();
  EXPECT_TRUE(received == payload) << "server received different bytes";
  EXPECT_FALSE(wec) << wec.message();
  EXPECT_EQ(written, kSize);
}

// --- writes -------------------------------------------------------------------------------

// Beast serializes a response as several buffers; they must leave as one TLS
// record (one AEAD operation, one send()), and a write_some writes them all.
TEST_F(TlsStreamTest, SmallBuffersAreGatheredIntoOneRecord) {
  auto ctx = server_context();
  std::size_t written = 0;
  error_code wec;
  int records = 0;
  const std::string parts[] = {"HTTP/1.1 200 OK\r\n", "Content-Type: application/json\r\n",
                               "Content-Length: 2\r\n", "\r\n", "{}"};
  std::string whole;
  for (const auto& p : parts) whole += p;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        std::array<asio::const_buffer, 5> seq;
        for (std::size_t i = 0; i < seq.size(); ++i) seq[i] = asio::buffer(parts[i]);
        std::tie(wec, written) = co_await s.async_write_some(seq, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.max_version = TLS1_2_VERSION;  // no post-handshake records to tell apart
        auto cctx = client_context(*pki_, o);
        SSL_CTX_set_msg_callback(
            cctx->native_handle(),
            [](int write_p, int, int content_type, const void* buf, size_t len, SSL*, void* arg) {
              if (write_p == 0 && content_type == SSL3_RT_HEADER && len >= 1 &&
                  static_cast<const unsigned char*>(buf)[0] == SSL3_RT_APPLICATION_DATA) {
                ++*static_cast<int*>(arg);
              }
            });
        SSL_CTX_set_msg_callback_arg(cctx->native_handle(), &records);
        auto c = connect(io, *cctx, port, o);
        std::string got(whole.size(), '\0');
        asio::read(*c, asio::buffer(got));
        EXPECT_EQ(got, whole);
      });
  EXPECT_FALSE(wec) << wec.message();
  EXPECT_EQ(written, whole.size());
  EXPECT_EQ(records, 1);
}

TEST_F(TlsStreamTest, GatheredBytesDoNotSurviveInTheScratchBuffer) {
  // A Decrypt response: headers, then a body that holds the plaintext. The
  // write gathers both into this thread's scratch buffer, which must be wiped.
  auto ctx = server_context();
  const std::string secret = "PLAINTEXT-5e1f0c-must-not-linger";
  const std::string parts[] = {"HTTP/1.1 200 OK\r\nContent-Length: 45\r\n\r\n",
                               "{\"plaintext\":\"" + secret + "\"}"};
  std::string whole = parts[0] + parts[1];
  error_code wec;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        std::array<asio::const_buffer, 2> seq{asio::buffer(parts[0]), asio::buffer(parts[1])};
        std::size_t n = 0;
        std::tie(wec, n) = co_await s.async_write_some(seq, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        std::string got(whole.size(), '\0');
        asio::read(*c, asio::buffer(got));
        EXPECT_EQ(got, whole);
      });
  EXPECT_FALSE(wec) << wec.message();
  const auto scratch = detail::write_scratch();  // the server ran on this thread
  const std::string_view bytes(reinterpret_cast<const char*>(scratch.data()), scratch.size());
  EXPECT_EQ(bytes.find(secret), std::string_view::npos) << "plaintext left in the scratch buffer";
  EXPECT_EQ(bytes.find("HTTP/1.1 200"), std::string_view::npos);
}

// Small, large and empty buffers mixed, more of them than one attempt gathers,
// through a tiny send buffer.
TEST_F(TlsStreamTest, MultiBufferWriteKeepsOrderAcrossRecordsAndRetries) {
  std::vector<std::string> pieces;
  for (unsigned i = 0; i < 40; ++i) {
    const std::size_t size = i % 7 == 0 ? 40000 : i % 5 == 0 ? 0 : 100 + i * 13;
    pieces.push_back(random_bytes(size, i));
  }
  std::string whole;
  for (const auto& p : pieces) whole += p;
  auto ctx = server_context();
  std::size_t written = 0;
  error_code wec;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(20s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        std::vector<asio::const_buffer> seq;
        for (const auto& p : pieces) seq.push_back(asio::buffer(p));
        std::tie(wec, written) = co_await asio::async_write(s, seq, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.rcvbuf = 4096;
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o);
        std::this_thread::sleep_for(100ms);  // let the server hit EAGAIN first
        std::string got(whole.size(), '\0');
        asio::read(*c, asio::buffer(got));
        EXPECT_TRUE(got == whole) << "bytes differ";
      },
      kTinySendBuffer);
  EXPECT_FALSE(wec) << wec.message();
  EXPECT_EQ(written, whole.size());
}

// Beast's HTTP algorithms run on it unchanged.
TEST_F(TlsStreamTest, BeastHttpRequestAndResponse) {
  auto ctx = server_context();
  error_code rec, wec;
  std::string target, body;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        beast::flat_buffer buffer;
        http::request<http::string_body> req;
        std::size_t n = 0;
        std::tie(rec, n) = co_await http::async_read(s, buffer, req, kTuple);
        target = std::string(req.target());
        body = req.body();
        http::response<http::string_body> res{http::status::ok, 11};
        res.body() = std::string(20000, 'x');
        res.prepare_payload();
        std::tie(wec, n) = co_await http::async_write(s, res, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        http::request<http::string_body> req{http::verb::post, "/kms/xks/v1/health", 11};
        req.body() = R"({"requestMetadata":{}})";
        req.prepare_payload();
        http::write(*c, req);
        beast::flat_buffer buffer;
        http::response<http::string_body> res;
        http::read(*c, buffer, res);
        EXPECT_EQ(res.result(), http::status::ok);
        EXPECT_EQ(res.body(), std::string(20000, 'x'));
      });
  EXPECT_FALSE(rec) << rec.message();
  EXPECT_EQ(target, "/kms/xks/v1/health");
  EXPECT_EQ(body, R"({"requestMetadata":{}})");
  EXPECT_FALSE(wec) << wec.message();
}

// --- reads ----------------------------------------------------------------------------------

TEST_F(TlsStreamTest, EmptyReadCompletesAtOnceButNotInline) {
  auto ctx = server_context();
  error_code rec;
  std::size_t n = 99;
  bool inline_completion = true;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        bool initiated = false;
        s.async_read_some(asio::mutable_buffer(), [&](error_code ec, std::size_t bytes) {
          inline_completion = !initiated;
          rec = ec;
          n = bytes;
        });
        initiated = true;
        asio::steady_timer pause(s.get_executor(), 10ms);
        co_await pause.async_wait(kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        wait_for_close(c->next_layer());
      });
  EXPECT_FALSE(rec);
  EXPECT_EQ(n, 0u);
  EXPECT_FALSE(inline_completion);
}

TEST_F(TlsStreamTest, CloseNotifyReadsAsEof) {
  auto ctx = server_context();
  error_code rec, sec;
  run(*ctx, read_once_then_shutdown(rec, sec), [&](std::uint16_t port) {
    asio::io_context io;
    auto cctx = client_context(*pki_, {});
    auto c = connect(io, *cctx, port);
    error_code ec;
    c->shutdown(ec);  // close_notify, then waits for the server's
    EXPECT_FALSE(ec) << ec.message();
  });
  EXPECT_EQ(rec, asio::error::eof) << rec.message();
  EXPECT_FALSE(sec) << sec.message();  // the peer's close_notify had come already
}

TEST_F(TlsStreamTest, TcpCloseWithoutCloseNotifyIsStreamTruncated) {
  auto ctx = server_context();
  error_code rec, sec;
  run(*ctx, read_once_then_shutdown(rec, sec), [&](std::uint16_t port) {
    asio::io_context io;
    auto cctx = client_context(*pki_, {});
    auto c = connect(io, *cctx, port);
    // FIN without close_notify. (close() could send a RST instead when the
    // TLS 1.3 tickets are still unread in the receive buffer.)
    c->next_layer().shutdown(tcp::socket::shutdown_send);
    wait_for_close(c->next_layer());
  });
  EXPECT_EQ(rec, asio::ssl::error::stream_truncated) << rec.message();
  // No SSL_shutdown after a fatal error; the same error again.
  EXPECT_EQ(sec, asio::ssl::error::stream_truncated) << sec.message();
  EXPECT_EQ(ERR_peek_error(), 0u);
}

TEST_F(TlsStreamTest, PeerClosingDuringHandshakeIsStreamTruncated) {
  auto ctx = server_context();
  error_code hec;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        std::tie(hec) = co_await s.async_handshake(kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        tcp::socket sock(io);
        sock.connect({asio::ip::make_address("127.0.0.1"), port});
        sock.close();
      });
  // What asio::ssl::stream reports too; the server treats it as a quiet disconnect.
  EXPECT_EQ(hec, asio::ssl::error::stream_truncated) << hec.message();
}

// --- timeouts -------------------------------------------------------------------------------

TEST_F(TlsStreamTest, ReadTimeoutAndItStaysFailed) {
  auto ctx = server_context();
  error_code rec, wec, sec;
  Clock::duration waited{};
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        s.expires_after(150ms);
        const auto start = Clock::now();
        char buf[16];
        auto into = asio::buffer(buf);
        std::size_t n = 0;
        std::tie(rec, n) = co_await s.async_read_some(into, kTuple);
        waited = Clock::now() - start;
        s.expires_after(2s);
        auto out = asio::buffer(std::string_view("late"));
        std::tie(wec, n) = co_await s.async_write_some(out, kTuple);
        std::tie(sec) = co_await s.async_shutdown(kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        wait_for_close(c->next_layer());
      });
  EXPECT_EQ(rec, beast::error::timeout) << rec.message();
  EXPECT_GE(waited, 140ms);
  EXPECT_LT(waited, 3s);
  EXPECT_EQ(wec, beast::error::timeout) << wec.message();
  EXPECT_EQ(sec, beast::error::timeout) << sec.message();
}

TEST_F(TlsStreamTest, ReplacedOrClearedDeadlineDoesNotFire) {
  auto ctx = server_context();
  error_code first, second;
  std::string got;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        char buf[16];
        auto into = asio::buffer(buf);
        std::size_t n = 0;
        s.expires_after(50ms);
        s.expires_never();
        std::tie(first, n) = co_await s.async_read_some(into, kTuple);
        got.assign(buf, n);
        s.expires_after(50ms);
        s.expires_after(5s);
        std::tie(second, n) = co_await s.async_read_some(into, kTuple);
        got.append(buf, n);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        std::this_thread::sleep_for(200ms);
        asio::write(*c, asio::buffer(std::string_view("a")));
        std::this_thread::sleep_for(200ms);
        asio::write(*c, asio::buffer(std::string_view("b")));
        wait_for_close(c->next_layer());
      });
  EXPECT_FALSE(first) << first.message();
  EXPECT_FALSE(second) << second.message();
  EXPECT_EQ(got, "ab");
}

TEST_F(TlsStreamTest, HandshakeTimeoutWhenNoClientHelloComes) {
  auto ctx = server_context();
  error_code hec;
  Clock::duration waited{};
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(150ms);
        const auto start = Clock::now();
        std::tie(hec) = co_await s.async_handshake(kTuple);
        waited = Clock::now() - start;
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        tcp::socket sock(io);
        sock.connect({asio::ip::make_address("127.0.0.1"), port});
        wait_for_close(sock);
      });
  EXPECT_EQ(hec, beast::error::timeout) << hec.message();
  EXPECT_GE(waited, 140ms);
  EXPECT_LT(waited, 3s);
}

TEST_F(TlsStreamTest, WriteTimeoutWhenThePeerDoesNotRead) {
  auto ctx = server_context();
  error_code wec;
  std::size_t written = 0;
  const std::string big(16 * 1024 * 1024, 'z');
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        s.expires_after(200ms);
        auto out = asio::buffer(big);
        std::tie(wec, written) = co_await asio::async_write(s, out, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.rcvbuf = 4096;
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o);
        std::this_thread::sleep_for(1s);  // reads nothing meanwhile
      },
      kTinySendBuffer);
  EXPECT_EQ(wec, beast::error::timeout) << wec.message();
  EXPECT_LT(written, big.size());
}

// --- failures ---------------------------------------------------------------------------------

// A vanished peer must cost an error code: OpenSSL's own socket BIO would raise
// SIGPIPE (fatal here, gtest does not ignore it).
TEST_F(TlsStreamTest, WritingToAVanishedPeerIsAnErrorNotSigpipe) {
  auto ctx = server_context();
  error_code wec, again;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        auto [hec] = co_await s.async_handshake(kTuple);
        if (hec) co_return;
        asio::steady_timer pause(s.get_executor(), 200ms);  // the client is gone by then
        co_await pause.async_wait(kTuple);
        const std::string chunk(64 * 1024, 'q');
        auto out = asio::buffer(chunk);
        for (int i = 0; i < 50 && !wec; ++i) {
          std::size_t n = 0;
          std::tie(wec, n) = co_await asio::async_write(s, out, kTuple);
        }
        std::size_t n = 0;
        std::tie(again, n) = co_await s.async_write_some(out, kTuple);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port);
        c->next_layer().set_option(asio::socket_base::linger(true, 0));  // RST
        c->next_layer().close();
      });
  EXPECT_TRUE(wec == asio::error::broken_pipe || wec == asio::error::connection_reset)
      << wec.message();
  EXPECT_EQ(again, wec);
}

TEST_F(TlsStreamTest, GarbageInsteadOfClientHelloIsAnSslError) {
  for (const std::string garbage :
       {std::string("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), random_bytes(600, 3)}) {
    auto ctx = server_context();
    error_code hec;
    std::string reason;
    ioc_.restart();
    run(
        *ctx,
        [&](TlsStream& s) -> asio::awaitable<void> {
          s.expires_after(5s);
          std::tie(hec) = co_await s.async_handshake(kTuple);
          reason = describe_handshake_failure(s.native_handle(), hec);
        },
        [&](std::uint16_t port) {
          asio::io_context io;
          tcp::socket sock(io);
          sock.connect({asio::ip::make_address("127.0.0.1"), port});
          error_code ec;
          asio::write(sock, asio::buffer(garbage), ec);
          wait_for_close(sock);
        });
    EXPECT_EQ(hec.category(), asio::error::get_ssl_category()) << hec.message();
    EXPECT_FALSE(reason.empty());
    EXPECT_EQ(ERR_peek_error(), 0u) << "error queue left behind";
  }
}

// --- mTLS -------------------------------------------------------------------------------------

TEST_F(TlsStreamTest, ClientCertificateAccepted) {
  auto ctx = server_context(/*mtls=*/true);
  error_code hec;
  std::string subject;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        std::tie(hec) = co_await s.async_handshake(kTuple);
        subject = peer_subject(s.native_handle());
        char buf[4];
        auto into = asio::buffer(buf);
        co_await s.async_read_some(into, kTuple);  // until the client leaves
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.cert = pki_->client_cert;
        o.key = pki_->client_key;
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o);
        error_code ec;
        c->shutdown(ec);
      });
  EXPECT_FALSE(hec) << hec.message();
  EXPECT_EQ(subject, "/CN=client.example");
}

TEST_F(TlsStreamTest, ClientCertificateMissing) {
  auto ctx = server_context(/*mtls=*/true);
  error_code hec;
  std::string reason;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        std::tie(hec) = co_await s.async_handshake(kTuple);
        reason = describe_handshake_failure(s.native_handle(), hec);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        auto cctx = client_context(*pki_, {});
        auto c = connect(io, *cctx, port, {}, /*handshake=*/false);
        error_code ec;
        c->handshake(asio::ssl::stream_base::client, ec);
        if (!ec) {  // TLS 1.3: the client learns it when it next reads
          char b;
          c->read_some(asio::buffer(&b, 1), ec);
        }
        EXPECT_TRUE(ec);
      });
  EXPECT_EQ(hec.category(), asio::error::get_ssl_category()) << hec.message();
  EXPECT_THAT(reason, HasSubstr("the client sent no certificate"));
}

TEST_F(TlsStreamTest, ClientCertificateFromAnotherCaIsRejected) {
  auto ctx = server_context(/*mtls=*/true);
  error_code hec;
  std::string reason;
  long verify = X509_V_OK;
  run(
      *ctx,
      [&](TlsStream& s) -> asio::awaitable<void> {
        s.expires_after(5s);
        std::tie(hec) = co_await s.async_handshake(kTuple);
        verify = SSL_get_verify_result(s.native_handle());
        reason = describe_handshake_failure(s.native_handle(), hec);
      },
      [&](std::uint16_t port) {
        asio::io_context io;
        ClientOptions o;
        o.cert = pki_->rogue_cert;
        o.key = pki_->rogue_key;
        auto cctx = client_context(*pki_, o);
        auto c = connect(io, *cctx, port, o, /*handshake=*/false);
        error_code ec;
        c->handshake(asio::ssl::stream_base::client, ec);
        if (!ec) {
          char b;
          c->read_some(asio::buffer(&b, 1), ec);
        }
        EXPECT_TRUE(ec);
      });
  EXPECT_EQ(hec.category(), asio::error::get_ssl_category()) << hec.message();
  EXPECT_NE(verify, X509_V_OK);
  EXPECT_THAT(reason, HasSubstr("client certificate rejected"));
}

struct MtlsAttempt {
  error_code server;         // the server's handshake result
  std::string reason;        // describe_handshake_failure
  std::string client_error;  // what the client saw (names the alert)
};

class TlsClientNameTest : public TlsStreamTest {
 protected:
  // One handshake with `cert` against `ctx`, then a read.
  MtlsAttempt attempt(asio::ssl::context& ctx, const fs::path& cert, const fs::path& key) {
    MtlsAttempt out;
    run(
        ctx,
        [&](TlsStream& s) -> asio::awaitable<void> {
          s.expires_after(5s);
          std::tie(out.server) = co_await s.async_handshake(kTuple);
          if (out.server) {
            out.reason = describe_handshake_failure(s.native_handle(), out.server);
            co_return;
          }
          co_await s.async_write_some(asio::buffer("k", 1), kTuple);  // accepted: say so
          char buf[4];
          auto into = asio::buffer(buf);
          co_await s.async_read_some(into, kTuple);  // until the client leaves
        },
        [&](std::uint16_t port) {
          asio::io_context io;
          ClientOptions o;
          o.cert = cert;
          o.key = key;
          auto cctx = client_context(*pki_, o);
          auto c = connect(io, *cctx, port, o, /*handshake=*/false);
          error_code ec;
          c->handshake(asio::ssl::stream_base::client, ec);
          if (!ec) {  // TLS 1.3: the client learns it when it next reads
            char b;
            c->read_some(asio::buffer(&b, 1), ec);
            if (ec == asio::error::eof || ec == asio::ssl::error::stream_truncated) ec = {};
          }
          if (ec) out.client_error = ec.message();
        });
    return out;
  }
};

TEST_F(TlsClientNameTest, OnlyTheSubjectCnIsMatchedByDefault) {
  // The client certificate is CN=client.example with the DNS SAN localhost.
  auto cn = server_context(true, true, {"client.example"});
  EXPECT_FALSE(attempt(*cn, pki_->client_cert, pki_->client_key).server);

  auto san = server_context(true, true, {"localhost"});
  const auto refused = attempt(*san, pki_->client_cert, pki_->client_key);
  EXPECT_TRUE(refused.server);
  EXPECT_THAT(refused.reason, HasSubstr("hostname mismatch"));
  EXPECT_THAT(refused.client_error, HasSubstr("handshake failure"));

  auto other = server_context(true, true, {"cks.kms.eu-west-1.amazonaws.com"});
  const auto intruder = attempt(*other, pki_->client_cert, pki_->client_key);
  EXPECT_TRUE(intruder.server);
  EXPECT_THAT(intruder.reason, HasSubstr("not in tls.client_names"));
  EXPECT_THAT(intruder.client_error, HasSubstr("handshake failure"));
}

TEST_F(TlsClientNameTest, DnsSansOnlyWhenConfigured) {
  auto san = server_context(true, true, {"localhost"}, config::TlsConfig::NameMatch::CnOrDnsSan);
  EXPECT_FALSE(attempt(*san, pki_->client_cert, pki_->client_key).server);
  auto cn =
      server_context(true, true, {"CLIENT.example"}, config::TlsConfig::NameMatch::CnOrDnsSan);
  EXPECT_FALSE(attempt(*cn, pki_->client_cert, pki_->client_key).server);
  auto none =
      server_context(true, true, {"elsewhere.example"}, config::TlsConfig::NameMatch::CnOrDnsSan);
  EXPECT_TRUE(attempt(*none, pki_->client_cert, pki_->client_key).server);
}

TEST_F(TlsClientNameTest, AnotherCaEndsWithHandshakeFailureAndTheLogSaysWhy) {
  auto ctx = server_context(true);
  const auto a = attempt(*ctx, pki_->rogue_cert, pki_->rogue_key);
  EXPECT_TRUE(a.server);
  EXPECT_THAT(a.reason, HasSubstr("client certificate rejected: self-signed certificate"));
  EXPECT_THAT(a.client_error, HasSubstr("handshake failure"));
  EXPECT_THAT(a.client_error, Not(HasSubstr("unknown ca")));
}

TEST_F(TlsClientNameTest, ClientCaWithoutNamesIsRefused) {
  EXPECT_THROW(server_context(true, true, {}), std::runtime_error);
}

}  // namespace
}  // namespace xks::net
