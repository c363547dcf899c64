// Server-side TLS over a connected TCP socket, the way nginx does it: OpenSSL
// reads and writes the non-blocking descriptor itself, and the stream waits for
// readiness (socket.async_wait) only when OpenSSL says WANT_READ/WANT_WRITE.
//
// Why not asio::ssl::stream: it runs OpenSSL against a BIO pair and copies every
// byte through two fixed 17 KiB buffers of its own plus 17 KiB per direction in
// the pair, held for the life of the connection (~64 KiB per idle keep-alive
// connection, measured). Here an idle connection holds the SSL object, the
// socket and a timer; with SSL_MODE_RELEASE_BUFFERS (set by the server context)
// OpenSSL's record buffers exist only while a record is in flight.
//
// Satisfies Beast's AsyncReadStream/AsyncWriteStream, so http::async_read and
// http::async_write work on it. Timeouts follow beast::tcp_stream (and
// beast::get_lowest_layer(stream) is the stream itself): expires_after() sets a
// deadline; when it passes, the pending operations and every later one complete
// with beast::error::timeout. A timed-out stream stays failed: the peer was too
// slow and the connection is to be dropped, as Beast closes the socket.
//
// Errors, as asio::ssl::stream reports them:
//   - close_notify from the peer (SSL_ERROR_ZERO_RETURN): asio::error::eof;
//   - TCP EOF without close_notify: asio::ssl::error::stream_truncated;
//   - protocol and certificate errors (SSL_ERROR_SSL): the first OpenSSL error
//     code in asio::error::get_ssl_category();
//   - socket errors (SSL_ERROR_SYSCALL): the errno in the system category
//     (connection_reset, broken_pipe, ...).
// After a protocol, socket or timeout error every later operation completes
// with the same error (OpenSSL forbids SSL_shutdown after a fatal error).
//
// One read and one write (or handshake/shutdown) may be outstanding at a time,
// as with asio::ssl::stream; completion handlers never run inside the
// initiating call. Not movable: OpenSSL's BIO points into the object.
#pragma once

#include <openssl/ssl.h>

#include <array>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/buffer.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/system/error_code.hpp>
#include <cstddef>
#include <memory>
#include <span>

namespace xks::net {
namespace detail {
// What the stream's socket BIO needs; OpenSSL holds a pointer to it.
struct FdBioState {
  int fd = -1;
  int error = 0;  // errno of the last failed send/recv
  bool eof = false;
};

// The calling thread's buffer in which small writes are gathered into one
// record. Wiped before each write returns (it may hold a Decrypt response);
// exposed so that tests can check that.
std::span<unsigned char> write_scratch() noexcept;
}  // namespace detail

class TlsStream {
 public:
  using executor_type = boost::asio::any_io_executor;
  using socket_type = boost::asio::ip::tcp::socket;

  // Takes a connected socket, makes it non-blocking and creates the SSL object
  // from `ctx` (which holds a reference to its SSL_CTX, so a reloaded context
  // stays alive as long as the connections that use it). Server side only.
  // Throws boost::system::system_error when OpenSSL cannot allocate.
  TlsStream(socket_type socket, boost::asio::ssl::context& ctx);
  ~TlsStream();
  TlsStream(const TlsStream&) = delete;
  TlsStream& operator=(const TlsStream&) = delete;

  executor_type get_executor() noexcept { return socket_.get_executor(); }
  SSL* native_handle() noexcept { return ssl_; }
  socket_type& socket() noexcept { return socket_; }

  // The deadline for the operations that follow (see the header comment).
  void expires_after(boost::asio::steady_timer::duration d);
  void expires_never();

  // Completion signature void(error_code).
  template <class Token>
  auto async_handshake(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(
        Op<Handshake, false>(*this, Handshake{}), token, socket_);
  }

  // Sends close_notify and waits for the peer's (or for EOF, an error or the
  // deadline). Best effort: a caller closing the connection may ignore the
  // result. Completion signature void(error_code).
  template <class Token>
  auto async_shutdown(Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code)>(
        Op<Shutdown, false>(*this, Shutdown{}), token, socket_);
  }

  // Reads into the first non-empty buffer. Completion signature
  // void(error_code, std::size_t); an empty buffer sequence completes at once.
  template <class MutableBufferSequence, class Token>
  auto async_read_some(const MutableBufferSequence& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        Op<Read<MutableBufferSequence>, true>(*this, Read<MutableBufferSequence>{buffers}), token,
        socket_);
  }

  // Writes the whole sequence unless an error or the deadline stops it. Small
  // buffers are gathered into one TLS record (a response's header and body go
  // out in one record and one send()), so a write costs one record per 16 KiB.
  // Completion signature void(error_code, std::size_t).
  template <class ConstBufferSequence, class Token>
  auto async_write_some(const ConstBufferSequence& buffers, Token&& token) {
    return boost::asio::async_compose<Token, void(boost::system::error_code, std::size_t)>(
        Op<Write<ConstBufferSequence>, true>(*this, Write<ConstBufferSequence>{buffers}), token,
        socket_);
  }

 private:
  enum class Want { nothing, read, write };
  // The outcome of one non-blocking attempt: done (ec set or not), or wait for
  // the socket and try again; `bytes` moved by this attempt either way.
  struct Step {
    Want want = Want::nothing;
    boost::system::error_code ec;
    std::size_t bytes = 0;
  };
  // Lets a timer completion that was already queued when the stream died find
  // out without touching freed memory.
  struct TimerLink {
    TlsStream* stream;
  };
  static constexpr std::size_t kMaxGather = 16;

  Step handshake_step();
  Step shutdown_step();
  Step read_step(void* data, std::size_t size);
  Step write_step(const boost::asio::const_buffer* buffers, std::size_t count);
  Step after_failure(int result);
  boost::system::error_code map_failure(int ssl_error) const;
  void on_deadline();
  void arm(boost::asio::steady_timer::time_point when);

  struct Handshake {
    Step operator()(TlsStream& s, std::size_t) const { return s.handshake_step(); }
  };
  struct Shutdown {
    Step operator()(TlsStream& s, std::size_t) const { return s.shutdown_step(); }
  };
  template <class Buffers>
  struct Read {
    Buffers buffers;
    Step operator()(TlsStream& s, std::size_t) const {
      for (auto it = boost::asio::buffer_sequence_begin(buffers);
           it != boost::asio::buffer_sequence_end(buffers); ++it) {
        const boost::asio::mutable_buffer b(*it);
        if (b.size() != 0) return s.read_step(b.data(), b.size());
      }
      return {};
    }
  };
  template <class Buffers>
  struct Write {
    Buffers buffers;
    // Hands the buffers after the first `done` bytes (at most kMaxGather of
    // them) to write_step. Re-deriving the view from `done` on every attempt
    // gives OpenSSL the same bytes again after WANT_WRITE.
    Step operator()(TlsStream& s, std::size_t done) const {
      std::array<boost::asio::const_buffer, kMaxGather> view;
      std::size_t count = 0;
      std::size_t skip = done;
      for (auto it = boost::asio::buffer_sequence_begin(buffers);
           it != boost::asio::buffer_sequence_end(buffers) && count < view.size(); ++it) {
        boost::asio::const_buffer b(*it);
        if (skip >= b.size()) {
          skip -= b.size();
          continue;
        }
        b += skip;
        skip = 0;
        view[count++] = b;
      }
      return s.write_step(view.data(), count);
    }
  };

  // One composed operation for all four: attempt, wait for readiness, retry.
  template <class Action, bool WithSize>
  class Op {
   public:
    Op(TlsStream& stream, Action action) : stream_(stream), action_(std::move(action)) {}

    template <class Self>
    void operator()(Self& self, boost::system::error_code ec = {}) {
      switch (state_) {
        case State::posted: return finish(self);
        case State::waiting:
          // The deadline cancels the wait; report it as the timeout it is.
          if (stream_.failed_) ec = stream_.failed_;
          if (ec) {
            ec_ = ec;
            return finish(self);
          }
          break;
        case State::starting: break;
      }
      for (;;) {
        const Step step =
            stream_.failed_ ? Step{Want::nothing, stream_.failed_, 0} : action_(stream_, done_);
        done_ += step.bytes;
        if (step.want == Want::nothing || step.ec) {
          ec_ = step.ec;
          break;
        }
        state_ = State::waiting;
        stream_.socket_.async_wait(
            step.want == Want::read ? socket_type::wait_read : socket_type::wait_write,
            std::move(self));
        return;
      }
      if (state_ == State::starting) {
        // Never complete inside the initiating function (asio's rule; Beast's
        // loops would otherwise recurse).
        state_ = State::posted;
        boost::asio::post(std::move(self));
        return;
      }
      finish(self);
    }

   private:
    enum class State { starting, waiting, posted };
    template <class Self>
    void finish(Self& self) {
      if constexpr (WithSize) {
        self.complete(ec_, done_);
      } else {
        self.complete(ec_);
      }
    }

    TlsStream& stream_;
    Action action_;
    State state_ = State::starting;
    std::size_t done_ = 0;
    boost::system::error_code ec_;
  };

  socket_type socket_;
  // The deadline is a plain time point; the timer is armed lazily (see arm()),
  // so moving the deadline later or clearing it — several times per request —
  // costs no timer operation.
  boost::asio::steady_timer timer_;
  std::shared_ptr<TimerLink> timer_link_;
  boost::asio::steady_timer::time_point deadline_ = boost::asio::steady_timer::time_point::max();
  bool timer_armed_ = false;
  boost::asio::steady_timer::time_point armed_for_{};
  SSL* ssl_ = nullptr;
  detail::FdBioState bio_;
  boost::system::error_code failed_;  // sticky: timeout, protocol or socket error
};

}  // namespace xks::net
