// append_json_string: valid JSON and valid UTF-8 out, whatever bytes come in.
#include "xks/core/json_text.hpp"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>

namespace xks::core {
namespace {

std::string as_json(std::string_view s) {
  std::string out;
  append_json_string(out, s);
  return out;
}

TEST(JsonText, PlainTextIsCopiedBetweenQuotes) {
  EXPECT_EQ(as_json(""), R"("")");
  EXPECT_EQ(as_json("arn:aws:iam::123456789012:user/Alice"),
            R"("arn:aws:iam::123456789012:user/Alice")");
  EXPECT_EQ(as_json("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x91"),
            "\"caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x94\x91\"");
}

TEST(JsonText, EscapesQuotesBackslashesAndControlCharacters) {
  EXPECT_EQ(as_json("a\"b\\c"), R"("a\"b\\c")");
  EXPECT_EQ(as_json("\n\r\t\b\f"), R"("\n\r\t\b\f")");
  EXPECT_EQ(as_json(std::string_view("\x00\x01\x1f\x7f", 4)), "\"\\u0000\\u0001\\u001f\x7f\"");
}

TEST(JsonText, InvalidUtf8BecomesReplacementCharacters) {
  const std::string fffd = "\xEF\xBF\xBD";
  EXPECT_EQ(as_json("a\xFFz"), "\"a" + fffd + "z\"");
  EXPECT_EQ(as_json("\xC0\xAF"), "\"" + fffd + fffd + "\"");                        // overlong '/'
  EXPECT_EQ(as_json("\xED\xA0\x80"), "\"" + fffd + fffd + fffd + "\"");             // surrogate
  EXPECT_EQ(as_json("\xF4\x90\x80\x80"), "\"" + fffd + fffd + fffd + fffd + "\"");  // > U+10FFFF
  EXPECT_EQ(as_json("x\xE2\x82"), "\"x" + fffd + "\"");  // one maximal subpart, truncated
}

TEST(JsonText, EveryByteStringRoundTripsThroughAJsonParser) {
  // All 1- and 2-byte strings, and a sample of 3-byte ones: each output parses
  // as one JSON string, and well-formed input comes back unchanged.
  for (int a = 0; a < 256; ++a) {
    for (int b = -1; b < 256; ++b) {
      std::string in(1, static_cast<char>(a));
      if (b >= 0) in += static_cast<char>(b);
      const std::string out = as_json(in);
      nlohmann::json parsed;
      ASSERT_NO_THROW(parsed = nlohmann::json::parse(out)) << a << "," << b;
      ASSERT_TRUE(parsed.is_string());
      if (json_safe(in)) {
        EXPECT_EQ(out, "\"" + in + "\"");
      }
      bool valid_utf8 = true;
      try {
        (void)nlohmann::json(in).dump();
      } catch (const nlohmann::json::exception&) {
        valid_utf8 = false;
      }
      if (valid_utf8) EXPECT_EQ(parsed.get<std::string>(), in) << a << "," << b;
    }
  }
}

TEST(JsonText, JsonSafe) {
  EXPECT_TRUE(json_safe("plain text / with: punctuation"));
  EXPECT_TRUE(json_safe("\xC3\xA9"));
  EXPECT_FALSE(json_safe("quote\""));
  EXPECT_FALSE(json_safe("back\\slash"));
  EXPECT_FALSE(json_safe("new\nline"));
  EXPECT_FALSE(json_safe("\xC3"));
}

}  // namespace
}  // namespace xks::core
