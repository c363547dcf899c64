#include "xks/core/blocking_pool.hpp"

#include <pthread.h>

#include <algorithm>

namespace xks::core {

BlockingPool::BlockingPool(unsigned threads, std::size_t queue_capacity, std::string name)
    : capacity_(queue_capacity), name_(std::move(name)) {
  if (threads == 0) threads = 1;
  busy_since_.assign(threads, SteadyClock::time_point::max());
  workers_.reserve(threads);
  for (unsigned i = 0; i < threads; ++i) {
    workers_.emplace_back([this, i] { worker_loop(i); });
    // Thread names show up in top/perf/gdb; the kernel limit is 15 characters.
    const std::string thread_name = (name_ + std::to_string(i)).substr(0, 15);
    pthread_setname_np(workers_.back().native_handle(), thread_name.c_str());
  }
}

BlockingPool::~BlockingPool() { stop(); }

bool BlockingPool::try_submit(Deadline deadline, Job job) {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ || queue_.size() >= capacity_.load(std::memory_order_relaxed)) return false;
    const std::int64_t call_ns = call_ns_.load(std::memory_order_relaxed);
    const std::size_t threads = busy_since_.size();
    if (call_ns > 0 && busy_.load(std::memory_order_relaxed) + queue_.size() >= threads) {
      // No idle worker: this job starts once the calls running now and those
      // queued ahead of it are done, spread over the workers, and then takes a
      // call of its own. Refused at once if that ends past its deadline: it
      // would only wait there to be answered 503.
      const auto done =
          std::chrono::nanoseconds(call_ns * static_cast<std::int64_t>(queue_.size() + 1) /
                                       static_cast<std::int64_t>(threads) +
                                   call_ns);
      if (SteadyClock::now() + done > deadline) return false;
    }
    queue_.push_back(Entry{deadline, std::move(job)});
    queued_.store(queue_.size(), std::memory_order_relaxed);
  }
  cv_.notify_one();
  return true;
}

void BlockingPool::stop() {
  {
    std::lock_guard lock(mutex_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) {
    if (t.joinable()) t.join();
  }
  workers_.clear();
}

bool BlockingPool::stop_within(std::chrono::steady_clock::duration limit) {
  {
    std::unique_lock lock(mutex_);
    if (stopping_ && workers_.empty()) return true;
    stopping_ = true;
    cv_.notify_all();
    if (!exited_cv_.wait_for(lock, limit, [this] { return exited_ == workers_.size(); })) {
      return false;
    }
  }
  stop();  // every worker has returned: the joins are immediate
  return true;
}

SteadyClock::time_point BlockingPool::oldest_busy_since() const {
  std::lock_guard lock(mutex_);
  auto oldest = SteadyClock::time_point::max();
  for (auto t : busy_since_) oldest = std::min(oldest, t);
  return oldest;
}

SteadyClock::time_point BlockingPool::all_busy_since() const {
  std::lock_guard lock(mutex_);
  auto newest = SteadyClock::time_point::min();
  for (auto t : busy_since_) newest = std::max(newest, t);
  return newest;
}

void BlockingPool::worker_loop(std::size_t index) {
  for (;;) {
    Entry entry;
    bool stopping = false;
    {
      std::unique_lock lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {  // stopping and drained
        ++exited_;
        exited_cv_.notify_all();
        return;
      }
      entry = std::move(queue_.front());
      queue_.pop_front();
      queued_.store(queue_.size(), std::memory_order_relaxed);
      busy_since_[index] = SteadyClock::now();
      stopping = stopping_;
    }
    // While stopping, queued jobs still complete (as expired) so that no waiter
    // is left without an answer.
    const bool expired = stopping || SteadyClock::now() >= entry.deadline;
    busy_.fetch_add(1, std::memory_order_relaxed);
    const auto started = SteadyClock::now();
    entry.job(expired);
    if (!expired) {
      // Exponential moving average, weight 1/8: follows a change of the HSM's
      // speed within a few dozen calls and ignores a single slow one. Workers
      // race on it harmlessly: a lost update only drops one sample.
      // A sample counts at most 4 times the average, so that one call that hung
      // for seconds does not refuse work for long after the HSM is back, while a
      // real slowdown still shows within a handful of calls.
      const std::int64_t avg = call_ns_.load(std::memory_order_relaxed);
      std::int64_t took =
          std::chrono::duration_cast<std::chrono::nanoseconds>(SteadyClock::now() - started)
              .count();
      if (avg > 0) took = std::min(took, 4 * avg);
      call_ns_.store(avg == 0 ? std::max<std::int64_t>(took, 1) : avg + (took - avg) / 8,
                     std::memory_order_relaxed);
    }
    busy_.fetch_sub(1, std::memory_order_relaxed);
    std::lock_guard lock(mutex_);
    busy_since_[index] = SteadyClock::time_point::max();
  }
}

}  // namespace xks::core
