// `xksctl policy check` and `xksctl policy test`, so that operators can
// validate a policy and give it its own tests before a reload applies it.
// The xksctl dispatcher calls the *_main functions; the stream versions are the
// same commands for unit tests.
#pragma once

#include <iosfwd>
#include <span>
#include <string_view>

namespace xks::policy {

// Exit codes shared by both commands.
inline constexpr int kExitAllow = 0;  // check: the policy is valid
inline constexpr int kExitDeny = 1;   // test: the policy denies (also in dry-run)
inline constexpr int kExitUsage = 2;  // bad arguments, unreadable/invalid policy or request

// argv[0] is the command's name (used in the usage text only); argv[1..argc) are
// the words after `xksctl policy check` / `xksctl policy test`.
//   check <policy.yaml>
//   test  <policy.yaml> <request.json> [--api NAME] [--key ID] [--quiet]
int policy_check_main(int argc, char** argv);
int policy_test_main(int argc, char** argv);

// The same, with the arguments after the command name and explicit streams.
int policy_check(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);
int policy_test(std::span<const std::string_view> args, std::ostream& out, std::ostream& err);

}  // namespace xks::policy
