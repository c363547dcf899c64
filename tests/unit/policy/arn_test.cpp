#include "xks/policy/arn.hpp"

#include <gtest/gtest.h>

namespace xks::policy {
namespace {

TEST(Arn, IamRoleUserAndRoot) {
  EXPECT_EQ(arn_account("arn:aws:iam::111122223333:role/Admin"), "111122223333");
  EXPECT_EQ(arn_account("arn:aws:iam::111122223333:role/path/to/Admin"), "111122223333");
  EXPECT_EQ(arn_account("arn:aws:iam::111122223333:user/alice"), "111122223333");
  EXPECT_EQ(arn_account("arn:aws:iam::111122223333:root"), "111122223333");
  // IAM is global: no region.
  EXPECT_EQ(arn_region("arn:aws:iam::111122223333:role/Admin"), std::nullopt);
}

TEST(Arn, AssumedRoleKeepsColonsAndSlashesInTheResource) {
  const auto p = parse_arn("arn:aws:sts::444455556666:assumed-role/ingest/i-0abc:x");
  ASSERT_TRUE(p.has_value());
  EXPECT_EQ(p->partition, "aws");
  EXPECT_EQ(p->service, "sts");
  EXPECT_EQ(p->region, "");
  EXPECT_EQ(p->account, "444455556666");
  EXPECT_EQ(p->resource, "assumed-role/ingest/i-0abc:x");
  EXPECT_EQ(arn_account("arn:aws:sts::444455556666:assumed-role/ingest/s"), "444455556666");
}

TEST(Arn, KmsKeyArnGivesAccountAndRegion) {
  constexpr std::string_view kKey =
      "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab";
  EXPECT_EQ(arn_account(kKey), "111122223333");
  EXPECT_EQ(arn_region(kKey), "eu-west-1");
  EXPECT_EQ(arn_region("arn:aws-cn:kms:cn-north-1:111122223333:key/k"), "cn-north-1");
  EXPECT_EQ(arn_region("arn:aws-us-gov:kms:us-gov-west-1:111122223333:key/k"), "us-gov-west-1");
}

TEST(Arn, ServicePrincipalsAndAwsInternalHaveNoAccount) {
  EXPECT_EQ(arn_account("ec2.amazonaws.com"), std::nullopt);
  EXPECT_EQ(arn_account("AWS Internal"), std::nullopt);
  EXPECT_EQ(arn_region("AWS Internal"), std::nullopt);
  EXPECT_FALSE(parse_arn("ec2.amazonaws.com").has_value());
}

TEST(Arn, MalformedGiveNothing) {
  for (const std::string_view bad :
       {"", "arn", "arn:", "arn:aws", "arn:aws:iam::111122223333",
        "arn:aws:iam::111122223333:", "arn::iam::111122223333:root", "arn:aws:::111122223333:root",
        "ARN:aws:iam::111122223333:root", " arn:aws:iam::111122223333:root"}) {
    EXPECT_EQ(arn_account(bad), std::nullopt) << bad;
  }
  // Parses, but the account is not 12 digits.
  EXPECT_EQ(arn_account("arn:aws:iam::11112222333:root"), std::nullopt);
  EXPECT_EQ(arn_account("arn:aws:iam::1111222233334:root"), std::nullopt);
  EXPECT_EQ(arn_account("arn:aws:iam::11112222333x:root"), std::nullopt);
  EXPECT_EQ(arn_account("arn:aws:s3:::bucket"), std::nullopt);
}

}  // namespace
}  // namespace xks::policy
