// The parts of an ARN that policies look at: account and region.
// Format (AWS General Reference, "Amazon Resource Names"):
//   arn:<partition>:<service>:<region>:<account-id>:<resource>
// where <resource> may itself contain ':' and '/'.
#pragma once

#include <optional>
#include <string_view>

namespace xks::policy {

struct ArnParts {
  std::string_view partition;  // "aws", "aws-cn", "aws-us-gov", ...
  std::string_view service;    // "iam", "sts", "kms", ...
  std::string_view region;     // empty for global services (IAM, STS principals)
  std::string_view account;    // empty for some services (e.g. S3 buckets)
  std::string_view resource;   // "role/Admin", "assumed-role/R/session", "key/<uuid>"
};

// nullopt unless `arn` starts with "arn:" and has the five ':' separators with a
// non-empty partition, service and resource. Views point into `arn`. No allocation.
std::optional<ArnParts> parse_arn(std::string_view arn) noexcept;

// The 12-digit account id of an ARN, or nullopt: for a service principal
// ("ec2.amazonaws.com"), "AWS Internal", an ARN without an account, or anything
// malformed (an account that is not exactly 12 ASCII digits).
std::optional<std::string_view> arn_account(std::string_view arn) noexcept;

// The account of parsed parts when it is exactly 12 ASCII digits, else nullopt.
std::optional<std::string_view> account_of(const ArnParts& parts) noexcept;

// The region of an ARN, or nullopt when it has none (IAM/STS ARNs) or is malformed.
std::optional<std::string_view> arn_region(std::string_view arn) noexcept;

}  // namespace xks::policy
