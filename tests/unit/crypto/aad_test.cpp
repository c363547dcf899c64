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

namespace xks::crypto {
namespace {

TEST(KeyVersionMetadata, VersionOneKeepsTheFourByteForm) {
  EXPECT_EQ(ciphertext_metadata_for(1), current_ciphertext_metadata());
  const auto p = parse_ciphertext_metadata(current_ciphertext_metadata());
  EXPECT_EQ(p.kind, ParsedMetadata::Kind::Ours);
  EXPECT_EQ(p.layout, 1u);
  EXPECT_EQ(p.key_version, 1u);
}

TEST(KeyVersionMetadata, LaterVersionsAreLayoutTwoWithABigEndianNumber) {
  EXPECT_EQ(ciphertext_metadata_for(2), (Bytes{'x', 'k', 's', 0x02, 0, 0, 0, 2}));
  EXPECT_EQ(ciphertext_metadata_for(0x01020304), (Bytes{'x', 'k', 's', 0x02, 1, 2, 3, 4}));
  for (std::uint32_t v : {2U, 3U, 255U, 256U, 65536U, 4294967295U}) {
    const Bytes md = ciphertext_metadata_for(v);
    EXPECT_LE(md.size(), kMaxMetadataBytes);
    const auto p = parse_ciphertext_metadata(md);
    EXPECT_EQ(p.kind, ParsedMetadata::Kind::Ours) << v;
    EXPECT_EQ(p.key_version, v);
  }
}

TEST(KeyVersionMetadata, ParseTellsOursForeignNewerAndMalformedApart) {
  using K = ParsedMetadata::Kind;
  for (const Bytes& md :
       {Bytes{}, Bytes{'x', 'k', 's'}, Bytes{'x', 'k', 's', 0x00}, Bytes{'x', 'k', 's', 0x01, 0x00},
        Bytes{'X', 'K', 'S', 0x01}, b("key_version=1")}) {
    EXPECT_EQ(parse_ciphertext_metadata(md).kind, K::NotOurs);
  }
  EXPECT_EQ(parse_ciphertext_metadata(Bytes{'x', 'k', 's', 0x03}).kind, K::UnknownLayout);
  EXPECT_EQ(parse_ciphertext_metadata(Bytes{'x', 'k', 's', 0x03}).layout, 3u);
  // Layout 2 of the wrong size, or naming version 0 or 1 (which has one encoding).
  for (const Bytes& md :
       {Bytes{'x', 'k', 's', 0x02}, Bytes{'x', 'k', 's', 0x02, 0, 0, 2},
        Bytes{'x', 'k', 's', 0x02, 0, 0, 0, 2, 0}, Bytes{'x', 'k', 's', 0x02, 0, 0, 0, 0},
        Bytes{'x', 'k', 's', 0x02, 0, 0, 0, 1}}) {
    EXPECT_EQ(parse_ciphertext_metadata(md).kind, K::Malformed);
  }
}

// The AWS sample proxy's framing, byte for byte: u16 length of the AAD, its
// SHA-256 when the field is present (even empty), u8 length and the metadata.
TEST(AwsSampleFraming, DigestOfThePresentAadAndTheMetadataAsGiven) {
  // SHA-256("abc") and SHA-256("") (FIPS 180-2 / well-known values).
  const Bytes abc_digest = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea, 0x41, 0x41, 0x40,
                            0xde, 0x5d, 0xae, 0x22, 0x23, 0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17,
                            0x7a, 0x9c, 0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
  const Bytes empty_digest = {0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4,
                              0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b,
                              0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55};
  Bytes want = {0x00, 0x03};
  want.insert(want.end(), abc_digest.begin(), abc_digest.end());
  want.insert(want.end(), {0x02, 'm', 'd'});
  EXPECT_EQ(frame_aad_aws_sample(b("abc"), as_bytes("md")), want);

  want = {0x00, 0x00};
  want.insert(want.end(), empty_digest.begin(), empty_digest.end());
  want.push_back(0x00);
  EXPECT_EQ(frame_aad_aws_sample(Bytes{}, {}), want);  // present but empty
  EXPECT_EQ(frame_aad_aws_sample(std::nullopt, {}), (Bytes{0x00, 0x00, 0x00}));  // absent

  const Bytes big(300, 0x61);
  const Bytes framed = frame_aad_aws_sample(big, {});
  EXPECT_EQ(framed[0], 0x01);
  EXPECT_EQ(framed[1], 0x2c);  // the AAD's length, not the digest's
  EXPECT_EQ(framed.size(), 2u + 32u + 1u);
}

}  // namespace
}  // namespace xks::crypto
