#include "xks/core/backoff.hpp"

#include <algorithm>

namespace xks::core {

namespace {

class RealSteadyClock final : public Clock {
 public:
  SteadyClock::time_point now() const noexcept override { return SteadyClock::now(); }
};

}  // namespace

const Clock& steady_clock() noexcept {
  static const RealSteadyClock clock;
  return clock;
}

Backoff::Backoff(const Clock& clock, Millis initial, Millis max) noexcept
    : clock_(&clock), initial_(initial), max_(std::max(max, initial)), delay_(initial) {}

Backoff::Millis Backoff::failed() noexcept {
  const Millis scheduled = delay_;
  next_attempt_ = clock_->now() + scheduled;
  // Failures without a success in between back off further.
  delay_ = std::min(delay_ * 2, max_);
  return scheduled;
}

bool Backoff::due() const noexcept { return !gave_up_ && clock_->now() >= next_attempt_; }

Backoff::Millis Backoff::remaining() const noexcept {
  const auto now = clock_->now();
  if (now >= next_attempt_) return Millis{0};
  return std::chrono::duration_cast<Millis>(next_attempt_ - now);
}

}  // namespace xks::core
