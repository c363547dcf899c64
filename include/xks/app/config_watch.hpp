// reload.watch: notices changes to the files a configuration reads (the file
// itself, secret files, TLS files, policies) with inotify, and asks for a
// reload once the changes have settled.
//
// Directories are watched, not files: an editor or `mv` replaces a file by
// rename (a new inode), and Kubernetes updates a mounted Secret or ConfigMap by
// an atomic symlink swap. There `file -> ..data/file` and
// `..data -> ..<timestamp>/`; the kubelet writes a new timestamped directory,
// points `..data_tmp` at it, rename()s `..data_tmp` over `..data` and removes
// the old directory. Every symlink on the way to a file is watched in its own
// directory, and the chain is resolved again after each change, so the next
// swap is seen too.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "xks/config/config.hpp"

namespace xks::app {

// The files whose change should reload `cfg`: the configuration file, every
// file secret (credential secrets, HSM PINs), the TLS certificate, key and
// client CA, and the key stores' policy files. Sorted, without duplicates.
std::vector<std::filesystem::path> watched_files(const config::Config& cfg);

// One (directory, entry name) pair whose change may change what `file`
// resolves to or contains: the entry of `file` in its directory, every symlink
// met while resolving it (in the directory that holds the link), and the
// resolved file in its real directory. A missing component is watched in the
// nearest existing directory, so that its creation is seen.
struct WatchPoint {
  std::filesystem::path dir;
  std::string name;
  bool operator==(const WatchPoint&) const = default;
};
std::vector<WatchPoint> watch_points(const std::filesystem::path& file);

class ConfigWatch {
 public:
  // Called on the watch thread when watched files changed and no further
  // change came for `debounce`. `changed` lists the watched files concerned.
  // Returns false when the reload cannot start now (one is running): it is
  // asked for again after another `debounce`.
  using Callback = std::function<bool(const std::vector<std::filesystem::path>& changed)>;

  // Starts watching at once. Throws std::runtime_error when inotify is not
  // available (e.g. fs.inotify.max_user_instances reached).
  ConfigWatch(std::vector<std::filesystem::path> files, std::chrono::milliseconds debounce,
              Callback on_change);
  ~ConfigWatch();
  ConfigWatch(const ConfigWatch&) = delete;
  ConfigWatch& operator=(const ConfigWatch&) = delete;

  // Replaces the set of watched files (after a reload names other files).
  void set_files(std::vector<std::filesystem::path> files);

  std::chrono::milliseconds debounce() const noexcept { return debounce_; }
  // Directories currently watched (for the log and tests).
  std::size_t watched_directories() const;

 private:
  struct Watch;
  void run();
  void rebuild();  // watches what current_ resolves to now; watch thread only
  bool wake() const;

  const std::chrono::milliseconds debounce_;
  const Callback on_change_;
  int inotify_fd_ = -1;
  int wake_fd_ = -1;  // eventfd: stop, or a new file set

  mutable std::mutex mutex_;
  std::vector<std::filesystem::path> files_;    // guarded by mutex_
  bool files_changed_ = false;                  // guarded by mutex_
  bool stop_ = false;                           // guarded by mutex_
  std::vector<std::filesystem::path> current_;  // watch thread only (after construction)
  std::vector<Watch> watches_;                  // watch thread only (after construction)
  std::size_t watched_dirs_ = 0;                // guarded by mutex_
  std::thread thread_;
};

}  // namespace xks::app
