// libFuzzer target for the URI router (every request-target from the network
// goes through it before anything else). The first input line lists key store
// prefixes separated by ' ' (only ones the config loader would accept are
// kept); the rest of the input is the request-target.
// Invariants: no crash or sanitizer report; a failure is InvalidUriPathException
// with a printable message under 512 bytes; a success names a configured key
// store, a key id of 1-128 characters of A-Za-z0-9._- (never "." or "..") for
// the key APIs and none for health, and the target is exactly
// <uri_path>/health or <uri_path>/keys/<id>/<op>; is_api_uri agrees with route.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "xks/http/router.hpp"

namespace {

bool plausible_prefix(std::string_view p) {
  constexpr std::string_view kSuffix = "/kms/xks/v1";
  if (p.size() < kSuffix.size() || p.size() > 128 || p.front() != '/') return false;
  if (p.substr(p.size() - kSuffix.size()) != kSuffix) return false;
  if (p.find("//") != std::string_view::npos) return false;
  for (const char c : p) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '-' || c == '_';
    if (!ok) return false;
  }
  return true;
}

bool key_id_char(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '-' || c == '_';
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);  // NOLINT
  const std::size_t nl = in.find('\n');
  std::vector<std::string> prefixes;
  std::string_view target = in;
  if (nl != std::string_view::npos) {
    std::string_view line = in.substr(0, nl);
    target = in.substr(nl + 1);
    while (!line.empty()) {
      const std::size_t sp = line.find(' ');
      const std::string_view p = line.substr(0, sp);
      line.remove_prefix(sp == std::string_view::npos ? line.size() : sp + 1);
      bool dup = false;
      for (const auto& q : prefixes) dup |= q == p;
      if (plausible_prefix(p) && !dup && prefixes.size() < 8) prefixes.emplace_back(p);
    }
  }
  if (prefixes.empty()) prefixes = {"/kms/xks/v1", "/demo/kms/xks/v1"};

  // A copy so that any read past the end of the target is an ASan report.
  const std::string owned(target);
  const xks::http::Router router(prefixes);
  const auto r = router.route(owned);
  const bool api = router.is_api_uri(owned);
  if (!r) {
    const auto& e = r.error();
    if (e.name != xks::ErrorName::InvalidUriPathException) std::abort();
    if (e.message.empty() || e.message.size() >= 512) std::abort();
    for (const char c : e.message) {
      if (c < 0x20 || c > 0x7e) std::abort();
    }
    if (api) std::abort();  // is_api_uri must not accept what route refuses
    return 0;
  }
  if (!api) std::abort();
  if (r->keystore >= prefixes.size()) std::abort();
  const std::string& base = prefixes[r->keystore];
  std::string expect;
  switch (r->api) {
    case xks::http::Api::GetHealthStatus:
      if (!r->key_id.empty()) std::abort();
      expect = base + "/health";
      break;
    case xks::http::Api::GetKeyMetadata:
    case xks::http::Api::Encrypt:
    case xks::http::Api::Decrypt: {
      const std::string& id = r->key_id;
      if (id.empty() || id.size() > xks::http::kMaxKeyIdChars || id == "." || id == "..")
        std::abort();
      for (const char c : id) {
        if (!key_id_char(c)) std::abort();
      }
      const char* op = r->api == xks::http::Api::GetKeyMetadata ? "metadata"
                       : r->api == xks::http::Api::Encrypt      ? "encrypt"
                                                                : "decrypt";
      expect = base + "/keys/" + id + "/" + op;
      break;
    }
  }
  if (owned != expect || owned.size() > xks::http::kMaxUriChars) std::abort();
  return 0;
}
