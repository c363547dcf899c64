// The dedicated worker pool for blocking HSM calls.
// A bounded queue in front of N worker threads: a full queue refuses work at once
// (the caller answers 429), a job whose deadline passed while queued is not run
// (the caller answers 503 without touching the HSM). The queue is also bounded
// in time: a job that, at the workers' recent call time, would not be done by
// its deadline is refused at once too. Without that, a queue longer than the
// HSM can serve within the deadline fills with jobs that all expire: every
// request waits its whole deadline and then fails (503), and the HSM's goodput
// collapses under load it could half serve.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "xks/core/clock.hpp"

namespace xks::core {

using Deadline = SteadyClock::time_point;

class BlockingPool {
 public:
  // `run(expired)`: expired is true when the deadline passed before a worker took
  // the job; the job must then finish without doing the blocking work.
  using Job = std::function<void(bool expired)>;

  BlockingPool(unsigned threads, std::size_t queue_capacity, std::string name);
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // False when the queue is full, the pool is stopping, or every worker is busy
  // and, at the recent call time, the calls ahead of the job and its own would
  // end past its deadline; the job is dropped.
  bool try_submit(Deadline deadline, Job job);

  // Stops taking jobs, runs those already queued (as expired), joins the workers.
  void stop();
  // The same, but waits at most `limit` for the workers: false when some are
  // still inside a job then (a hung HSM call). Those threads are left running;
  // the caller must then end the process without destroying the pool's users.
  bool stop_within(std::chrono::steady_clock::duration limit);

  std::size_t queue_depth() const noexcept { return queued_.load(std::memory_order_relaxed); }
  std::size_t busy_workers() const noexcept { return busy_.load(std::memory_order_relaxed); }
  unsigned threads() const noexcept { return static_cast<unsigned>(workers_.size()); }
  std::size_t queue_capacity() const noexcept { return capacity_.load(std::memory_order_relaxed); }
  // Applies to the next submission; jobs already queued beyond it stay queued.
  void set_queue_capacity(std::size_t capacity) noexcept {
    capacity_.store(capacity, std::memory_order_relaxed);
  }
  // Moving average of how long a job that ran took (not those that expired):
  // what the admission check expects each queued job to cost. Zero until one ran.
  std::chrono::nanoseconds recent_call_time() const noexcept {
    return std::chrono::nanoseconds(call_ns_.load(std::memory_order_relaxed));
  }
  // When the longest-running call now in progress started; max() when idle.
  SteadyClock::time_point oldest_busy_since() const;
  // Since when every worker has been busy: max() if any worker is idle. A pool
  // whose every worker has been stuck for long is wedged (the watchdog stops).
  SteadyClock::time_point all_busy_since() const;

 private:
  struct Entry {
    Deadline deadline;
    Job job;
  };
  void worker_loop(std::size_t index);

  std::atomic<std::size_t> capacity_;
  const std::string name_;
  mutable std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<Entry> queue_;
  bool stopping_ = false;
  std::size_t exited_ = 0;  // workers that returned from worker_loop
  std::condition_variable exited_cv_;
  std::atomic<std::size_t> queued_{0};
  std::atomic<std::size_t> busy_{0};
  std::atomic<std::int64_t> call_ns_{0};             // see recent_call_time()
  std::vector<SteadyClock::time_point> busy_since_;  // per worker; max() when idle
  std::vector<std::thread> workers_;
};

}  // namespace xks::core
