// A core::Clock for unit tests: stands still until advance() moves it.
#pragma once

#include <atomic>
#include <chrono>

#include "xks/core/clock.hpp"

namespace xks::testing {

class FakeClock final : public core::Clock {
 public:
  core::SteadyClock::time_point now() const noexcept override {
    return core::SteadyClock::time_point{core::SteadyClock::duration{ticks_.load()}};
  }
  void advance(core::SteadyClock::duration d) noexcept { ticks_.fetch_add(d.count()); }

 private:
  // Starts well after the epoch: a default-constructed time_point is in the past.
  std::atomic<core::SteadyClock::rep> ticks_{
      std::chrono::duration_cast<core::SteadyClock::duration>(std::chrono::hours{1}).count()};
};

}  // namespace xks::testing
