#include "xks/policy/glob.hpp"

#include <gtest/gtest.h>

#include <string>

namespace xks::policy {
namespace {

Glob g(std::string_view pattern) {
  std::string problem;
  auto glob = Glob::compile(pattern, &problem);
  EXPECT_TRUE(glob.has_value()) << pattern << ": " << problem;
  return glob ? *glob : *Glob::compile("\\*never\\*");
}

TEST(Glob, LiteralIsExactAndCaseSensitive) {
  const Glob p = g("ebs");
  EXPECT_FALSE(p.has_wildcard());
  EXPECT_TRUE(p.matches("ebs"));
  EXPECT_FALSE(p.matches("EBS"));
  EXPECT_FALSE(p.matches("ebs2"));
  EXPECT_FALSE(p.matches("eb"));
  EXPECT_FALSE(p.matches(""));
}

TEST(Glob, StarAloneMatchesAnythingPresentIncludingEmpty) {
  const Glob p = g("*");
  EXPECT_TRUE(p.has_wildcard());
  EXPECT_TRUE(p.matches(""));
  EXPECT_TRUE(p.matches("x"));
  EXPECT_TRUE(p.matches(std::string(2048, 'a')));
}

TEST(Glob, Prefix) {
  const Glob p = g("arn:aws:iam::111122223333:role/*");
  EXPECT_TRUE(p.matches("arn:aws:iam::111122223333:role/"));
  EXPECT_TRUE(p.matches("arn:aws:iam::111122223333:role/Admin"));
  EXPECT_TRUE(p.matches("arn:aws:iam::111122223333:role/path/Admin"));
  EXPECT_FALSE(p.matches("arn:aws:iam::111122223333:user/Admin"));
  EXPECT_FALSE(p.matches("arn:aws:iam::111122223333:role"));
}

TEST(Glob, Suffix) {
  const Glob p = g("*.amazonaws.com");
  EXPECT_TRUE(p.matches("ec2.amazonaws.com"));
  EXPECT_TRUE(p.matches(".amazonaws.com"));
  EXPECT_FALSE(p.matches("ec2.amazonaws.com.evil"));
  EXPECT_FALSE(p.matches("amazonaws.com"));
}

TEST(Glob, Infix) {
  const Glob p = g("arn:aws:sts::*:assumed-role/ingest/*");
  EXPECT_TRUE(p.matches("arn:aws:sts::111122223333:assumed-role/ingest/s1"));
  EXPECT_TRUE(p.matches("arn:aws:sts::444455556666:assumed-role/ingest/"));
  EXPECT_FALSE(p.matches("arn:aws:sts::111122223333:assumed-role/ingester/s1"));
  EXPECT_FALSE(p.matches("arn:aws:iam::111122223333:role/ingest"));

  const Glob contains = g("*prod*");
  EXPECT_TRUE(contains.matches("prod"));
  EXPECT_TRUE(contains.matches("key-prod-1"));
  EXPECT_FALSE(contains.matches("pro-d"));
}

TEST(Glob, MiddleSegmentsAreSearchedLeftmostWithoutOverlappingTheEnds) {
  const Glob p = g("a*b*c");
  EXPECT_TRUE(p.matches("abc"));
  EXPECT_TRUE(p.matches("aXbYc"));
  EXPECT_TRUE(p.matches("abbbc"));
  EXPECT_FALSE(p.matches("ac"));
  EXPECT_FALSE(p.matches("acb"));
  // The suffix "c" must not also serve as the middle "b...": "abc" vs "a*bc*c".
  EXPECT_FALSE(g("a*bc*c").matches("abc"));
  EXPECT_TRUE(g("a*bc*c").matches("abcc"));
  // Prefix and suffix may not overlap: "aa" is too short for "aa*aa".
  EXPECT_FALSE(g("aa*aa").matches("aaa"));
  EXPECT_TRUE(g("aa*aa").matches("aaaa"));
}

TEST(Glob, QuestionMarkIsExactlyOneByte) {
  const Glob p = g("key-?");
  EXPECT_TRUE(p.has_wildcard());
  EXPECT_TRUE(p.matches("key-1"));
  EXPECT_FALSE(p.matches("key-"));
  EXPECT_FALSE(p.matches("key-12"));
  const Glob region = g("eu-*-?");
  EXPECT_TRUE(region.matches("eu-west-1"));
  EXPECT_TRUE(region.matches("eu-central-2"));
  EXPECT_FALSE(region.matches("us-west-1"));
  EXPECT_FALSE(region.matches("eu-west-10"));
  const Glob mid = g("*a?c*");
  EXPECT_TRUE(mid.matches("xxabcxx"));
  EXPECT_TRUE(mid.matches("aac"));
  EXPECT_FALSE(mid.matches("ac"));
}

TEST(Glob, EscapesMakeWildcardsLiteral) {
  const Glob star = g("a\\*b");
  EXPECT_FALSE(star.has_wildcard());
  EXPECT_TRUE(star.matches("a*b"));
  EXPECT_FALSE(star.matches("axb"));
  const Glob q = g("a\\?");
  EXPECT_TRUE(q.matches("a?"));
  EXPECT_FALSE(q.matches("ab"));
  EXPECT_TRUE(g("a\\\\b").matches("a\\b"));
  EXPECT_TRUE(g("*\\**").matches("x*y"));
  EXPECT_FALSE(g("*\\**").matches("xy"));
}

TEST(Glob, BadPatternsAreRefusedWithAReason) {
  for (const std::string_view bad : {"", "a**b", "**", "a\\", "a\\b"}) {
    std::string problem;
    EXPECT_FALSE(Glob::compile(bad, &problem).has_value()) << bad;
    EXPECT_FALSE(problem.empty()) << bad;
  }
}

}  // namespace
}  // namespace xks::policy
