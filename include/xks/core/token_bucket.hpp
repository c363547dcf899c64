// A token bucket for per-key-store request quotas (spec: a proxy MAY enforce
// independent quotas per path prefix and answer ThrottlingException).
#pragma once

#include <algorithm>
#include <mutex>

#include "xks/core/blocking_pool.hpp"

namespace xks::core {

class TokenBucket {
 public:
  TokenBucket(double rate_per_second, double burst)
      : rate_(rate_per_second), burst_(burst), tokens_(burst), last_(SteadyClock::now()) {}

  // Takes one token if there is one.
  bool try_take(SteadyClock::time_point now) {
    std::lock_guard lock(mutex_);
    const std::chrono::duration<double> elapsed = now - last_;
    if (elapsed.count() > 0) {
      tokens_ = std::min(burst_, tokens_ + elapsed.count() * rate_);
      last_ = now;
    }
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  const double rate_;
  const double burst_;
  std::mutex mutex_;
  double tokens_;
  SteadyClock::time_point last_;
};

}  // namespace xks::core
