// Rate limit for log lines an unauthenticated peer can cause (failed TLS
// handshakes, refused or evicted connections, slow clients): per cause, the
// first `burst` lines of each `period` are written; the rest are only counted,
// and take_suppressed() hands the counts to a periodic summary line. The clock
// is injected so that tests need not sleep.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <utility>
#include <vector>

namespace xks::obs {

class LogLimiter {
 public:
  using Clock = std::chrono::steady_clock;
  using Now = std::function<Clock::time_point()>;

  // `causes`: the number of causes (indices 0..causes-1). `now` defaults to
  // the steady clock.
  LogLimiter(std::size_t causes, unsigned burst, Clock::duration period, Now now = {});

  // True when a line for `cause` may be written now; false (and counted) when
  // this period's burst is spent. Thread-safe. Unknown causes are never limited.
  bool admit(std::size_t cause);

  // The lines held back per cause since the last call, (cause, count) for the
  // causes with a non-zero count; the counts restart at zero.
  std::vector<std::pair<std::size_t, std::uint64_t>> take_suppressed();

  Clock::duration period() const noexcept { return period_; }

 private:
  struct Slot {
    Clock::time_point window_start{};
    unsigned written = 0;
    std::uint64_t suppressed = 0;
    bool started = false;
  };
  const unsigned burst_;
  const Clock::duration period_;
  const Now now_;
  std::mutex mutex_;
  std::vector<Slot> slots_;
};

}  // namespace xks::obs
