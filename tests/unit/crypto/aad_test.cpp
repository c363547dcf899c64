#include "xks/crypto/aad.hpp"

#include <gtest/gtest.h>

namespace xks::crypto {
namespace {

Bytes b(std::string_view s) { return Bytes(s.begin(), s.end()); }

TEST(Aad, FramesLengthsAndFields) {
  const Bytes framed = frame_aad(as_bytes("abc"), as_bytes("md"));
  EXPECT_EQ(framed, (Bytes{0x00, 0x03, 'a', 'b', 'c', 0x02, 'm', 'd'}));
}

TEST(Aad, AbsentFieldsFrameAsZeroLengths) {
  EXPECT_EQ(frame_aad({}, {}), (Bytes{0x00, 0x00, 0x00}));
  EXPECT_EQ(frame_aad(as_bytes("x"), {}), (Bytes{0x00, 0x01, 'x', 0x00}));
  EXPECT_EQ(frame_aad({}, as_bytes("y")), (Bytes{0x00, 0x00, 0x01, 'y'}));
}

TEST(Aad, LengthIsBigEndianSixteenBits) {
  const Bytes aad(0x1234, 0xaa);
  const Bytes framed = frame_aad(aad, {});
  ASSERT_EQ(framed.size(), 2u + 0x1234 + 1);
  EXPECT_EQ(framed[0], 0x12);
  EXPECT_EQ(framed[1], 0x34);
  EXPECT_EQ(framed.back(), 0x00);

  const Bytes max_aad(kMaxAadBytes, 0x01);
  const Bytes max_meta(kMaxMetadataBytes, 0x02);
  const Bytes big = frame_aad(max_aad, max_meta);
  EXPECT_EQ(big[0], 0xff);
  EXPECT_EQ(big[1], 0xff);
  EXPECT_EQ(big[2 + kMaxAadBytes], kMaxMetadataBytes);
  EXPECT_EQ(big.size(), 2 + kMaxAadBytes + 1 + kMaxMetadataBytes);
}

// Passing the metadata as AAD (and no metadata) must not produce the same GCM
// AAD, or a ciphertext could be replayed with its metadata moved into the AAD.
TEST(Aad, MetadataAsAadTrickGivesADifferentFraming) {
  const Bytes md = current_ciphertext_metadata();
  EXPECT_NE(frame_aad(md, {}), frame_aad({}, md));
  EXPECT_NE(frame_aad(as_bytes("ctx"), md), frame_aad(b(std::string("ctx") + "xks\x01"), {}));
  // Shifting bytes between the two fields changes the framing too.
  EXPECT_NE(frame_aad(as_bytes("ab"), as_bytes("c")), frame_aad(as_bytes("a"), as_bytes("bc")));
}

TEST(Aad, CurrentMetadataNamesLayoutVersionOne) {
  const Bytes md = current_ciphertext_metadata();
  EXPECT_EQ(md, (Bytes{'x', 'k', 's', 0x01}));
  EXPECT_LE(md.size(), kMaxMetadataBytes);
  EXPECT_EQ(ciphertext_metadata_version(md), 1u);
}

TEST(Aad, MetadataVersionRecognisesOnlyOurFormat) {
  EXPECT_EQ(ciphertext_metadata_version(Bytes{'x', 'k', 's', 0x02}), 2u);
  EXPECT_FALSE(ciphertext_metadata_version(Bytes{'x', 'k', 's', 0x00}));
  EXPECT_FALSE(ciphertext_metadata_version(Bytes{}));
  EXPECT_FALSE(ciphertext_metadata_version(Bytes{'x', 'k', 's'}));
  EXPECT_FALSE(ciphertext_metadata_version(Bytes{'x', 'k', 's', 0x01, 0x00}));
  EXPECT_FALSE(ciphertext_metadata_version(Bytes{'X', 'K', 'S', 0x01}));
  EXPECT_FALSE(ciphertext_metadata_version(b("key_version=1")));
}

}  // namespace
}  // namespace xks::crypto
