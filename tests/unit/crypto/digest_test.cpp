#include "xks/crypto/digest.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "xks/crypto/hex.hpp"

namespace xks::crypto {
namespace {

std::string hex_of(const std::optional<Sha256>& d) {
  EXPECT_TRUE(d);
  return d ? hex_encode(*d) : std::string();
}

TEST(Digest, Sha256KnownAnswers) {
  EXPECT_EQ(hex_of(sha256(ByteView{})),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(hex_of(sha256(as_bytes("abc"))),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(hex_of(sha256({as_bytes("a"), ByteView{}, as_bytes("bc")})),
            hex_of(sha256(as_bytes("abc"))));
}

// RFC 4231 test cases 1 and 2.
TEST(Digest, HmacSha256Rfc4231) {
  const Bytes key1(20, 0x0b);
  EXPECT_EQ(hex_of(hmac_sha256(key1, as_bytes("Hi There"))),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
  EXPECT_EQ(hex_of(hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"))),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
}

TEST(Digest, HmacWithEmptyKeyAndData) {
  EXPECT_EQ(hex_of(hmac_sha256(ByteView{}, ByteView{})),
            "b613679a0814d9ec772f95d778c35fc5ff1697c493715653c6c712144292c5ad");
}

TEST(Digest, SafeFromManyThreads) {
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        const auto d = hmac_sha256(as_bytes("Jefe"), as_bytes("what do ya want for nothing?"));
        if (!d ||
            hex_encode(*d) != "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843") {
          ++bad;
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST(Hex, EncodeDecode) {
  EXPECT_EQ(hex_encode(Bytes{0x00, 0xab, 0xff}), "00abff");
  EXPECT_EQ(hex_decode("00ABff"), (Bytes{0x00, 0xab, 0xff}));
  EXPECT_FALSE(hex_decode("abc"));
  EXPECT_FALSE(hex_decode("zz"));
  std::array<std::uint8_t, 2> two{};
  EXPECT_TRUE(hex_decode_into("beef", two));
  EXPECT_FALSE(hex_decode_into("beefaa", two));
  EXPECT_FALSE(hex_decode_into("be", two));
}

}  // namespace
}  // namespace xks::crypto
