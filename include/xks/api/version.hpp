// The proxy's identity as GetHealthStatus reports it (xksProxyVendor,
// xksProxyModel: "SHOULD include the product name and version").
#pragma once

#include <string_view>

namespace xks::api {

inline constexpr std::string_view kVersion = "0.1.0";
inline constexpr std::string_view kProxyVendor = "xks-proxy project";
inline constexpr std::string_view kProxyModel = "xks-proxy 0.1.0";

static_assert(kProxyModel.ends_with(kVersion), "kProxyModel must carry kVersion");

}  // namespace xks::api
