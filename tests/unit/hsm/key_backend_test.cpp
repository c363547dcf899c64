#include "xks/hsm/key_backend.hpp"

#include <gtest/gtest.h>

namespace xks::hsm {
namespace {

TEST(KeyAttributes, KeyUsageInSpecOrder) {
  KeyAttributes a;
  EXPECT_TRUE(a.key_usage().empty());
  a.encrypt = a.decrypt = a.wrap = a.unwrap = a.sign = a.verify = a.derive = true;
  EXPECT_EQ(a.key_usage(), (std::vector<std::string>{"ENCRYPT", "DECRYPT", "WRAP", "UNWRAP", "SIGN",
                                                     "VERIFY", "DERIVE"}));
  a = {};
  a.decrypt = a.derive = true;
  EXPECT_EQ(a.key_usage(), (std::vector<std::string>{"DECRYPT", "DERIVE"}));
}

TEST(KeyAttributes, Aes256) {
  KeyAttributes a;
  a.is_aes = true;
  a.key_bytes = 16;
  EXPECT_FALSE(a.is_aes_256());
  a.key_bytes = 32;
  EXPECT_TRUE(a.is_aes_256());
}

TEST(HealthStatus, SpecSpelling) {
  EXPECT_EQ(to_string(HealthStatus::Active), "ACTIVE");
  EXPECT_EQ(to_string(HealthStatus::Degraded), "DEGRADED");
  EXPECT_EQ(to_string(HealthStatus::Unavailable), "UNAVAILABLE");
}

}  // namespace
}  // namespace xks::hsm
