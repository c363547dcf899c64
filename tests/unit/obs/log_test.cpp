// The logger against real files: JSON and text lines, size rotation keeping
// max_files complete files, the daily file name, private file mode, switching
// destination on reload, and an unopenable path failing with its name.
#include "xks/obs/log.hpp"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

namespace xks::obs {
namespace {

namespace fs = std::filesystem;
using config::LogFileConfig;
using config::LoggingConfig;
using ::testing::HasSubstr;

class LogTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "xks-log-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    init_logging(LoggingConfig{});  // back to stdout, closing the files
    fs::remove_all(dir_);
  }

  LoggingConfig to_file(LogFileConfig::Rotate rotate = LogFileConfig::Rotate::Size) const {
    LoggingConfig c;
    c.file = LogFileConfig{};
    c.file->path = dir_ / "xks.log";
    c.file->rotate = rotate;
    return c;
  }

  static std::vector<std::string> lines_of(const fs::path& p) {
    std::ifstream in(p);
    std::vector<std::string> out;
    for (std::string line; std::getline(in, line);) out.push_back(line);
    return out;
  }

  fs::path dir_;
};

TEST_F(LogTest, JsonLinesKeepFieldOrderAndStayValid) {
  init_logging(to_file());
  {
    Line line(Level::Info, "access");
    line.add("kmsRequestId", "r-1")
        .add("status", std::int64_t{200})
        .add("principal", std::string("bad \"quote\" \xFF and\nnewline"))
        .add("changes", nlohmann::json::array({"a", "b"}));
  }
  info("starting", {{"version", "1.0"}, {"port", 8443}});
  flush();
  const auto lines = lines_of(dir_ / "xks.log");
  ASSERT_EQ(lines.size(), 2U);
  const auto j = nlohmann::json::parse(lines[0]);
  EXPECT_EQ(j["event"], "access");
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["kmsRequestId"], "r-1");
  EXPECT_EQ(j["status"], 200);
  EXPECT_EQ(j["principal"], "bad \"quote\" \xEF\xBF\xBD and\nnewline");
  EXPECT_EQ(j["changes"], nlohmann::json::array({"a", "b"}));
  EXPECT_LT(lines[0].find("kmsRequestId"), lines[0].find("status"));  // order as added
  EXPECT_EQ(nlohmann::json::parse(lines[1])["port"], 8443);
}

TEST_F(LogTest, TextLinesQuoteOnlyWhatNeedsIt) {
  auto c = to_file();
  c.format = LoggingConfig::Format::Text;
  init_logging(c);
  Line(Level::Warn, "reload_refused").add("config", "/etc/x.yaml").add("error", "bad value");
  flush();
  const auto lines = lines_of(dir_ / "xks.log");
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_THAT(lines[0],
              HasSubstr(" warning reload_refused config=/etc/x.yaml error=\"bad value\""));
}

TEST_F(LogTest, LevelFiltersLines) {
  auto c = to_file();
  c.level = "warn";
  init_logging(c);
  EXPECT_FALSE(enabled(Level::Info));
  info("dropped");
  warn("kept");
  flush();
  const auto lines = lines_of(dir_ / "xks.log");
  ASSERT_EQ(lines.size(), 1U);
  EXPECT_THAT(lines[0], HasSubstr("\"kept\""));
}

TEST_F(LogTest, SizeRotationKeepsMaxFilesOfWholeLines) {
  auto c = to_file();
  c.file->max_size_mb = 1;
  c.file->max_files = 2;
  init_logging(c);
  const std::string filler(200, 'x');
  constexpr int kLines = 20000;  // ~4.7 MB: three rotations at 1 MiB
  for (int i = 0; i < kLines; ++i) {
    Line(Level::Info, "access").add("seq", std::int64_t{i}).add("filler", filler);
  }
  flush();
  EXPECT_TRUE(fs::exists(dir_ / "xks.log"));
  EXPECT_TRUE(fs::exists(dir_ / "xks.1.log"));
  EXPECT_TRUE(fs::exists(dir_ / "xks.2.log"));
  EXPECT_FALSE(fs::exists(dir_ / "xks.3.log"));  // beyond max_files: deleted
  // Oldest kept file first; every line whole; sequence numbers contiguous up to the last one.
  std::int64_t expect = -1;
  for (const char* name : {"xks.2.log", "xks.1.log", "xks.log"}) {
    EXPECT_LE(fs::file_size(dir_ / name), 1024U * 1024U) << name;
    for (const auto& line : lines_of(dir_ / name)) {
      const auto j = nlohmann::json::parse(line);  // throws on a torn line
      const std::int64_t seq = j["seq"];
      if (expect >= 0) EXPECT_EQ(seq, expect) << name;
      expect = seq + 1;
    }
  }
  EXPECT_EQ(expect, kLines);
}

TEST_F(LogTest, LogFilesAreNotWorldReadable) {
  const mode_t old = ::umask(0);
  init_logging(to_file());
  info("one");
  flush();
  ::umask(old);
  struct stat st {};
  ASSERT_EQ(::stat((dir_ / "xks.log").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0640U);
}

TEST_F(LogTest, DailyRotationNamesTheFileByDate) {
  auto c = to_file(LogFileConfig::Rotate::Daily);
  c.file->daily_hour = 0;
  init_logging(c);
  info("one");
  flush();
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  ::localtime_r(&now, &tm);
  char name[32];
  std::strftime(name, sizeof name, "xks_%Y-%m-%d.log", &tm);
  ASSERT_TRUE(fs::exists(dir_ / name)) << name;
  EXPECT_EQ(lines_of(dir_ / name).size(), 1U);
}

TEST_F(LogTest, ReloadSwitchesDestinationWithoutLosingLines) {
  init_logging(to_file());
  info("first");
  auto c = to_file();
  c.file->path = dir_ / "other.log";
  init_logging(c);  // the old file is flushed and left
  info("second");
  flush();
  EXPECT_EQ(lines_of(dir_ / "xks.log").size(), 1U);
  ASSERT_EQ(lines_of(dir_ / "other.log").size(), 1U);
  EXPECT_THAT(lines_of(dir_ / "other.log")[0], HasSubstr("second"));
}

TEST_F(LogTest, WarningsAreWrittenAtOnceWhenBuffering) {
  auto c = to_file();
  c.flush_interval = std::chrono::milliseconds(60000);
  init_logging(c);
  info("buffered");
  warn("urgent");  // flushes everything before it too
  const auto lines = lines_of(dir_ / "xks.log");
  ASSERT_EQ(lines.size(), 2U);
  EXPECT_THAT(lines[1], HasSubstr("urgent"));
}

TEST_F(LogTest, BufferedLinesAreWrittenByTheFlusher) {
  auto c = to_file();
  c.flush_interval = std::chrono::milliseconds(50);
  init_logging(c);
  info("buffered");
  for (int i = 0; i < 200 && lines_of(dir_ / "xks.log").empty(); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(lines_of(dir_ / "xks.log").size(), 1U);
}

TEST_F(LogTest, UnopenableFileFailsNamingIt) {
  std::ofstream(dir_ / "not-a-folder") << "x";  // even root cannot create a file below a file
  auto c = to_file();
  c.file->path = dir_ / "not-a-folder/xks.log";
  try {
    init_logging(c);
    ADD_FAILURE() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_THAT(e.what(), HasSubstr("logging.file.path"));
    EXPECT_THAT(e.what(), HasSubstr((dir_ / "not-a-folder/xks.log").string()));
  }
}

}  // namespace
}  // namespace xks::obs
