// A wildcard pattern compiled once, when a policy is loaded, and matched on the
// request path without allocating.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace xks::policy {

// Syntax: '*' matches any run of bytes (including none), '?' exactly one byte,
// '\' makes the next '*', '?' or '\' literal; every other byte is literal and
// case-sensitive (ARNs, key ids and operation names are case-sensitive).
// No regex: the pattern is split at its stars into literal segments, so a match is
// an anchored prefix, an anchored suffix and a left-to-right search for the middle
// segments, which is exact for globs and linear for star-only patterns.
class Glob {
 public:
  // nullopt when the pattern is unusable; `problem` then says why (empty pattern,
  // "**", a dangling or unknown '\' escape).
  static std::optional<Glob> compile(std::string_view pattern, std::string* problem = nullptr);

  bool matches(std::string_view value) const noexcept;

  const std::string& source() const noexcept { return source_; }  // as written
  bool has_wildcard() const noexcept;                             // any '*' or unescaped '?'

 private:
  struct Segment {
    std::string text;  // literal bytes, escapes resolved
    std::string wild;  // empty, or one byte per text byte: '?' = any byte here
  };
  static bool segment_at(const Segment& s, std::string_view v, std::size_t pos) noexcept;
  static std::size_t find_segment(const Segment& s, std::string_view v, std::size_t from,
                                  std::size_t end) noexcept;

  // Most policy values are a literal, "prefix*", "*suffix" or "*infix*": those are
  // matched from literal_ alone, without walking segments_ (one compare or find).
  enum class Kind : unsigned char { Exact, Prefix, Suffix, Infix, Any, General };
  Kind kind_ = Kind::General;
  std::string literal_;

  std::string source_;
  std::vector<Segment> segments_;  // stars_ + 1 segments; first/last may be empty
  std::size_t stars_ = 0;
  std::size_t min_length_ = 0;  // sum of segment lengths
};

}  // namespace xks::policy
