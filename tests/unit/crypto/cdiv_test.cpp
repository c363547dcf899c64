#include "xks/crypto/cdiv.hpp"

#include <gtest/gtest.h>

#include "xks/crypto/base64.hpp"
#include "xks/crypto/digest.hpp"
#include "xks/crypto/hex.hpp"

namespace xks::crypto {
namespace {

Bytes unhex(std::string_view s) {
  auto v = hex_decode(s);
  EXPECT_TRUE(v) << s;
  return v.value_or(Bytes{});
}

// The worked example of the XKS spec, Appendix C.
TEST(Cdiv, SpecAppendixCExample) {
  const std::string_view aad = "project=nile,department=marketing";
  const std::string_view metadata = "key_version=1";
  ASSERT_EQ(aad.size(), 33u);
  ASSERT_EQ(metadata.size(), 13u);
  const Bytes iv = unhex("1ccae5470f39700254779031");
  const Bytes ciphertext = unhex("821c642b5b71783367deaf18");
  const Bytes tag = unhex("bc1c4dda7707d6812447c5955e99b261");
  EXPECT_EQ(compute_cdiv(as_bytes(aad), as_bytes(metadata), iv, ciphertext, tag),
            "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
  // ... whose SHA-256 the spec also gives in hex.
  const auto d = sha256({as_bytes(aad), as_bytes(metadata), iv, ciphertext, tag});
  ASSERT_TRUE(d);
  EXPECT_EQ(hex_encode(*d), "a8703f2260bd8791ec2d15ea0b23e65a0631eedcf2a13a65cc82db3f47cf5ec7");
}

TEST(Cdiv, AbsentFieldsAreEmptyAndThereAreNoLengths) {
  const Bytes iv(12, 1), ct(5, 2), tag(16, 3);
  // Spec: aad || "" || iv || ct || tag == aad || iv || ct || tag.
  EXPECT_EQ(compute_cdiv(as_bytes("aad"), {}, iv, ct, tag),
            compute_cdiv({}, as_bytes("aad"), iv, ct, tag));
  Bytes all(iv);
  all.insert(all.end(), ct.begin(), ct.end());
  all.insert(all.end(), tag.begin(), tag.end());
  const auto d = sha256(all);
  ASSERT_TRUE(d);
  EXPECT_EQ(compute_cdiv({}, {}, iv, ct, tag), base64_encode(*d));
}

TEST(Cdiv, ChangesWithEveryField) {
  const Bytes iv(12, 1), ct(5, 2), tag(16, 3);
  const std::string base = compute_cdiv(as_bytes("a"), as_bytes("m"), iv, ct, tag);
  Bytes ct2 = ct;
  ct2[0] ^= 1;
  EXPECT_NE(base, compute_cdiv(as_bytes("a"), as_bytes("m"), iv, ct2, tag));
  EXPECT_NE(base, compute_cdiv(as_bytes("b"), as_bytes("m"), iv, ct, tag));
  EXPECT_EQ(base.size(), 44u);
}

}  // namespace
}  // namespace xks::crypto
