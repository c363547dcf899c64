#include "xks/api/json_writer.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <random>
#include <string>
#include <vector>

#include "unit/api/test_util.hpp"

namespace xks::api {
namespace {

using nlohmann::json;

std::string json_quoted(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

// What the responses were before: a nlohmann string dumped with replace.
std::string nlohmann_quoted(std::string_view s) {
  return json(std::string(s)).dump(-1, ' ', false, json::error_handler_t::replace);
}

constexpr std::string_view kFffd = "\xEF\xBF\xBD";

TEST(JsonWriter, PlainTextIsCopied) {
  EXPECT_EQ(json_quoted(""), R"("")");
  EXPECT_EQ(json_quoted("SoftHSM v2 / token #1 (ok)"), "\"SoftHSM v2 / token #1 (ok)\"");
  EXPECT_EQ(json_quoted("\x7f"), "\"\x7f\"");  // DEL is not a control character in JSON
}

TEST(JsonWriter, QuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(json_quoted(R"(a"b\c)"), R"("a\"b\\c")");
  EXPECT_EQ(json_quoted("\b\t\n\f\r"), R"("\b\t\n\f\r")");
  EXPECT_EQ(json_quoted(std::string_view("\0\x01\x1f", 3)), R"("\u0000\u0001\u001f")");
  EXPECT_EQ(json_quoted("\x1b[31m"), R"("\u001b[31m")");
  for (int c = 0; c < 0x20; ++c) {
    const std::string s(1, static_cast<char>(c));
    EXPECT_EQ(json_quoted(s), nlohmann_quoted(s)) << c;
    EXPECT_EQ(json::parse(json_quoted(s)).get<std::string>(), s) << c;
  }
}

TEST(JsonWriter, ValidUtf8IsCopied) {
  for (std::string_view s : {"\xC3\xA9", "\xE2\x82\xAC", "\xF0\x9F\x94\x91", "\xEF\xBF\xBF",
                             "\xF4\x8F\xBF\xBF", "\xED\x9F\xBF", "\xEE\x80\x80"}) {
    EXPECT_EQ(json_quoted(s), "\"" + std::string(s) + "\"");
  }
}

TEST(JsonWriter, IllFormedUtf8BecomesReplacementCharacters) {
  const std::string r(kFffd);
  const struct {
    std::string_view in;
    std::string out;
  } cases[] = {
      {"\xff", "\"" + r + "\""},                          // never a lead byte
      {"a\x80z", "\"a" + r + "z\""},                      // lone continuation
      {"\xC0\x80", "\"" + r + r + "\""},                  // overlong lead: each byte alone
      {"\xE0\x80\x80", "\"" + r + r + r + "\""},          // overlong 3-byte form
      {"\xED\xA0\x80", "\"" + r + r + r + "\""},          // surrogate U+D800
      {"\xF4\x90\x80\x80", "\"" + r + r + r + r + "\""},  // above U+10FFFF
      {"\xF5\x80", "\"" + r + r + "\""},
      {"\xE2\x82", "\"" + r + "\""},  // truncated at the end: one U+FFFD
      {"\xE2\x82"
       "A",
       "\"" + r + "A\""},  // truncated, then ASCII read again
      {"\xF0\x9F\x94"
       "\"",
       "\"" + r + "\\\"\""},                              // truncated, then a quote escaped
      {"\xE2\xE2\x82\xAC", "\"" + r + "\xE2\x82\xAC\""},  // new lead inside a sequence
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::b64(c.in));
    EXPECT_EQ(json_quoted(c.in), c.out);
    EXPECT_EQ(json_quoted(c.in), nlohmann_quoted(c.in));
    EXPECT_TRUE(json::accept(json_quoted(c.in)));  // valid JSON and UTF-8
  }
}

// Random byte strings weighted towards the interesting bytes: the output must be
// exactly nlohmann's (what the proxy sent before), parse as JSON (which checks
// UTF-8), and give back the input wherever the input was valid UTF-8.
TEST(JsonWriter, SameBytesAsNlohmannForArbitraryInput) {
  const std::vector<unsigned char> interesting = {0x00, 0x08, 0x09, 0x0a, 0x1f, '"',  '\\', '/',
                                                  'a',  0x7f, 0x80, 0x8f, 0x90, 0x9f, 0xa0, 0xbf,
                                                  0xc0, 0xc1, 0xc2, 0xdf, 0xe0, 0xe1, 0xec, 0xed,
                                                  0xee, 0xef, 0xf0, 0xf1, 0xf3, 0xf4, 0xf5, 0xff};
  std::mt19937 rng(8);
  for (int iteration = 0; iteration < 20000; ++iteration) {
    std::string s(rng() % 12, '\0');
    for (char& c : s) {
      c = static_cast<char>(rng() % 3 == 0 ? rng() % 256 : interesting[rng() % interesting.size()]);
    }
    const std::string out = json_quoted(s);
    ASSERT_EQ(out, nlohmann_quoted(s)) << testing::b64(s);
    json parsed;
    ASSERT_NO_THROW(parsed = json::parse(out)) << testing::b64(s);
    bool valid_utf8 = true;
    try {
      static_cast<void>(json(s).dump());  // strict: throws on ill-formed UTF-8
    } catch (const json::type_error&) {
      valid_utf8 = false;
    }
    if (valid_utf8) {
      EXPECT_EQ(parsed.get<std::string>(), s) << testing::b64(s);
    } else {
      EXPECT_NE(out.find(kFffd), std::string::npos) << testing::b64(s);
    }
  }
}

TEST(JsonWriter, AppendsToWhatIsThere) {
  std::string out = "{\"a\":";
  append_json_string(out, "x\ny");
  out += '}';
  EXPECT_EQ(json::parse(out)["a"], "x\ny");
}

TEST(JsonWriter, Base64MatchesOpenSsl) {
  std::mt19937 rng(4);
  for (std::size_t n = 0; n < 300; ++n) {
    Bytes data(n);
    for (auto& b : data) b = static_cast<std::uint8_t>(rng());
    std::string out(base64_encoded_size(n) + 2, '#');
    char* end = base64_encode_to(data, out.data() + 1);
    ASSERT_EQ(end, out.data() + 1 + base64_encoded_size(n));
    EXPECT_EQ(out.front(), '#');  // nothing written outside its room
    EXPECT_EQ(out.back(), '#');
    EXPECT_EQ(out.substr(1, base64_encoded_size(n)), testing::b64(data)) << n;
  }
}

}  // namespace
}  // namespace xks::api
