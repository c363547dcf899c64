#include "xks/obs/log_limiter.hpp"

namespace xks::obs {

LogLimiter::LogLimiter(std::size_t causes, unsigned burst, Clock::duration period, Now now)
    : burst_(burst),
      period_(period),
      now_(now ? std::move(now) : Now([] { return Clock::now(); })),
      slots_(causes) {}

bool LogLimiter::admit(std::size_t cause) {
  if (cause >= slots_.size()) return true;
  const auto now = now_();
  std::lock_guard lock(mutex_);
  auto& slot = slots_[cause];
  if (!slot.started || now - slot.window_start >= period_) {
    slot.started = true;
    slot.window_start = now;
    slot.written = 0;
  }
  if (slot.written < burst_) {
    ++slot.written;
    return true;
  }
  ++slot.suppressed;
  return false;
}

std::vector<std::pair<std::size_t, std::uint64_t>> LogLimiter::take_suppressed() {
  std::vector<std::pair<std::size_t, std::uint64_t>> out;
  std::lock_guard lock(mutex_);
  for (std::size_t i = 0; i < slots_.size(); ++i) {
    if (slots_[i].suppressed != 0) {
      out.emplace_back(i, slots_[i].suppressed);
      slots_[i].suppressed = 0;
    }
  }
  return out;
}

}  // namespace xks::obs
