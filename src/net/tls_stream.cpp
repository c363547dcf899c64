#include "xks/net/tls_stream.hpp"

#include <openssl/crypto.h>

#include <openssl/bio.h>
#include <openssl/err.h>
#include <sys/socket.h>

#include <algorithm>
#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/system/system_error.hpp>
#include <cerrno>
#include <cstring>

namespace xks::net {
namespace asio = boost::asio;
namespace beast = boost::beast;
using boost::system::error_code;

namespace {

// A socket BIO like OpenSSL's BIO_s_socket (what SSL_set_fd installs), except
// that it sends with MSG_NOSIGNAL: a peer that has gone away must cost an
// EPIPE, not a SIGPIPE for the whole daemon (OpenSSL's socket BIO uses write()).
// It also records errno, which OpenSSL's own calls could overwrite before
// SSL_get_error reports SSL_ERROR_SYSCALL.
using BioFd = detail::FdBioState;

int bio_write(BIO* bio, const char* data, std::size_t size, std::size_t* written) {
  auto* state = static_cast<BioFd*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  ssize_t n;
  do {
    n = ::send(state->fd, data, size, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n >= 0) {
    *written = static_cast<std::size_t>(n);
    return 1;
  }
  if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_write(bio);
  } else {
    state->error = errno;
  }
  *written = 0;
  return 0;
}

int bio_read(BIO* bio, char* data, std::size_t size, std::size_t* read) {
  auto* state = static_cast<BioFd*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  *read = 0;
  if (size == 0) return 0;
  ssize_t n;
  do {
    n = ::recv(state->fd, data, size, 0);
  } while (n < 0 && errno == EINTR);
  if (n > 0) {
    *read = static_cast<std::size_t>(n);
    return 1;
  }
  if (n == 0) {
    // BIO_eof() true turns this into SSL_R_UNEXPECTED_EOF_WHILE_READING (OpenSSL 3)
    // unless close_notify came first.
    state->eof = true;
  } else if (errno == EAGAIN || errno == EWOULDBLOCK) {
    BIO_set_retry_read(bio);
  } else {
    state->error = errno;
  }
  return 0;
}

long bio_ctrl(BIO* bio, int cmd, long, void*) {
  switch (cmd) {
    case BIO_CTRL_FLUSH:  // nothing is buffered here; OpenSSL fails a handshake on 0
      return 1;
    case BIO_CTRL_EOF: return static_cast<BioFd*>(BIO_get_data(bio))->eof ? 1 : 0;
    default:  // no kTLS, no pending data, no push/pop
      return 0;
  }
}

int bio_create(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

int bio_destroy(BIO* bio) {
  BIO_set_data(bio, nullptr);  // the state belongs to the TlsStream
  return 1;
}

BIO_METHOD* fd_method() {
  // Created once, used by every connection, never freed (OpenSSL keeps a
  // pointer to it in each BIO).
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "xks-fd");
    if (m == nullptr || BIO_meth_set_write_ex(m, bio_write) != 1 ||
        BIO_meth_set_read_ex(m, bio_read) != 1 || BIO_meth_set_ctrl(m, bio_ctrl) != 1 ||
        BIO_meth_set_create(m, bio_create) != 1 || BIO_meth_set_destroy(m, bio_destroy) != 1) {
      BIO_meth_free(m);
      return static_cast<BIO_METHOD*>(nullptr);
    }
    return m;
  }();
  return method;
}

[[noreturn]] void throw_openssl(const char* what) {
  const unsigned long code = ERR_get_error();
  ERR_clear_error();
  throw boost::system::system_error(
      error_code(static_cast<int>(code), asio::error::get_ssl_category()), what);
}

}  // namespace

TlsStream::TlsStream(socket_type socket, asio::ssl::context& ctx)
    : socket_(std::move(socket)),
      timer_(socket_.get_executor()),
      timer_link_(std::make_shared<TimerLink>(TimerLink{this})) {
  // OpenSSL does the I/O; asio only waits for readiness.
  socket_.non_blocking(true);
  bio_.fd = socket_.native_handle();
  ERR_clear_error();
  ssl_ = SSL_new(ctx.native_handle());
  if (ssl_ == nullptr) throw_openssl("SSL_new");
  BIO_METHOD* method = fd_method();
  BIO* bio = method ? BIO_new(method) : nullptr;
  if (bio == nullptr) {
    SSL_free(ssl_);
    throw_openssl("BIO_new");
  }
  BIO_set_data(bio, &bio_);
  SSL_set_bio(ssl_, bio, bio);  // the SSL object owns the BIO now
  SSL_set_accept_state(ssl_);
  // SSL_write may return after each record (the write loop continues), and a
  // retry after WANT_WRITE may pass the same bytes from another address (they
  // are gathered anew on each attempt). RELEASE_BUFFERS comes from the context.
  SSL_set_mode(ssl_, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  // Without read-ahead OpenSSL reads a record's 5-byte header and its body
  // with two recv() calls; with it, one recv() fills its record buffer. The
  // stream never waits while OpenSSL holds unread bytes: it waits only after
  // SSL_read says WANT_READ, i.e. after recv() returned EAGAIN.
  SSL_set_read_ahead(ssl_, 1);
}

TlsStream::~TlsStream() {
  timer_link_->stream = nullptr;
  SSL_free(ssl_);  // frees the BIO; the socket closes after
}

void TlsStream::expires_after(asio::steady_timer::duration d) {
  deadline_ = asio::steady_timer::clock_type::now() + d;
  // A wait armed for no later than the new deadline fires first and re-arms.
  if (timer_armed_ && armed_for_ <= deadline_) return;
  arm(deadline_);
}

void TlsStream::expires_never() {
  deadline_ = asio::steady_timer::time_point::max();  // an armed wait finds nothing due
}

void TlsStream::arm(asio::steady_timer::time_point when) {
  timer_armed_ = true;
  armed_for_ = when;
  timer_.expires_at(when);  // a wait armed before completes with operation_aborted
  timer_.async_wait([link = timer_link_](const error_code& ec) {
    // Re-armed for a nearer deadline, or the stream is gone.
    if (ec == asio::error::operation_aborted || link->stream == nullptr) return;
    TlsStream& self = *link->stream;
    self.timer_armed_ = false;
    if (ec || self.deadline_ == asio::steady_timer::time_point::max()) return;
    if (asio::steady_timer::clock_type::now() >= self.deadline_) {
      self.on_deadline();
    } else {
      self.arm(self.deadline_);  // the deadline moved later meanwhile
    }
  });
}

void TlsStream::on_deadline() {
  if (!failed_) failed_ = beast::error::timeout;
  // Pending waits complete with operation_aborted, which the operations report
  // as failed_. The descriptor stays open until the destructor, so OpenSSL
  // never writes to a number the kernel may have handed to another connection.
  error_code ignored;  // cancelling an idle socket does nothing
  socket_.cancel(ignored);
}

error_code TlsStream::map_failure(int ssl_error) const {
  switch (ssl_error) {
    case SSL_ERROR_ZERO_RETURN: return asio::error::eof;  // close_notify: a clean end of the stream
    case SSL_ERROR_SSL: {
      const unsigned long code = ERR_get_error();
      if (ERR_GET_LIB(code) == ERR_LIB_SSL &&
          ERR_GET_REASON(code) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
        return asio::ssl::error::stream_truncated;
      }
      if (code == 0) return asio::ssl::error::unexpected_result;
      return {static_cast<int>(code), asio::error::get_ssl_category()};
    }
    case SSL_ERROR_SYSCALL: {
      if (const unsigned long code = ERR_get_error(); code != 0) {
        return {static_cast<int>(code), asio::error::get_ssl_category()};
      }
      if (bio_.error != 0) return {bio_.error, boost::system::system_category()};
      // No errno and no OpenSSL reason: EOF without close_notify.
      return asio::ssl::error::stream_truncated;
    }
    default: return asio::ssl::error::unexpected_result;
  }
}

TlsStream::Step TlsStream::after_failure(int result) {
  const int ssl_error = SSL_get_error(ssl_, result);
  if (ssl_error == SSL_ERROR_WANT_READ) return {Want::read, {}, 0};
  if (ssl_error == SSL_ERROR_WANT_WRITE) return {Want::write, {}, 0};
  const error_code ec = map_failure(ssl_error);
  // Several connections share each I/O thread's error queue: leave it empty.
  ERR_clear_error();
  if (ssl_error == SSL_ERROR_SSL || ssl_error == SSL_ERROR_SYSCALL) failed_ = ec;
  return {Want::nothing, ec, 0};
}

namespace {
// Before every SSL_* call: no stale reasons from another connection on this thread.
inline void clear_errors(int& bio_error) {
  ERR_clear_error();
  bio_error = 0;
}
}  // namespace

TlsStream::Step TlsStream::handshake_step() {
  clear_errors(bio_.error);
  const int r = SSL_do_handshake(ssl_);
  if (r == 1) return {};
  return after_failure(r);
}

TlsStream::Step TlsStream::shutdown_step() {
  clear_errors(bio_.error);
  int r = SSL_shutdown(ssl_);
  // 0: our close_notify is out; the second call waits for the peer's, so the
  // socket is not closed under data the peer is still sending (a lingering
  // close, as asio::ssl::stream does it).
  if (r == 0) r = SSL_shutdown(ssl_);
  if (r == 1) return {};
  return after_failure(r);
}

TlsStream::Step TlsStream::read_step(void* data, std::size_t size) {
  clear_errors(bio_.error);
  std::size_t n = 0;
  const int r = SSL_read_ex(ssl_, data, size, &n);
  if (r == 1) return {Want::nothing, {}, n};
  return after_failure(r);
}

std::span<unsigned char> detail::write_scratch() noexcept {
  // One per thread rather than 16 KiB on the stack of every write: write_step
  // is synchronous, so a thread's writes never overlap.
  thread_local std::array<unsigned char, SSL3_RT_MAX_PLAIN_LENGTH> scratch;
  return scratch;
}

TlsStream::Step TlsStream::write_step(const asio::const_buffer* buffers, std::size_t count) {
  // One record carries at most 16 KiB of plaintext.
  constexpr std::size_t kRecord = SSL3_RT_MAX_PLAIN_LENGTH;
  const std::span<unsigned char> scratch = detail::write_scratch();
  // The gathered bytes may be a Decrypt response's plaintext: wipe them on
  // every way out.
  std::size_t gathered = 0;
  struct Wipe {
    std::span<unsigned char> s;
    std::size_t& n;
    ~Wipe() { OPENSSL_cleanse(s.data(), n); }
  } wipe{scratch, gathered};
  std::size_t written = 0;
  std::size_t index = 0;
  std::size_t offset = 0;  // into buffers[index]
  while (index < count) {
    const auto* first = static_cast<const unsigned char*>(buffers[index].data()) + offset;
    const std::size_t first_size = buffers[index].size() - offset;
    if (first_size == 0) {
      ++index;
      offset = 0;
      continue;
    }
    // Small pieces go into one record: gather up to a record's worth into
    // `scratch`. A buffer that fills a record, or the last one, is passed as is.
    // The choice depends only on the bytes from here on, so a retry after
    // WANT_WRITE offers OpenSSL the same record again.
    const unsigned char* data = first;
    std::size_t size = first_size;
    if (first_size < kRecord && index + 1 < count) {
      std::memcpy(scratch.data(), first, first_size);
      size = first_size;
      for (std::size_t i = index + 1; i < count && size < kRecord; ++i) {
        const std::size_t take = std::min(buffers[i].size(), kRecord - size);
        if (take != 0) std::memcpy(scratch.data() + size, buffers[i].data(), take);
        size += take;
      }
      data = scratch.data();
      gathered = std::max(gathered, size);
    }
    clear_errors(bio_.error);
    std::size_t n = 0;
    const int r = SSL_write_ex(ssl_, data, size, &n);
    if (r != 1) {
      Step step = after_failure(r);
      step.bytes = written;
      return step;
    }
    written += n;
    // Advance over the n bytes just written.
    while (n != 0 && index < count) {
      const std::size_t left = buffers[index].size() - offset;
      if (n < left) {
        offset += n;
        n = 0;
      } else {
        n -= left;
        ++index;
        offset = 0;
      }
    }
  }
  return {Want::nothing, {}, written};
}

}  // namespace xks::net
