#include "xks/core/ascii.hpp"

namespace xks::core {

void append_quoted(std::string& out, std::string_view text) {
  out.push_back('"');
  for (const char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(ch);
    } else if (c < 0x20 || c > 0x7e) {
      out += "\\x";
      out.push_back(kHexLower[c >> 4]);
      out.push_back(kHexLower[c & 0x0f]);
    } else {
      out.push_back(ch);
    }
  }
  out.push_back('"');
}

}  // namespace xks::core
