// Exponential backoff between attempts to bring a failed part back (an HSM that
// went down or did not open): the failure that starts it makes the next attempt
// due `initial` later, each failed attempt doubles the delay up to `max`, and a
// success resets it to `initial`. give_up() stops the attempts until resume().
// Not thread-safe: its owner guards it with the state it belongs to.
#pragma once

#include <chrono>

#include "xks/core/clock.hpp"

namespace xks::core {

class Backoff {
 public:
  using Millis = std::chrono::milliseconds;

  // `max` below `initial` is taken as `initial`. Due at once until the first failure.
  Backoff(const Clock& clock, Millis initial, Millis max) noexcept;

  // A failure: the next attempt is due after the current delay, and the delay
  // after that doubles (up to max). Returns the delay just scheduled.
  Millis failed() noexcept;
  // A success: the next failure waits `initial` again.
  void reset() noexcept { delay_ = initial_; }

  // True when an attempt may be made now; never while given up.
  bool due() const noexcept;
  // How long until the next attempt is due; zero once it is.
  Millis remaining() const noexcept;
  // The delay the next failure will schedule.
  Millis next_delay() const noexcept { return delay_; }

  // No more attempts (the failure is not one that time repairs) until resume().
  void give_up() noexcept { gave_up_ = true; }
  void resume() noexcept { gave_up_ = false; }
  bool gave_up() const noexcept { return gave_up_; }

 private:
  const Clock* clock_;
  Millis initial_;
  Millis max_;
  Millis delay_;
  SteadyClock::time_point next_attempt_{};
  bool gave_up_ = false;
};

}  // namespace xks::core
