#include "xks/policy/arn.hpp"

#include <array>

namespace xks::policy {

std::optional<ArnParts> parse_arn(std::string_view arn) noexcept {
  constexpr std::string_view kPrefix = "arn:";
  if (arn.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  std::array<std::string_view, 4> part{};  // partition, service, region, account
  std::size_t pos = kPrefix.size();
  for (std::string_view& p : part) {
    const std::size_t colon = arn.find(':', pos);
    if (colon == std::string_view::npos) return std::nullopt;
    p = arn.substr(pos, colon - pos);
    pos = colon + 1;
  }
  ArnParts r{part[0], part[1], part[2], part[3], arn.substr(pos)};
  if (r.partition.empty() || r.service.empty() || r.resource.empty()) return std::nullopt;
  return r;
}

std::optional<std::string_view> account_of(const ArnParts& parts) noexcept {
  if (parts.account.size() != 12) return std::nullopt;
  for (const char c : parts.account) {
    if (c < '0' || c > '9') return std::nullopt;
  }
  return parts.account;
}

std::optional<std::string_view> arn_account(std::string_view arn) noexcept {
  const auto parts = parse_arn(arn);
  if (!parts) return std::nullopt;
  return account_of(*parts);
}

std::optional<std::string_view> arn_region(std::string_view arn) noexcept {
  const auto parts = parse_arn(arn);
  if (!parts || parts->region.empty()) return std::nullopt;
  return parts->region;
}

}  // namespace xks::policy
