#include "xks/core/json_text.hpp"
#include "xks/core/ascii.hpp"

#include <array>
#include <cstddef>

namespace xks::core {
namespace {

// Bytes that go into a JSON string literal unchanged: printable ASCII and DEL,
// except '"' and '\'. Everything else takes the slow path below.
constexpr std::array<bool, 256> make_plain_table() {
  std::array<bool, 256> t{};
  for (std::size_t c = 0x20; c < 0x80; ++c) t[c] = true;
  t['"'] = false;
  t['\\'] = false;
  return t;
}
constexpr std::array<bool, 256> kPlain = make_plain_table();

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD in UTF-8

void append_escaped_ascii(std::string& out, unsigned char c) {
  switch (c) {
    case '"': out.append("\\\""); return;
    case '\\': out.append("\\\\"); return;
    case '\b': out.append("\\b"); return;
    case '\t': out.append("\\t"); return;
    case '\n': out.append("\\n"); return;
    case '\f': out.append("\\f"); return;
    case '\r': out.append("\\r"); return;
    default: {
      // Other control characters; lower-case hex, as nlohmann writes them.
      const char esc[] = {'\\', 'u', '0', '0', kHexLower[c >> 4], kHexLower[c & 0x0f]};
      out.append(esc, sizeof esc);
      return;
    }
  }
}

// At p (a byte >= 0x80): the length of the well-formed UTF-8 sequence there
// (Unicode Table 3-7), or, negated, how many bytes form the ill-formed prefix
// that one U+FFFD replaces. That prefix ends just before the first byte that
// cannot continue the sequence (the byte is then read again on its own) or at
// the end of the input: exactly where nlohmann's UTF-8 automaton rejects.
std::ptrdiff_t utf8_sequence(const unsigned char* p, const unsigned char* end) noexcept {
  const unsigned char lead = *p;
  std::ptrdiff_t need = 0;
  unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead == 0xE0) {
    need = 2, lo = 0xA0;  // no overlong forms
  } else if (lead == 0xED) {
    need = 2, hi = 0x9F;  // no surrogates
  } else if (lead >= 0xE1 && lead <= 0xEF) {
    need = 2;
  } else if (lead == 0xF0) {
    need = 3, lo = 0x90;  // no overlong forms
  } else if (lead == 0xF4) {
    need = 3, hi = 0x8F;  // nothing above U+10FFFF
  } else if (lead >= 0xF1 && lead <= 0xF3) {
    need = 3;
  } else {
    return -1;  // continuation byte, C0, C1 or F5..FF: never a lead
  }
  for (std::ptrdiff_t i = 1; i <= need; ++i) {
    if (p + i == end || p[i] < lo || p[i] > hi) return -i;
    lo = 0x80, hi = 0xBF;
  }
  return need + 1;
}

}  // namespace

void append_json_string(std::string& out, std::string_view s) {
  out.push_back('"');
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());  // NOLINT
  const auto* const end = p + s.size();
  while (p != end) {
    const auto* run = p;
    while (p != end && kPlain[*p]) ++p;
    out.append(reinterpret_cast<const char*>(run), static_cast<std::size_t>(p - run));  // NOLINT
    if (p == end) break;
    if (*p < 0x80) {
      append_escaped_ascii(out, *p);
      ++p;
      continue;
    }
    const std::ptrdiff_t n = utf8_sequence(p, end);
    if (n > 0) {
      out.append(reinterpret_cast<const char*>(p), static_cast<std::size_t>(n));  // NOLINT
      p += n;
    } else {
      out.append(kReplacement);
      p -= n;
    }
  }
  out.push_back('"');
}

bool json_safe(std::string_view text) noexcept {
  const auto* p = reinterpret_cast<const unsigned char*>(text.data());  // NOLINT
  const auto* const end = p + text.size();
  while (p != end) {
    if (kPlain[*p]) {
      ++p;
      continue;
    }
    if (*p < 0x80) return false;
    const std::ptrdiff_t n = utf8_sequence(p, end);
    if (n <= 0) return false;
    p += n;
  }
  return true;
}

}  // namespace xks::core
