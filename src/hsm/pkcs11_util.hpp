// Small helpers shared by the hsm sources (not a public header).
#pragma once

#include <p11-kit/pkcs11.h>

#include <cstddef>
#include <string>
#include <string_view>

namespace xks::hsm::detail {

// A blank-padded CK_*_INFO text field without its padding (and without any NUL
// a sloppy module leaves in it).
template <std::size_t N>
std::string padded_field(const unsigned char (&field)[N]) {
  std::string s(reinterpret_cast<const char*>(field), N);  // NOLINT: PKCS#11 chars
  if (const auto nul = s.find('\0'); nul != std::string::npos) s.resize(nul);
  const auto end = s.find_last_not_of(' ');
  s.resize(end == std::string::npos ? 0 : end + 1);
  return s;
}

inline std::string version_string(const CK_VERSION& v) {
  return std::to_string(unsigned{v.major}) + "." + std::to_string(unsigned{v.minor});
}

}  // namespace xks::hsm::detail
