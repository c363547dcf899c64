// Command-line plumbing shared by the xksctl subcommands: a small option parser
// and the one-line usage error every subcommand reports its misuse with.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace xks::tools {

// The command line is wrong (unknown option, missing value, bad number). main()
// prints what() on one line and exits 2, the conventional "usage" status.
class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Options of one subcommand: "--name VALUE", "--name=VALUE" and flags "--name".
// Anything else not starting with "--" is positional. Unknown options are a
// UsageError rather than ignored, so a typo never silently changes behaviour.
class Args {
 public:
  Args(int argc, char** argv, int first, std::vector<std::string_view> valued,
       std::vector<std::string_view> flags, std::string_view command);

  bool help() const noexcept { return help_; }
  bool flag(std::string_view name) const;
  std::optional<std::string> get(std::string_view name) const;
  std::string get_or(std::string_view name, std::string_view fallback) const;
  // The value, or a UsageError naming the option and what it is for.
  std::string require(std::string_view name, std::string_view what) const;
  // Whole numbers in [min, max]; UsageError otherwise.
  std::optional<unsigned long long> number(std::string_view name, unsigned long long min,
                                           unsigned long long max) const;
  std::optional<double> decimal(std::string_view name, double min, double max) const;
  const std::vector<std::string>& positional() const noexcept { return positional_; }
  const std::string& command() const noexcept { return command_; }

 private:
  std::string command_;
  std::map<std::string, std::string, std::less<>> values_;
  std::vector<std::string> flags_;
  std::vector<std::string> positional_;
  bool help_ = false;
};

// Subcommands: each returns the process exit status.
int credentials_main(int argc, char** argv);  // xksctl credentials new
int kms_config_main(int argc, char** argv);   // xksctl kms-config
int keys_main(int argc, char** argv);         // xksctl keys create|list
int call_main(int argc, char** argv);         // xksctl call health|metadata|encrypt|decrypt
int doctor_main(int argc, char** argv);       // xksctl doctor
int bench_main(int argc, char** argv);        // xksctl bench

}  // namespace xks::tools
