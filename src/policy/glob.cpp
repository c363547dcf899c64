#include "xks/policy/glob.hpp"

#include <utility>

namespace xks::policy {
namespace {

// Policy literals are short and usually differ from the value within the first
// bytes, so an inline loop beats a call to memcmp (the hot spot in the bench).
inline bool bytes_equal(const char* a, const char* b, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return false;
  }
  return true;
}

}  // namespace

std::optional<Glob> Glob::compile(std::string_view pattern, std::string* problem) {
  auto fail = [&](std::string why) -> std::optional<Glob> {
    if (problem != nullptr) *problem = std::move(why);
    return std::nullopt;
  };
  if (pattern.empty()) return fail("empty pattern");

  Glob g;
  g.source_ = std::string(pattern);
  g.segments_.emplace_back();
  for (std::size_t i = 0; i < pattern.size(); ++i) {
    const char c = pattern[i];
    if (c == '*') {
      // "**" means the same as "*"; refusing it keeps patterns in one spelling
      // and catches a glob-star habit ("**" does not cross anything special here).
      if (i + 1 < pattern.size() && pattern[i + 1] == '*') {
        return fail("\"**\" at position " + std::to_string(i) + " (use a single '*')");
      }
      ++g.stars_;
      g.segments_.emplace_back();
      continue;
    }
    Segment& seg = g.segments_.back();
    char literal = c;
    bool any = false;
    if (c == '\\') {
      if (i + 1 == pattern.size()) return fail("dangling '\\' at the end");
      const char next = pattern[i + 1];
      if (next != '*' && next != '?' && next != '\\') {
        return fail(std::string("unknown escape '\\") + next + "' (only \\*, \\? and \\\\)");
      }
      literal = next;
      ++i;
    } else if (c == '?') {
      any = true;
    }
    if (any && seg.wild.empty()) seg.wild.assign(seg.text.size(), '.');
    seg.text.push_back(literal);
    if (!seg.wild.empty() || any) seg.wild.push_back(any ? '?' : '.');
  }
  for (const Segment& s : g.segments_) g.min_length_ += s.text.size();

  const auto& segs = g.segments_;
  bool any_q = false;
  for (const Segment& s : segs) any_q = any_q || !s.wild.empty();
  if (!any_q) {
    if (g.stars_ == 0) {
      g.kind_ = Kind::Exact;
      g.literal_ = segs[0].text;
    } else if (g.stars_ == 1 && segs[1].text.empty()) {
      g.kind_ = segs[0].text.empty() ? Kind::Any : Kind::Prefix;
      g.literal_ = segs[0].text;
    } else if (g.stars_ == 1 && segs[0].text.empty()) {
      g.kind_ = Kind::Suffix;
      g.literal_ = segs[1].text;
    } else if (g.stars_ == 2 && segs[0].text.empty() && segs[2].text.empty()) {
      g.kind_ = Kind::Infix;
      g.literal_ = segs[1].text;
    }
  }
  return g;
}

bool Glob::has_wildcard() const noexcept {
  if (stars_ > 0) return true;
  for (const Segment& s : segments_) {
    if (!s.wild.empty()) return true;
  }
  return false;
}

bool Glob::segment_at(const Segment& s, std::string_view v, std::size_t pos) noexcept {
  if (s.wild.empty()) return bytes_equal(v.data() + pos, s.text.data(), s.text.size());
  for (std::size_t i = 0; i < s.text.size(); ++i) {
    if (s.wild[i] != '?' && v[pos + i] != s.text[i]) return false;
  }
  return true;
}

// Leftmost position p in [from, end - |s|] where s matches, or npos.
std::size_t Glob::find_segment(const Segment& s, std::string_view v, std::size_t from,
                               std::size_t end) noexcept {
  const std::size_t n = s.text.size();
  if (end < from || end - from < n) return std::string_view::npos;
  if (s.wild.empty()) {
    const std::size_t p = v.substr(0, end).find(s.text, from);
    return p;
  }
  for (std::size_t p = from; p + n <= end; ++p) {
    if (segment_at(s, v, p)) return p;
  }
  return std::string_view::npos;
}

bool Glob::matches(std::string_view value) const noexcept {
  if (value.size() < min_length_) return false;
  const std::string_view lit = literal_;
  switch (kind_) {
    case Kind::Exact:
      return value.size() == lit.size() && bytes_equal(value.data(), lit.data(), lit.size());
    case Kind::Prefix: return bytes_equal(value.data(), lit.data(), lit.size());
    case Kind::Suffix:
      return bytes_equal(value.data() + (value.size() - lit.size()), lit.data(), lit.size());
    case Kind::Infix: return value.find(lit) != std::string_view::npos;
    case Kind::Any: return true;
    case Kind::General: break;
  }
  const Segment& first = segments_.front();
  if (stars_ == 0) return value.size() == first.text.size() && segment_at(first, value, 0);

  const Segment& last = segments_.back();
  // Anchor the ends; min_length_ guarantees they do not overlap.
  if (!segment_at(first, value, 0)) return false;
  const std::size_t tail = value.size() - last.text.size();
  if (!segment_at(last, value, tail)) return false;
  // Middle segments, leftmost each: a later segment can only gain room from an
  // earlier one taking the leftmost place, so greedy is exact.
  std::size_t pos = first.text.size();
  for (std::size_t i = 1; i + 1 < segments_.size(); ++i) {
    const Segment& s = segments_[i];
    const std::size_t p = find_segment(s, value, pos, tail);
    if (p == std::string_view::npos) return false;
    pos = p + s.text.size();
  }
  return true;
}

}  // namespace xks::policy
