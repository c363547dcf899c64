// A driver for the libFuzzer targets without libFuzzer, so that the test build
// (g++, ASan/UBSan) runs them in `make test`: every input file named on the
// command line (or inside a named directory) is run once, then random
// mutations of those inputs (bit flips, byte edits, inserts, deletions,
// duplicated and spliced ranges) are run for --seconds. It has no coverage
// feedback; `make fuzz` (scripts/fuzz.sh) runs the same targets under libFuzzer
// for the long, coverage-guided runs.
//
// Usage: <target>_smoke [--seconds N] [--seed S] [--artifacts DIR] PATH...
// A target that fails (abort, sanitizer report, crash) leaves the input that
// did it in DIR/crash-<pid> (default: the working directory) and exits non-zero.
#include <fcntl.h>
#include <sanitizer/common_interface_defs.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size);

namespace {

using Bytes = std::vector<std::uint8_t>;
constexpr std::size_t kMaxLen = 65536;  // scripts/fuzz.sh's -max_len

// The input being run, for the crash handlers (which may only use
// async-signal-safe calls: open, write, close).
const Bytes* g_current = nullptr;
char g_crash_path[4096] = {};

void write_current_input() {
  if (g_current == nullptr || g_crash_path[0] == '\0') return;
  const int fd = ::open(g_crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) return;
  std::size_t off = 0;
  while (off < g_current->size()) {
    const ssize_t n = ::write(fd, g_current->data() + off, g_current->size() - off);
    if (n <= 0) break;
    off += static_cast<std::size_t>(n);
  }
  ::close(fd);
  static constexpr char kMsg[] = "fuzz smoke: the failing input was written to ";
  (void)!::write(2, kMsg, sizeof kMsg - 1);
  (void)!::write(2, g_crash_path, std::strlen(g_crash_path));
  (void)!::write(2, "\n", 1);
}

extern "C" void on_signal(int sig) {
  write_current_input();
  std::signal(sig, SIG_DFL);
  std::raise(sig);
}

void load(const std::filesystem::path& path, std::vector<Bytes>& pool) {
  if (std::filesystem::is_directory(path)) {
    std::vector<std::filesystem::path> files;
    for (const auto& e : std::filesystem::directory_iterator(path)) {
      if (e.is_regular_file()) files.push_back(e.path());
    }
    std::sort(files.begin(), files.end());  // the same order, hence the same run, each time
    for (const auto& f : files) load(f, pool);
    return;
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "fuzz smoke: cannot read %s\n", path.c_str());
    std::exit(2);
  }
  Bytes data{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  if (data.size() > kMaxLen) data.resize(kMaxLen);
  pool.push_back(std::move(data));
}

void run(const Bytes& input) {
  g_current = &input;
  LLVMFuzzerTestOneInput(input.data(), input.size());
  g_current = nullptr;
}

// One random edit of `in`, drawing on `pool` for splices.
Bytes mutate(const Bytes& in, const std::vector<Bytes>& pool, std::mt19937_64& rng) {
  Bytes out = in;
  auto pick = [&](std::size_t n) { return n == 0 ? 0 : static_cast<std::size_t>(rng() % n); };
  static constexpr std::uint8_t kInteresting[] = {0,   1,   0x7f, 0x80, 0xff, '"', '\\', '/',
                                                  '.', '%', '=',  '&',  '{',  '}', '\n', ' '};
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int i = 0; i < edits; ++i) {
    switch (rng() % 7) {
      case 0:
        if (!out.empty()) out[pick(out.size())] ^= static_cast<std::uint8_t>(1u << (rng() % 8));
        break;
      case 1:
        if (!out.empty()) out[pick(out.size())] = kInteresting[pick(sizeof kInteresting)];
        break;
      case 2:
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(pick(out.size() + 1)),
                   static_cast<std::uint8_t>(rng()));
        break;
      case 3:
        if (!out.empty()) out.erase(out.begin() + static_cast<std::ptrdiff_t>(pick(out.size())));
        break;
      case 4:  // duplicate a range in place
        if (!out.empty()) {
          const std::size_t from = pick(out.size());
          const std::size_t len = 1 + pick(std::min<std::size_t>(out.size() - from, 64));
          const Bytes chunk(out.begin() + static_cast<std::ptrdiff_t>(from),
                            out.begin() + static_cast<std::ptrdiff_t>(from + len));
          out.insert(out.begin() + static_cast<std::ptrdiff_t>(pick(out.size() + 1)), chunk.begin(),
                     chunk.end());
        }
        break;
      case 5:  // splice: a prefix of this input, a suffix of another
        if (!pool.empty()) {
          const Bytes& other = pool[pick(pool.size())];
          out.resize(pick(out.size() + 1));
          out.insert(out.end(), other.begin() + static_cast<std::ptrdiff_t>(pick(other.size() + 1)),
                     other.end());
        }
        break;
      default: out.resize(pick(out.size() + 1)); break;
    }
  }
  if (out.size() > kMaxLen) out.resize(kMaxLen);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  double seconds = 2;
  // A new seed each run explores further over many runs; it is printed, and
  // --seed repeats a run exactly.
  std::uint64_t seed = std::random_device{}();
  std::filesystem::path artifacts = ".";
  std::vector<Bytes> pool;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--seconds" || arg == "--seed" || arg == "--artifacts") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (arg == "--seconds") seconds = std::stod(value);
      if (arg == "--seed") seed = std::stoull(value);
      if (arg == "--artifacts") artifacts = value;
    } else if (arg.rfind("--", 0) == 0) {
      std::fprintf(stderr, "fuzz smoke: unknown option %s\n", arg.c_str());
      return 2;
    } else {
      load(arg, pool);
    }
  }
  const std::string crash = (artifacts / ("crash-" + std::to_string(::getpid()))).string();
  if (crash.size() >= sizeof g_crash_path) return 2;
  std::memcpy(g_crash_path, crash.c_str(), crash.size() + 1);
  std::signal(SIGABRT, on_signal);
  std::signal(SIGSEGV, on_signal);
  std::signal(SIGFPE, on_signal);
  __sanitizer_set_death_callback(write_current_input);

  for (const Bytes& input : pool) run(input);
  const std::size_t replayed = pool.size();
  if (pool.empty()) pool.emplace_back();

  std::mt19937_64 rng(seed);
  std::uint64_t execs = 0;
  const auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
  while (std::chrono::steady_clock::now() < end) {
    // Mostly mutate the given inputs; sometimes grow a mutant further.
    Bytes input = mutate(pool[rng() % pool.size()], pool, rng);
    for (int depth = 0; depth < 8; ++depth) {
      run(input);
      ++execs;
      if (rng() % 2 == 0) break;
      input = mutate(input, pool, rng);
    }
  }
  std::printf("fuzz smoke: %zu inputs replayed, %llu mutations run in %g s (seed %llu)\n", replayed,
              static_cast<unsigned long long>(execs), seconds,
              static_cast<unsigned long long>(seed));
  return 0;
}
