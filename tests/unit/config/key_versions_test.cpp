// keys[].versions, keys[].current, keystores[].legacy_layouts and the reload
// rule that no ciphertext may be orphaned (check_version_continuity).
#include "config_fixture.hpp"

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;

YAML::Node key0(YAML::Node& n) { return n["keystores"][0]["keys"][0]; }

void versioned(YAML::Node& n) {
  YAML::Node k = key0(n);
  k.remove("label");
  k["current"] = 3;
  k["versions"] = YAML::Load(
      "[ { version: 1, label: payments-v1, decrypt_only: true },"
      "  { version: 2, label: payments-v2, enabled: false },"
      "  { version: 3, label: payments-v3 } ]");
}

TEST_F(ConfigTest, SingleLabelFormIsVersionOne) {
  const Config c = load_mutated([](YAML::Node&) {});
  const KeyEntry& k = c.keystores[0].keys[0];
  ASSERT_EQ(k.versions.size(), 1u);
  EXPECT_EQ(k.versions[0].number, 1u);
  EXPECT_EQ(k.versions[0].label, "demo-aes-label");
  EXPECT_TRUE(k.versions[0].enabled);
  EXPECT_EQ(k.current, 1u);
  EXPECT_EQ(k.label, "demo-aes-label");
  EXPECT_FALSE(k.versions_listed);
  EXPECT_TRUE(k.legacy_layouts.empty());
  // The label defaults to the id for version 1 too.
  EXPECT_EQ(c.keystores[0].keys[1].versions.at(0).label, "second.key_2");
}

TEST_F(ConfigTest, VersionsLoadSortedWithTheCurrentLabel) {
  const Config c = load_mutated([](YAML::Node& n) {
    versioned(n);
    // Listed out of order on purpose.
    YAML::Node v = key0(n)["versions"];
    YAML::Node first = YAML::Clone(v[0]);
    v[0] = YAML::Clone(v[2]);
    v[2] = first;
  });
  const KeyEntry& k = c.keystores[0].keys[0];
  ASSERT_EQ(k.versions.size(), 3u);
  EXPECT_EQ(k.versions[0].number, 1u);
  EXPECT_EQ(k.versions[2].number, 3u);
  EXPECT_TRUE(k.versions[0].decrypt_only);
  EXPECT_FALSE(k.versions[1].enabled);
  EXPECT_EQ(k.current, 3u);
  EXPECT_EQ(k.label, "payments-v3");
  EXPECT_TRUE(k.versions_listed);
  ASSERT_NE(k.version(2), nullptr);
  EXPECT_EQ(k.version(2)->label, "payments-v2");
  EXPECT_EQ(k.version(4), nullptr);
  EXPECT_THAT(describe_redacted(c), HasSubstr("\"label\":\"payments-v1\""));
  EXPECT_THAT(describe_redacted(c), HasSubstr("\"current\":3"));
}

TEST_F(ConfigTest, OneVersionNeedsNoCurrent) {
  const Config c = load_mutated([](YAML::Node& n) {
    key0(n).remove("label");
    key0(n)["versions"] = YAML::Load("[ { version: 7, label: only } ]");
  });
  EXPECT_EQ(c.keystores[0].keys[0].current, 7u);
  EXPECT_EQ(c.keystores[0].keys[0].label, "only");
}

TEST_F(ConfigTest, VersionRulesAreStartupErrors) {
  const std::string k = "keystores[0].keys[0]";
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["label"] = "x";
                  },
                  k + ".label"),
              HasSubstr("together with versions"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { key0(n)["current"] = 2; }, k + ".current"),
              HasSubstr("lists no versions"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n).remove("current");
                  },
                  k + ".current"),
              HasSubstr("more than one version"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["current"] = 4;
                  },
                  k + ".current"),
              HasSubstr("not one of the listed versions"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["current"] = 2;
                  },
                  k + ".current"),
              HasSubstr("retired"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["current"] = 1;
                  },
                  k + ".current"),
              HasSubstr("decrypt_only"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["versions"][1]["version"] = 1;
                  },
                  k + ".versions[1].version"),
              HasSubstr("listed twice"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    versioned(n);
                    key0(n)["versions"][1]["label"] = "payments-v1";
                  },
                  k + ".versions[1].label"),
              HasSubstr("two versions"));
  expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"][0]["version"] = 0;
      },
      k + ".versions[0].version");
  expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"][0].remove("version");
      },
      k + ".versions[0].version");
  expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"][0].remove("label");
      },
      k + ".versions[0].label");
  expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"][0]["lable"] = "typo";
      },
      k + ".versions[0].lable");
  expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"] = YAML::Load("[]");
      },
      k + ".versions");
}

TEST_F(ConfigTest, HealthKeyMayNotBeAnyVersion) {
  const std::string msg = expect_error(
      [](YAML::Node& n) {
        versioned(n);
        key0(n)["versions"][1]["label"] = "xks-health";
      },
      "hsm.health_key");
  EXPECT_THAT(msg, HasSubstr("version 2"));
}

TEST_F(ConfigTest, LegacyLayoutsAreCopiedToEveryKey) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["keystores"][0]["legacy_layouts"] = YAML::Load("[spec-no-metadata, aws-sample]");
  });
  for (const auto& k : c.keystores[0].keys) {
    EXPECT_EQ(k.legacy_layouts,
              (std::vector<LegacyLayout>{LegacyLayout::SpecNoMetadata, LegacyLayout::AwsSample}));
  }
  EXPECT_THAT(describe_redacted(c),
              HasSubstr("\"legacy_layouts\":[\"spec-no-metadata\",\"aws-sample\"]"));
  EXPECT_THAT(
      expect_error(
          [](YAML::Node& n) { n["keystores"][0]["legacy_layouts"] = YAML::Load("[aws_sample]"); },
          "keystores[0].legacy_layouts[0]"),
      HasSubstr("not a legacy layout"));
  EXPECT_THAT(expect_error(
                  [](YAML::Node& n) {
                    n["keystores"][0]["legacy_layouts"] = YAML::Load("[aws-sample, aws-sample]");
                  },
                  "keystores[0].legacy_layouts[1]"),
              HasSubstr("twice"));
}

// ------------------------------------------------------------- reload continuity

class ContinuityTest : public ConfigTest {
 protected:
  Config with(const std::string& versions, unsigned current) {
    return load_mutated([&](YAML::Node& n) {
      key0(n).remove("label");
      key0(n)["current"] = current;
      key0(n)["versions"] = YAML::Load(versions);
    });
  }
  std::string refused(const Config& before, const Config& after) {
    auto r = check_version_continuity(before, after);
    if (r) {
      ADD_FAILURE() << "the reload was not refused";
      return {};
    }
    EXPECT_EQ(r.error().name, ErrorName::ValidationException);
    const std::string& m = r.error().message;
    EXPECT_THAT(m, HasSubstr(after.source.string()));
    EXPECT_THAT(m, HasSubstr("key 'demo-aes-key'"));
    EXPECT_THAT(m, HasSubstr("; fix: "));
    return m;
  }
};

TEST_F(ContinuityTest, RotationRetirementAndRemovalInStepsAreAccepted) {
  const Config single = load_mutated([](YAML::Node&) {});
  const Config rotated = with("[{version: 1, label: demo-aes-label}, {version: 2, label: v2}]", 2);
  const Config marked =
      with("[{version: 1, label: demo-aes-label, decrypt_only: true}, {version: 2, label: v2}]", 2);
  const Config retired =
      with("[{version: 1, label: demo-aes-label, enabled: false}, {version: 2, label: v2}]", 2);
  const Config removed = with("[{version: 2, label: v2}]", 2);
  EXPECT_TRUE(check_version_continuity(single, rotated));
  EXPECT_TRUE(check_version_continuity(rotated, marked));
  EXPECT_TRUE(check_version_continuity(marked, retired));
  EXPECT_TRUE(check_version_continuity(retired, removed));
  EXPECT_TRUE(check_version_continuity(rotated, rotated));
  // Going back to the previous version is allowed: both stay enabled.
  EXPECT_TRUE(check_version_continuity(
      rotated, with("[{version: 1, label: demo-aes-label}, {version: 2, label: v2}]", 1)));
  // Removing the whole key is not a version change.
  const Config no_key = load_mutated([](YAML::Node& n) {
    YAML::Node keys = n["keystores"][0]["keys"];
    YAML::Node kept = YAML::Load("[]");
    kept.push_back(keys[1]);
    n["keystores"][0]["keys"] = kept;
  });
  EXPECT_TRUE(check_version_continuity(rotated, no_key));
}

TEST_F(ContinuityTest, ReloadsThatOrphanCiphertextsAreRefused) {
  const Config rotated = with("[{version: 1, label: demo-aes-label}, {version: 2, label: v2}]", 2);
  // The current version removed (here by going back to the single-label form).
  EXPECT_THAT(refused(rotated, load_mutated([](YAML::Node&) {})),
              HasSubstr("version 2 of key 'demo-aes-key' is the current version"));
  // An enabled version removed.
  EXPECT_THAT(refused(rotated, with("[{version: 2, label: v2}]", 2)),
              HasSubstr("version 1 of key 'demo-aes-key' is enabled and this reload removes it"));
  // A label changed.
  EXPECT_THAT(refused(rotated, with("[{version: 1, label: other}, {version: 2, label: v2}]", 2)),
              HasSubstr("changes its label"));
  // The current version retired in the reload that replaces it.
  EXPECT_THAT(refused(rotated, with("[{version: 1, label: demo-aes-label}, {version: 2, label: v2, "
                                    "enabled: false}, {version: 3, label: v3}]",
                                    3)),
              HasSubstr("was current and this reload retires it"));
}

}  // namespace
}  // namespace xks::config::test
