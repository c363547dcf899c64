#include "xks/auth/canonical.hpp"
#include "xks/core/ascii.hpp"

#include <algorithm>
#include <utility>
#include <vector>

#include "xks/crypto/digest.hpp"
#include "xks/crypto/hex.hpp"

namespace xks::auth {
namespace {

constexpr const char* kUpperHex = core::kHexUpper;

bool is_unreserved(unsigned char c) noexcept {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '_' || c == '.' || c == '~';
}

int hex_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size()) {
      const int hi = hex_value(s[i + 1]);
      const int lo = hex_value(s[i + 2]);
      if (hi >= 0 && lo >= 0) {
        out.push_back(static_cast<char>((hi << 4) | lo));
        i += 2;
        continue;
      }
    }
    out.push_back(s[i]);
  }
  return out;
}

bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }

}  // namespace

void uri_encode_append(std::string& out, std::string_view text, bool keep_slash) {
  out.reserve(out.size() + text.size());
  const auto kept = [keep_slash](char ch) {
    return is_unreserved(static_cast<unsigned char>(ch)) || (keep_slash && ch == '/');
  };
  std::size_t i = 0;
  while (i < text.size()) {
    // Runs of kept bytes in one append: a path is nearly all of them.
    std::size_t j = i;
    while (j < text.size() && kept(text[j])) ++j;
    out.append(text.substr(i, j - i));
    if (j == text.size()) break;
    const auto c = static_cast<unsigned char>(text[j]);
    const char escaped[3] = {'%', kUpperHex[c >> 4], kUpperHex[c & 0x0f]};
    out.append(escaped, sizeof(escaped));
    i = j + 1;
  }
}

namespace {

// True if path is absolute and has no empty, "." or ".." segment, which is
// what every real request looks like: then normalising changes nothing.
bool is_normal_absolute_path(std::string_view path) noexcept {
  if (path.empty() || path.front() != '/') return false;
  std::size_t seg_start = 1;
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i != path.size() && path[i] != '/') continue;
    const std::string_view seg = path.substr(seg_start, i - seg_start);
    // An empty last segment is a trailing '/', which the general path keeps.
    if ((seg.empty() && i != path.size()) || seg == "." || seg == "..") return false;
    seg_start = i + 1;
  }
  return true;
}

}  // namespace

void canonical_uri_append(std::string& out, std::string_view path) {
  if (path.empty()) {
    out.push_back('/');
    return;
  }
  if (is_normal_absolute_path(path)) {
    // Segment by segment would encode the same bytes and keep the same '/'s.
    uri_encode_append(out, path, true);
    return;
  }
  // RFC 3986 5.2.4 dot-segment removal, plus dropping empty segments (runs of
  // '/'), as the AWS SDKs normalise every non-S3 path before signing.
  std::vector<std::string_view> segments;
  std::size_t pos = 0;
  while (pos <= path.size()) {
    const std::size_t slash = std::min(path.find('/', pos), path.size());
    const std::string_view seg = path.substr(pos, slash - pos);
    if (seg == "..") {
      if (!segments.empty()) segments.pop_back();
    } else if (!seg.empty() && seg != ".") {
      segments.push_back(seg);
    }
    pos = slash + 1;
  }
  const std::size_t start = out.size();
  out.reserve(start + path.size() + 8);
  if (path.front() == '/') out.push_back('/');
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i != 0) out.push_back('/');
    uri_encode_append(out, segments[i], false);
  }
  if (path.back() == '/' && !segments.empty()) out.push_back('/');
  if (out.size() == start) out.push_back('/');
}

std::string canonical_uri(std::string_view path) {
  std::string out;
  canonical_uri_append(out, path);
  return out;
}

std::string canonical_query(std::string_view query) {
  std::vector<std::pair<std::string, std::string>> pairs;
  std::size_t pos = 0;
  while (pos <= query.size()) {
    const std::size_t amp = std::min(query.find('&', pos), query.size());
    const std::string_view item = query.substr(pos, amp - pos);
    pos = amp + 1;
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    const std::string_view name = item.substr(0, eq);
    const std::string_view value =
        eq == std::string_view::npos ? std::string_view{} : item.substr(eq + 1);
    std::pair<std::string, std::string> p;
    uri_encode_append(p.first, percent_decode(name), false);
    uri_encode_append(p.second, percent_decode(value), false);
    pairs.push_back(std::move(p));
  }
  std::sort(pairs.begin(), pairs.end());
  std::string out;
  for (const auto& [name, value] : pairs) {
    if (!out.empty()) out.push_back('&');
    out.append(name);
    out.push_back('=');
    out.append(value);
  }
  return out;
}

void canonical_header_value_append(std::string& out, std::string_view value) {
  std::size_t b = 0;
  std::size_t e = value.size();
  while (b < e && is_blank(value[b])) ++b;
  while (e > b && is_blank(value[e - 1])) --e;
  while (b < e) {
    std::size_t j = b;
    while (j < e && !is_blank(value[j])) ++j;
    out.append(value.substr(b, j - b));
    if (j == e) break;
    // A run of blanks inside the value (e is not blank): one space.
    while (is_blank(value[j])) ++j;
    out.push_back(' ');
    b = j;
  }
}

std::string hex_sha256(std::string_view data) {
  const auto digest = crypto::sha256(as_bytes(data));
  if (!digest) return {};
  return crypto::hex_encode(*digest);
}

}  // namespace xks::auth
