// ConfigWatch on real files in a temp folder: in-place writes, replacement by
// rename, the kubelet's ..data symlink swap, debouncing, files that appear
// later, a busy callback, and what watched_files() lists for a configuration.
#include "xks/app/config_watch.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

namespace xks::app {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using ::testing::ElementsAre;
using ::testing::UnorderedElementsAre;

constexpr auto kDebounce = 100ms;
// Long enough for a debounced callback on a loaded 2-core machine.
constexpr auto kWait = 3s;
// Long enough to be sure no callback comes.
constexpr auto kQuiet = 400ms;

class Recorder {
 public:
  ConfigWatch::Callback callback() {
    return [this](const std::vector<fs::path>& changed) {
      if (busy_.load()) {
        ++refused_;
        return false;
      }
      const std::lock_guard lock(mutex_);
      calls_.push_back(changed);
      cv_.notify_all();
      return true;
    };
  }
  // Waits until at least `n` calls happened; returns the count.
  std::size_t wait_for(std::size_t n, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mutex_);
    cv_.wait_for(lock, timeout, [&] { return calls_.size() >= n; });
    return calls_.size();
  }
  std::size_t count() {
    const std::lock_guard lock(mutex_);
    return calls_.size();
  }
  std::vector<fs::path> call(std::size_t i) {
    const std::lock_guard lock(mutex_);
    return calls_.at(i);
  }
  std::atomic<bool> busy_{false};
  std::atomic<int> refused_{0};

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<std::vector<fs::path>> calls_;
};

class ConfigWatchTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "xks-watch-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { fs::remove_all(dir_); }

  static void write(const fs::path& p, const std::string& text) {
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::trunc) << text;
  }
  // As editors and `mv` do: a new file renamed over the old one.
  static void replace(const fs::path& p, const std::string& text) {
    const fs::path tmp = p.parent_path() / (p.filename().string() + ".tmp~");
    write(tmp, text);
    fs::rename(tmp, p);
  }

  // The kubelet's layout of a mounted volume: mount/..<ts>/<files>,
  // mount/..data -> ..<ts>, mount/<name> -> ..data/<name>.
  void kube_volume(const fs::path& mount, const std::string& ts,
                   const std::vector<std::pair<std::string, std::string>>& files) {
    fs::create_directories(mount / ts);
    for (const auto& [name, text] : files) write(mount / ts / name, text);
    fs::create_directory_symlink(ts, mount / "..data");
    for (const auto& [name, text] : files)
      fs::create_symlink(fs::path("..data") / name, mount / name);
  }
  // The kubelet's update: a new timestamped dir, ..data_tmp pointing at it,
  // renamed over ..data, symlinks for new names, the old dir removed.
  void kube_swap(const fs::path& mount, const std::string& old_ts, const std::string& ts,
                 const std::vector<std::pair<std::string, std::string>>& files) {
    fs::create_directories(mount / ts);
    for (const auto& [name, text] : files) write(mount / ts / name, text);
    fs::create_directory_symlink(ts, mount / "..data_tmp");
    fs::rename(mount / "..data_tmp", mount / "..data");
    for (const auto& [name, text] : files) {
      if (!fs::is_symlink(mount / name))
        fs::create_symlink(fs::path("..data") / name, mount / name);
    }
    fs::remove_all(mount / old_ts);
  }

  fs::path dir_;
  Recorder rec_;
};

TEST_F(ConfigWatchTest, AnInPlaceWriteCallsBackOnceAfterTheDebounce) {
  const fs::path cfg = dir_ / "xks-proxy.yaml";
  write(cfg, "a: 1\n");
  ConfigWatch watch({cfg}, kDebounce, rec_.callback());
  EXPECT_EQ(watch.watched_directories(), 1U);
  const auto start = std::chrono::steady_clock::now();
  write(cfg, "a: 2\n");
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_GE(std::chrono::steady_clock::now() - start, kDebounce);
  EXPECT_THAT(rec_.call(0), ElementsAre(cfg));
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 1U);
}

TEST_F(ConfigWatchTest, ReplacementByRenameIsSeenEveryTime) {
  const fs::path secret = dir_ / "secrets" / "sigv4.secret";
  write(secret, "one\n");
  ConfigWatch watch({secret}, kDebounce, rec_.callback());
  replace(secret, "two\n");
  ASSERT_EQ(rec_.wait_for(1), 1U);
  replace(secret, "three\n");
  ASSERT_EQ(rec_.wait_for(2), 2U);
  fs::remove(secret);
  ASSERT_EQ(rec_.wait_for(3), 3U);
  write(secret, "four\n");  // created again
  EXPECT_EQ(rec_.wait_for(4), 4U);
}

TEST_F(ConfigWatchTest, OtherFilesInTheSameDirectoryAreIgnored) {
  const fs::path cfg = dir_ / "xks-proxy.yaml";
  write(cfg, "a: 1\n");
  ConfigWatch watch({cfg}, kDebounce, rec_.callback());
  write(dir_ / ".xks-proxy.yaml.swp", "editor state");
  write(dir_ / "xks-proxy.log", "a log line\n");
  fs::create_directory(dir_ / "sub");
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 0U);
}

TEST_F(ConfigWatchTest, ABurstOfChangesIsOneCall) {
  const fs::path cfg = dir_ / "xks-proxy.yaml";
  const fs::path key = dir_ / "tls" / "server.key";
  write(cfg, "a: 0\n");
  write(key, "k0\n");
  ConfigWatch watch({cfg, key}, kDebounce, rec_.callback());
  for (int i = 1; i <= 10; ++i) {
    replace(cfg, "a: " + std::to_string(i) + "\n");
    write(key, "k" + std::to_string(i) + "\n");
    std::this_thread::sleep_for(10ms);
  }
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_THAT(rec_.call(0), UnorderedElementsAre(cfg, key));
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 1U);
}

TEST_F(ConfigWatchTest, KubeletSymlinkSwapsAreSeenOneCallEach) {
  const fs::path mount = dir_ / "secrets";
  kube_volume(mount, "..2026_12_02_10_00_00.1", {{"sigv4.secret", "one\n"}, {"hsm.pin", "1234\n"}});
  const fs::path secret = mount / "sigv4.secret";
  const fs::path pin = mount / "hsm.pin";
  ConfigWatch watch({secret, pin}, kDebounce, rec_.callback());

  kube_swap(mount, "..2026_12_02_10_00_00.1", "..2026_12_02_10_01_00.2",
            {{"sigv4.secret", "two\n"}, {"hsm.pin", "1234\n"}});
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_THAT(rec_.call(0), UnorderedElementsAre(secret, pin));
  std::this_thread::sleep_for(kQuiet);  // the old directory's removal is no change
  EXPECT_EQ(rec_.count(), 1U);

  // The chain was resolved again: the next swap is seen as well.
  kube_swap(mount, "..2026_12_02_10_01_00.2", "..2026_12_02_10_02_00.3",
            {{"sigv4.secret", "three\n"}, {"hsm.pin", "1234\n"}});
  ASSERT_EQ(rec_.wait_for(2), 2U);
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 2U);
}

TEST_F(ConfigWatchTest, AFileAddedToAVolumeBySwapIsSeen) {
  const fs::path mount = dir_ / "secrets";
  kube_volume(mount, "..1", {{"old.secret", "one\n"}});
  const fs::path fresh = mount / "new.secret";  // named before it exists
  ConfigWatch watch({mount / "old.secret", fresh}, kDebounce, rec_.callback());
  kube_swap(mount, "..1", "..2", {{"old.secret", "one\n"}, {"new.secret", "two\n"}});
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_THAT(rec_.call(0), ::testing::Contains(fresh));
}

TEST_F(ConfigWatchTest, AFileInAMissingDirectoryIsSeenWhenCreated) {
  const fs::path policy = dir_ / "policies" / "one.yaml";
  ConfigWatch watch({policy}, kDebounce, rec_.callback());
  write(policy, "statements: []\n");
  ASSERT_GE(rec_.wait_for(1), 1U);
  // Now watched in its own directory.
  const auto before = rec_.count();
  std::this_thread::sleep_for(kQuiet);
  write(policy, "statements: [1]\n");
  EXPECT_GT(rec_.wait_for(before + 1), before);
}

TEST_F(ConfigWatchTest, ABusyCallbackIsAskedAgainAfterTheDebounce) {
  const fs::path cfg = dir_ / "xks-proxy.yaml";
  write(cfg, "a: 1\n");
  ConfigWatch watch({cfg}, kDebounce, rec_.callback());
  rec_.busy_ = true;
  write(cfg, "a: 2\n");
  for (int i = 0; i < 100 && rec_.refused_ < 2; ++i) std::this_thread::sleep_for(20ms);
  EXPECT_GE(rec_.refused_.load(), 2);  // asked, refused, asked again
  rec_.busy_ = false;
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_THAT(rec_.call(0), ElementsAre(cfg));
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 1U);
}

TEST_F(ConfigWatchTest, SetFilesWatchesTheNewSet) {
  const fs::path a = dir_ / "a" / "one.secret";
  const fs::path b = dir_ / "b" / "two.secret";
  write(a, "1\n");
  write(b, "2\n");
  ConfigWatch watch({a}, kDebounce, rec_.callback());
  watch.set_files({b});
  std::this_thread::sleep_for(100ms);  // the watch thread applies the new set meanwhile
  write(a, "1b\n");
  std::this_thread::sleep_for(kQuiet);
  EXPECT_EQ(rec_.count(), 0U) << "a is no longer watched";
  write(b, "2b\n");
  ASSERT_EQ(rec_.wait_for(1), 1U);
  EXPECT_THAT(rec_.call(0), ElementsAre(b));
}

TEST(WatchPoints, FollowTheKubeletChainToTheRealFile) {
  std::string tmpl = (fs::temp_directory_path() / "xks-watch-points-XXXXXX").string();
  ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
  const fs::path m = tmpl;
  fs::create_directories(m / "..ts1");
  std::ofstream(m / "..ts1" / "tls.crt") << "x";
  fs::create_directory_symlink("..ts1", m / "..data");
  fs::create_symlink("..data/tls.crt", m / "tls.crt");
  const auto points = watch_points(m / "tls.crt");
  EXPECT_THAT(points, ::testing::Contains(WatchPoint{m, "tls.crt"}));
  EXPECT_THAT(points, ::testing::Contains(WatchPoint{m, "..data"}));
  EXPECT_THAT(points, ::testing::Contains(WatchPoint{m / "..ts1", "tls.crt"}));
  // A missing file in a missing folder: watched where the folder would appear.
  EXPECT_THAT(watch_points(m / "nope" / "x.pem"),
              ElementsAre(WatchPoint{m / "nope", "x.pem"}, WatchPoint{m, "nope"}));
  fs::remove_all(m);
}

TEST(WatchedFiles, ListTheConfigEveryFileSecretTlsFilesAndPolicies) {
  config::Config c;
  c.source = "/etc/xks/xks-proxy.yaml";
  c.tls.enabled = true;
  c.tls.certificate = "/etc/xks/tls/tls.crt";
  c.tls.private_key = "/etc/xks/tls/tls.key";
  config::HsmConfig h;
  h.pin_source = {config::SecretSource::Kind::File, "/etc/xks/secrets/hsm.pin"};
  config::HsmConfig h2;
  h2.pin_source = {config::SecretSource::Kind::Env, "XKS_PIN"};
  c.hsms = {h, h2};
  config::KeyStore ks;
  config::Credential cr1;
  cr1.secret_source = {config::SecretSource::Kind::File, "/etc/xks/secrets/a.secret"};
  config::Credential cr2;
  cr2.secret_source = {config::SecretSource::Kind::File, "/etc/xks/secrets/b.secret"};
  ks.credentials = {cr1, cr2, cr1};
  ks.policy_file = "/etc/xks/policy.yaml";
  c.keystores = {ks};
  EXPECT_THAT(watched_files(c),
              ElementsAre(fs::path("/etc/xks/policy.yaml"), fs::path("/etc/xks/secrets/a.secret"),
                          fs::path("/etc/xks/secrets/b.secret"),
                          fs::path("/etc/xks/secrets/hsm.pin"), fs::path("/etc/xks/tls/tls.crt"),
                          fs::path("/etc/xks/tls/tls.key"), fs::path("/etc/xks/xks-proxy.yaml")));
  c.tls.enabled = false;
  EXPECT_EQ(watched_files(c).size(), 5U);
}

}  // namespace
}  // namespace xks::app
