// The steady clock behind an interface, so that code that waits on time
// (backoffs) takes it as a parameter and unit tests drive it with a fake.
#pragma once

#include <chrono>

namespace xks::core {

using SteadyClock = std::chrono::steady_clock;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SteadyClock::time_point now() const noexcept = 0;
};

// The process's std::chrono::steady_clock.
const Clock& steady_clock() noexcept;

}  // namespace xks::core
