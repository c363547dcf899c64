#include "xks/app/config_watch.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string_view>
#include <utility>

#include "xks/obs/log.hpp"

namespace xks::app {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

// As the kernel's own limit on symlinks followed in one lookup (ELOOP).
constexpr int kMaxSymlinkHops = 40;

// A stream of changes (a log file next to the config, a writer that never
// settles) must not hold the reload back for ever: at most this many debounce
// periods after the first change, the reload is asked for anyway.
constexpr int kMaxDebouncePeriods = 10;

// Entry events in a watched directory, and the directory itself going away.
constexpr std::uint32_t kMask = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
                                IN_CLOSE_WRITE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF |
                                IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK;

void add_unique(std::vector<WatchPoint>& out, WatchPoint p) {
  if (std::find(out.begin(), out.end(), p) == out.end()) out.push_back(std::move(p));
}

}  // namespace

std::vector<fs::path> watched_files(const config::Config& cfg) {
  std::vector<fs::path> out;
  const auto secret = [&](const config::SecretSource& s) {
    if (s.kind == config::SecretSource::Kind::File) out.emplace_back(s.ref);
  };
  out.push_back(cfg.source);
  for (const auto& h : cfg.hsms) secret(h.pin_source);
  for (const auto& ks : cfg.keystores) {
    for (const auto& c : ks.credentials) secret(c.secret_source);
    if (!ks.policy_file.empty()) out.push_back(ks.policy_file);
  }
  if (cfg.tls.enabled) {
    for (const auto* p : {&cfg.tls.certificate, &cfg.tls.private_key, &cfg.tls.client_ca}) {
      if (!p->empty()) out.push_back(*p);
    }
  }
  for (auto& p : out) {
    std::error_code ec;
    const fs::path abs = fs::absolute(p, ec);
    p = (ec ? p : abs).lexically_normal();
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

std::vector<WatchPoint> watch_points(const fs::path& file) {
  std::vector<WatchPoint> out;
  std::error_code ec;
  fs::path p = fs::absolute(file, ec);
  if (ec) p = file;
  p = p.lexically_normal();
  for (int hops = 0; hops <= kMaxSymlinkHops; ++hops) {
    if (!p.has_filename() || !p.has_parent_path()) return out;
    add_unique(out, {p.parent_path(), p.filename().string()});
    // Walk the components from the root; at the first symlink, substitute its
    // target and start over with the resulting path.
    const std::vector<fs::path> parts(std::next(p.begin()), p.end());
    fs::path dir = p.root_path();
    bool substituted = false;
    for (std::size_t i = 0; i < parts.size(); ++i) {
      const fs::path entry = dir / parts[i];
      struct stat st {};
      if (::lstat(entry.c_str(), &st) != 0) {
        // Missing: its creation shows in the nearest directory that exists.
        add_unique(out, {dir, parts[i].string()});
        return out;
      }
      if (S_ISLNK(st.st_mode)) {
        add_unique(out, {dir, parts[i].string()});
        const fs::path target = fs::read_symlink(entry, ec);
        if (ec) return out;  // replaced meanwhile: the watch on `dir` sees it
        fs::path next = target.is_absolute() ? target : dir / target;
        for (std::size_t j = i + 1; j < parts.size(); ++j) next /= parts[j];
        p = next.lexically_normal();
        substituted = true;
        break;
      }
      dir = entry;
    }
    if (!substituted) return out;
  }
  return out;
}

struct ConfigWatch::Watch {
  int wd = -1;
  fs::path dir;
  // Entry names in this directory, each with the index of the watched file
  // (in current_) it matters to.
  std::vector<std::pair<std::string, std::size_t>> names;
};

ConfigWatch::ConfigWatch(std::vector<fs::path> files, std::chrono::milliseconds debounce,
                         Callback on_change)
    : debounce_(debounce), on_change_(std::move(on_change)), files_(std::move(files)) {
  inotify_fd_ = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd_ < 0) {
    throw std::runtime_error(std::string("reload.watch: inotify is not available: ") +
                             std::strerror(errno) +
                             "; raise fs.inotify.max_user_instances or set reload.watch: false");
  }
  wake_fd_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd_ < 0) {
    const int err = errno;
    ::close(inotify_fd_);  // never used: nothing to flush
    throw std::runtime_error(std::string("reload.watch: eventfd failed: ") + std::strerror(err));
  }
  current_ = files_;
  rebuild();  // watching before the constructor returns: no change is missed
  thread_ = std::thread([this] { run(); });
}

ConfigWatch::~ConfigWatch() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
  }
  (void)wake();
  if (thread_.joinable()) thread_.join();
  ::close(wake_fd_);     // nothing to flush
  ::close(inotify_fd_);  // closing drops every watch
}

bool ConfigWatch::wake() const {
  const std::uint64_t one = 1;
  return ::write(wake_fd_, &one, sizeof one) == sizeof one;
}

void ConfigWatch::set_files(std::vector<fs::path> files) {
  {
    const std::lock_guard lock(mutex_);
    files_ = std::move(files);
    files_changed_ = true;
  }
  // An eventfd counter only fails to grow at 2^64 - 2 pending wakes.
  (void)wake();
}

std::size_t ConfigWatch::watched_directories() const {
  const std::lock_guard lock(mutex_);
  return watched_dirs_;
}

void ConfigWatch::rebuild() {
  const auto& files = current_;
  std::map<fs::path, std::vector<std::pair<std::string, std::size_t>>> by_dir;
  for (std::size_t i = 0; i < files.size(); ++i) {
    for (auto& point : watch_points(files[i])) {
      by_dir[point.dir].emplace_back(std::move(point.name), i);
    }
  }
  // Add the new watches before removing the old ones: a directory watched
  // before and after keeps its descriptor (inotify returns the same one for
  // the same inode), so no event falls between the two.
  std::map<int, Watch> fresh;
  for (auto& [dir, names] : by_dir) {
    const int wd = ::inotify_add_watch(inotify_fd_, dir.c_str(), kMask);
    if (wd < 0) {
      const int err = errno;
      obs::warn("config_watch_failed",
                {{"directory", dir.string()},
                 {"error", std::strerror(err)},
                 {"detail", err == ENOSPC ? "fs.inotify.max_user_watches reached; raise it, or "
                                            "reload with SIGHUP"
                                          : "changes in this directory are not noticed; reload "
                                            "with SIGHUP"}});
      continue;
    }
    auto& w = fresh[wd];
    w.wd = wd;
    if (w.dir.empty()) w.dir = dir;
    w.names.insert(w.names.end(), names.begin(), names.end());
  }
  for (const auto& old : watches_) {
    if (fresh.count(old.wd) == 0) {
      // Fails only when the kernel already dropped it (its directory is gone).
      (void)::inotify_rm_watch(inotify_fd_, old.wd);
    }
  }
  watches_.clear();
  for (auto& [wd, w] : fresh) watches_.push_back(std::move(w));
  const std::lock_guard lock(mutex_);
  watched_dirs_ = watches_.size();
}

void ConfigWatch::run() {
  std::set<std::size_t> pending;  // indices into current_
  std::optional<Clock::time_point> first;
  Clock::time_point last{};
  alignas(inotify_event) std::array<char, 16 * 1024> buf{};

  for (;;) {
    int timeout_ms = -1;
    if (first) {
      const auto due = std::min(last + debounce_, *first + kMaxDebouncePeriods * debounce_);
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(due - Clock::now());
      timeout_ms = static_cast<int>(std::max<std::chrono::milliseconds::rep>(left.count(), 0));
    }
    std::array<pollfd, 2> fds{{{inotify_fd_, POLLIN, 0}, {wake_fd_, POLLIN, 0}}};
    const int n = ::poll(fds.data(), fds.size(), timeout_ms);
    if (n < 0 && errno != EINTR) {
      obs::error("config_watch_failed", {{"error", std::strerror(errno)},
                                         {"detail",
                                          "file changes are no longer noticed; "
                                          "reload with SIGHUP"}});
      return;
    }
    if (n > 0 && (fds[1].revents & POLLIN) != 0) {
      std::uint64_t count = 0;
      // Non-blocking: EAGAIN only if another read emptied it, which none does.
      (void)::read(wake_fd_, &count, sizeof count);
      std::optional<std::vector<fs::path>> files;
      {
        const std::lock_guard lock(mutex_);
        if (stop_) return;
        if (std::exchange(files_changed_, false)) files = files_;
      }
      if (files) {
        // Changes already noticed stay pending for the files still watched.
        std::set<std::size_t> remapped;
        for (const auto i : pending) {
          const auto it = std::find(files->begin(), files->end(), current_[i]);
          if (it != files->end()) remapped.insert(static_cast<std::size_t>(it - files->begin()));
        }
        current_ = std::move(*files);
        rebuild();
        pending = std::move(remapped);
        if (pending.empty()) first.reset();
      }
    }
    if (n > 0 && (fds[0].revents & POLLIN) != 0) {
      bool any = false;
      for (;;) {
        const ssize_t got = ::read(inotify_fd_, buf.data(), buf.size());
        if (got <= 0) break;  // EAGAIN: drained
        for (std::size_t off = 0; off < static_cast<std::size_t>(got);) {
          inotify_event ev{};
          std::memcpy(&ev, buf.data() + off, sizeof ev);
          // The kernel pads the name with NULs, at least one.
          const std::string_view entry =
              ev.len == 0 ? std::string_view{} : std::string_view(buf.data() + off + sizeof ev);
          off += sizeof ev + ev.len;
          if ((ev.mask & IN_Q_OVERFLOW) != 0) {
            // Events were lost: any file may have changed.
            for (std::size_t i = 0; i < current_.size(); ++i) pending.insert(i);
            any = true;
            continue;
          }
          const auto w = std::find_if(watches_.begin(), watches_.end(),
                                      [&](const Watch& x) { return x.wd == ev.wd; });
          // An unknown descriptor is one removed by rebuild (its last events).
          if (w == watches_.end()) continue;
          const bool whole_dir =
              (ev.mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED | IN_UNMOUNT)) != 0;
          for (const auto& [watched_name, index] : w->names) {
            if (whole_dir || watched_name == entry) {
              pending.insert(index);
              any = true;
            }
          }
        }
      }
      if (any) {
        last = Clock::now();
        if (!first) first = last;
      }
    }
    if (!first) continue;
    const auto now = Clock::now();
    if (now < last + debounce_ && now < *first + kMaxDebouncePeriods * debounce_) continue;
    // The changes have settled: resolve every chain again (a swap points the
    // links elsewhere), then ask for the reload.
    rebuild();
    std::vector<fs::path> changed;
    for (const auto i : pending) changed.push_back(current_[i]);
    if (on_change_(changed)) {
      pending.clear();
      first.reset();
    } else {
      first = last = Clock::now();  // asked again after another debounce period
    }
  }
}

}  // namespace xks::app
