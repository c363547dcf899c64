#include "xks/crypto/base64.hpp"

#include <gtest/gtest.h>

#include <string>

namespace xks::crypto {
namespace {

std::string decode_str(std::string_view s) {
  const auto d = base64_decode(s);
  EXPECT_TRUE(d.has_value()) << s;
  return d ? std::string(d->begin(), d->end()) : std::string();
}

// RFC 4648 section 10 test vectors.
TEST(Base64, Rfc4648Vectors) {
  const std::pair<std::string_view, std::string_view> vectors[] = {
      {"", ""},
      {"f", "Zg=="},
      {"fo", "Zm8="},
      {"foo", "Zm9v"},
      {"foob", "Zm9vYg=="},
      {"fooba", "Zm9vYmE="},
      {"foobar", "Zm9vYmFy"},
  };
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(base64_encode(as_bytes(plain)), encoded);
    EXPECT_EQ(decode_str(encoded), plain);
    EXPECT_EQ(base64_decoded_size(encoded), plain.size());
  }
}

TEST(Base64, UsesStandardAlphabetNotUrlSafe) {
  const std::uint8_t bytes[] = {0xfb, 0xff, 0xfe};
  EXPECT_EQ(base64_encode(bytes), "+//+");
  EXPECT_FALSE(base64_decode("-__-").has_value());
  const auto d = base64_decode("+//+");
  ASSERT_TRUE(d);
  EXPECT_EQ(Bytes(d->begin(), d->end()), Bytes(std::begin(bytes), std::end(bytes)));
}

TEST(Base64, AllByteValuesRoundTrip) {
  Bytes all;
  for (int i = 0; i < 256; ++i) all.push_back(static_cast<std::uint8_t>(i));
  for (std::size_t n = 0; n <= all.size(); n += 1) {
    const ByteView part(all.data(), n);
    const std::string enc = base64_encode(part);
    EXPECT_EQ(enc.size() % 4, 0u);
    const auto dec = base64_decode(enc);
    ASSERT_TRUE(dec) << n;
    EXPECT_EQ(Bytes(dec->begin(), dec->end()), Bytes(part.begin(), part.end()));
    EXPECT_EQ(base64_decoded_size(enc), n);
  }
}

TEST(Base64, RejectsWhitespaceAnywhere) {
  for (const char* s :
       {"Zm9v\n", " Zm9v", "Zm 9v", "Zm9v\r\n", "Zm9v\tYmFy", "Zg==\n", "Zm9v YmFy"}) {
    EXPECT_FALSE(base64_decode(s).has_value()) << s;
  }
}

TEST(Base64, RejectsMissingOrBadPadding) {
  for (const char* s : {"Zg", "Zg=", "Zm8", "Zg===", "Z===", "====", "Zm9vY", "=Zm9",
                        "Zg==Zg==", "Zm=v", "Z=9v", "Zm9v====", "Zg=a"}) {
    EXPECT_FALSE(base64_decode(s).has_value()) << s;
  }
}

TEST(Base64, RejectsNonCanonicalTrailingBits) {
  // "Zg==" is 'f'; "Zh==" .. "Zv==" carry bits past the data.
  EXPECT_TRUE(base64_decode("Zg==").has_value());
  for (const char* s : {"Zh==", "Zi==", "Zv==", "Zm9=", "Zm+=", "Zm/="}) {
    EXPECT_FALSE(base64_decode(s).has_value()) << s;
  }
  EXPECT_TRUE(base64_decode("Zm8=").has_value());
}

TEST(Base64, RejectsCharactersOutsideTheAlphabet) {
  for (const char* s : {"Zm9v!A==", "Zm9*", "Zm9\x80", "Zm.v", "Zm9v_A=="}) {
    EXPECT_FALSE(base64_decode(s).has_value()) << s;
  }
  const std::string with_nul("Zm\0v", 4);
  EXPECT_FALSE(base64_decode(with_nul).has_value());
}

TEST(Base64, DecodedSizeOfLargeInputWithoutDecoding) {
  const std::string enc(5736, 'A');  // 4302 bytes: above the spec's 4300 minimum
  EXPECT_EQ(base64_decoded_size(enc), 4302u);
  EXPECT_EQ(base64_decoded_size(enc.substr(0, 5732) + "AA=="), 4300u);
}

}  // namespace
}  // namespace xks::crypto
