// One test (at least) per validation rule. expect_error() checks for each that
// the message is one line, starts with "<file>: <setting>: ", has a fix, and
// never contains a secret or the PIN.
#include <unistd.h>

#include <tuple>

#include "config_fixture.hpp"

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

YAML::Node cred0(YAML::Node& n) { return n["keystores"][0]["credentials"][0]; }
YAML::Node key0(YAML::Node& n) { return n["keystores"][0]["keys"][0]; }

// ------------------------------------------------------------ file and syntax

TEST_F(ConfigTest, MissingFile) {
  const std::string msg = expect_error_file(dir_ / "nope.yaml", "(file)");
  EXPECT_THAT(msg, HasSubstr("does not exist"));
}

TEST_F(ConfigTest, EmptyFile) { expect_error_file(write_config_text(""), "(top level)"); }

TEST_F(ConfigTest, SyntaxErrorNamesLineAndColumn) {
  const std::string msg =
      expect_error_file(write_config_text("server:\n  listen: [unclosed\n"), "line 3, column 1");
  EXPECT_THAT(msg, HasSubstr("syntax error"));
}

TEST_F(ConfigTest, TopLevelMustBeAMap) {
  expect_error_file(write_config_text("- a\n- b\n"), "(top level)");
}

// ------------------------------------------------------------ unknown keys / types

TEST_F(ConfigTest, UnknownKeySuggestsTheClosestKnownKey) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["limts"] = YAML::Load("{}"); }, "server.limts");
  EXPECT_THAT(msg, HasSubstr("unknown setting \"limts\""));
  EXPECT_THAT(msg, HasSubstr("did you mean \"limits\"?"));
}

TEST_F(ConfigTest, UnknownTopLevelKeySuggests) {
  const std::string msg = expect_error([](YAML::Node& n) { n["keystore"] = 1; }, "keystore");
  EXPECT_THAT(msg, HasSubstr("did you mean \"keystores\"?"));
}

TEST_F(ConfigTest, UnknownKeyFarFromAnyKnownKeyListsThem) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["logging"]["colour"] = "red"; }, "logging.colour");
  EXPECT_THAT(msg, Not(HasSubstr("did you mean")));
  EXPECT_THAT(msg, HasSubstr("known keys here: level, format"));
}

TEST_F(ConfigTest, UnknownKeysInEveryNestedSection) {
  expect_error([](YAML::Node& n) { n["tls"]["client_cas"] = "x"; }, "tls.client_cas");
  expect_error([](YAML::Node& n) { n["hsm"]["slot"] = 1; }, "hsm.slot");
  expect_error([](YAML::Node& n) { n["hsm"]["pin"]["path"] = "x"; }, "hsm.pin.path");
  expect_error([](YAML::Node& n) { cred0(n)["secret_key"] = "x"; },
               "keystores[0].credentials[0].secret_key");
  expect_error([](YAML::Node& n) { key0(n)["lable"] = "x"; }, "keystores[0].keys[0].lable");
  expect_error([](YAML::Node& n) { n["keystores"][0]["key"] = "x"; }, "keystores[0].key");
  expect_error([](YAML::Node& n) { n["health"]["interval"] = 1; }, "health.interval");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["max_body"] = 1; },
               "server.limits.max_body");
}

TEST_F(ConfigTest, WrongTypes) {
  EXPECT_THAT(
      expect_error([](YAML::Node& n) { n["server"]["threads"] = "four"; }, "server.threads"),
      HasSubstr("not a whole number"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["server"]["threads"] = "-1"; }, "server.threads"),
              HasSubstr("not a whole number"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["server"]["threads"] = "1.5"; }, "server.threads"),
              HasSubstr("not a whole number"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["server"]["threads"] = YAML::Load("[1]"); },
                           "server.threads"),
              HasSubstr("must be a single value"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["tls"]["enabled"] = "maybe"; }, "tls.enabled"),
              HasSubstr("not a boolean"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["server"] = YAML::Load("[1, 2]"); }, "server"),
              HasSubstr("must be a map"));
  EXPECT_THAT(
      expect_error([](YAML::Node& n) { n["keystores"] = YAML::Load("{a: 1}"); }, "keystores"),
      HasSubstr("must be a list"));
  EXPECT_THAT(expect_error([](YAML::Node& n) { n["hsm"] = "softhsm"; }, "hsm"),
              HasSubstr("must be a map (one HSM) or a list"));
  EXPECT_THAT(
      expect_error([](YAML::Node& n) { n["server"]["listen"] = YAML::Node(YAML::NodeType::Null); },
                   "server.listen"),
      HasSubstr("has no value"));
}

// ------------------------------------------------------------ server

TEST_F(ConfigTest, ThreadsRange) {
  EXPECT_NO_THROW(load_mutated([](YAML::Node& n) { n["server"]["threads"] = 256; }));
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["threads"] = 257; }, "server.threads");
  EXPECT_THAT(msg, HasSubstr("257 is out of range 0..256"));
}

TEST_F(ConfigTest, FleetSizeAtLeastOne) {
  expect_error([](YAML::Node& n) { n["server"]["fleet_size"] = 0; }, "server.fleet_size");
}

TEST_F(ConfigTest, DeadlineRange) {
  expect_error([](YAML::Node& n) { n["server"]["request_deadline_ms"] = 9; },
               "server.request_deadline_ms");
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["request_deadline_ms"] = 251; },
                   "server.request_deadline_ms");
  EXPECT_THAT(msg, HasSubstr("250 ms"));
  EXPECT_NO_THROW(load_mutated([](YAML::Node& n) { n["server"]["request_deadline_ms"] = 250; }));
}

TEST_F(ConfigTest, ShutdownDelayFitsSystemdStopTimeout) {
  EXPECT_EQ(load_mutated([](YAML::Node&) {}).server.shutdown_delay, Millis(0));
  EXPECT_EQ(load_mutated([](YAML::Node& n) {
              n["server"]["shutdown_delay_ms"] = 15000;
            }).server.shutdown_delay,
            Millis(15000));
  const std::string msg = expect_error(
      [](YAML::Node& n) { n["server"]["shutdown_delay_ms"] = 15001; }, "server.shutdown_delay_ms");
  EXPECT_THAT(msg, HasSubstr("TimeoutStopSec"));
}

TEST_F(ConfigTest, HugeNumberIsOutOfRangeNotWrapped) {
  expect_error([](YAML::Node& n) { n["server"]["threads"] = "99999999999999999999999"; },
               "server.threads");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["max_connections"] = "4294967296"; },
               "server.limits.max_connections");
}

TEST_F(ConfigTest, LimitRanges) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["server"]["limits"]["max_body_bytes"] = 1024; },
                   "server.limits.max_body_bytes");
  EXPECT_THAT(msg, HasSubstr("22 KiB"));
  expect_error([](YAML::Node& n) { n["server"]["limits"]["max_header_bytes"] = 100; },
               "server.limits.max_header_bytes");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["max_connections"] = 0; },
               "server.limits.max_connections");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["handshake_timeout_ms"] = 0; },
               "server.limits.handshake_timeout_ms");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["header_timeout_ms"] = 10; },
               "server.limits.header_timeout_ms");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["body_timeout_ms"] = 300001; },
               "server.limits.body_timeout_ms");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["idle_timeout_ms"] = 999; },
               "server.limits.idle_timeout_ms");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["write_timeout_ms"] = 99; },
               "server.limits.write_timeout_ms");
  expect_error([](YAML::Node& n) { n["server"]["limits"]["unauthenticated_idle_timeout_ms"] = 50; },
               "server.limits.unauthenticated_idle_timeout_ms");
  const auto cap = expect_error(
      [](YAML::Node& n) { n["server"]["limits"]["max_unauthenticated_per_source"] = -1; },
      "server.limits.max_unauthenticated_per_source");
  EXPECT_THAT(cap, HasSubstr("client IP preservation"));
}

TEST_F(ConfigTest, ListenRules) {
  for (const std::string bad :
       {"127.0.0.1", "localhost:443", "::1:443", "[::1]443", "[::1]:", "1.2.3.4:70000",
        "1.2.3.4:-1", "1.2.3.4:44a", "[1.2.3.4]:443", ":443", "999.1.1.1:443"}) {
    const std::string msg =
        expect_error([&](YAML::Node& n) { n["server"]["listen"] = bad; }, "server.listen");
    EXPECT_THAT(msg, HasSubstr("0.0.0.0:443")) << bad;  // the fix shows the accepted form
  }
}

TEST_F(ConfigTest, PingPathRules) {
  expect_error([](YAML::Node& n) { n["server"]["ping_path"] = "ping"; }, "server.ping_path");
  expect_error([](YAML::Node& n) { n["server"]["ping_path"] = "/pi ng"; }, "server.ping_path");
  expect_error([](YAML::Node& n) { n["server"]["ping_path"] = "/a//b"; }, "server.ping_path");
  expect_error([](YAML::Node& n) { n["server"]["ping_path"] = "/p?x=1"; }, "server.ping_path");
}

TEST_F(ConfigTest, PingPathMustNotCollideWithAKeyStore) {
  std::string msg = expect_error(
      [](YAML::Node& n) { n["server"]["ping_path"] = "/demo/kms/xks/v1"; }, "server.ping_path");
  EXPECT_THAT(msg, HasSubstr("keystores[0].uri_path"));
  expect_error([](YAML::Node& n) { n["server"]["ping_path"] = "/demo/kms/xks/v1/health"; },
               "server.ping_path");
}

// ------------------------------------------------------------ tls

TEST_F(ConfigTest, TlsSectionIsRequired) {
  const std::string msg = expect_error([](YAML::Node& n) { n.remove("tls"); }, "tls");
  EXPECT_THAT(msg, HasSubstr("enabled: false"));
}

TEST_F(ConfigTest, TlsFilesRequiredWhenEnabled) {
  expect_error([](YAML::Node& n) { n["tls"].remove("certificate"); }, "tls.certificate");
  expect_error([](YAML::Node& n) { n["tls"].remove("private_key"); }, "tls.private_key");
  // Omitting enabled means enabled: turning TLS off must be explicit.
  expect_error([](YAML::Node& n) { n["tls"] = YAML::Load("{}"); }, "tls.certificate");
  expect_error([](YAML::Node& n) { n["tls"]["client_names"] = YAML::Load("[]"); },
               "tls.client_names");
}

TEST_F(ConfigTest, TlsFilesMustExist) {
  std::string msg = expect_error([](YAML::Node& n) { n["tls"]["certificate"] = "tls/missing.crt"; },
                                 "tls.certificate");
  EXPECT_THAT(msg, HasSubstr((dir_ / "tls/missing.crt").string() + " does not exist"));
  expect_error([](YAML::Node& n) { n["tls"]["private_key"] = "tls"; },
               "tls.private_key");  // a folder
  expect_error([](YAML::Node& n) { n["tls"]["client_ca"] = "nope.pem"; }, "tls.client_ca");
}

TEST_F(ConfigTest, TlsFilesMustBeReadable) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  write("tls/server.key", "x", 0000);
  const std::string msg = expect_error([](YAML::Node&) {}, "tls.private_key");
  EXPECT_THAT(msg, HasSubstr("cannot be read"));
}

TEST_F(ConfigTest, ClientNamesRequireClientCa) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["tls"].remove("client_ca"); }, "tls.client_names");
  EXPECT_THAT(msg, HasSubstr("tls.client_ca"));
  expect_error([](YAML::Node& n) { n["tls"]["client_names"] = YAML::Load("['']"); },
               "tls.client_names[0]");
}

// ------------------------------------------------------------ hsm

TEST_F(ConfigTest, HsmIsRequired) {
  expect_error([](YAML::Node& n) { n.remove("hsm"); }, "hsm");
  expect_error([](YAML::Node& n) { n["hsm"] = YAML::Load("[]"); }, "hsm");
}

TEST_F(ConfigTest, AtMostTenHsms) {
  expect_error(
      [](YAML::Node& n) {
        YAML::Node list(YAML::NodeType::Sequence);
        for (int i = 0; i < 11; ++i) {
          YAML::Node h = YAML::Clone(n["hsm"]);
          h["name"] = "h" + std::to_string(i);
          list.push_back(h);
        }
        n["hsm"] = list;
      },
      "hsm");
}

TEST_F(ConfigTest, HsmNamesUniqueAndWellFormed) {
  expect_error(
      [](YAML::Node& n) {
        YAML::Node list(YAML::NodeType::Sequence);
        list.push_back(YAML::Clone(n["hsm"]));
        list.push_back(YAML::Clone(n["hsm"]));
        n["hsm"] = list;
      },
      "hsm[1].name");
  expect_error([](YAML::Node& n) { n["hsm"]["name"] = "my hsm"; }, "hsm.name");
}

TEST_F(ConfigTest, ListFormNamesTheIndexInErrors) {
  expect_error(
      [](YAML::Node& n) {
        YAML::Node list(YAML::NodeType::Sequence);
        list.push_back(YAML::Clone(n["hsm"]));
        YAML::Node second = YAML::Clone(n["hsm"]);
        second["name"] = "b";
        second["sessions"] = 0;
        list.push_back(second);
        n["hsm"] = list;
      },
      "hsm[1].sessions");
}

TEST_F(ConfigTest, ModuleMustExist) {
  expect_error([](YAML::Node& n) { n["hsm"].remove("module"); }, "hsm.module");
  const std::string msg = expect_error(
      [](YAML::Node& n) { n["hsm"]["module"] = "/nonexistent/libvendor.so"; }, "hsm.module");
  EXPECT_THAT(msg, HasSubstr("/nonexistent/libvendor.so does not exist"));
}

TEST_F(ConfigTest, ExactlyOneOfTokenLabelAndSlotId) {
  std::string msg = expect_error([](YAML::Node& n) { n["hsm"]["slot_id"] = 0; }, "hsm");
  EXPECT_THAT(msg, HasSubstr("both token_label and slot_id"));
  msg = expect_error([](YAML::Node& n) { n["hsm"].remove("token_label"); }, "hsm");
  EXPECT_THAT(msg, HasSubstr("neither"));
}

TEST_F(ConfigTest, TokenLabelAtMost32) {
  expect_error([](YAML::Node& n) { n["hsm"]["token_label"] = std::string(33, 'x'); },
               "hsm.token_label");
  expect_error([](YAML::Node& n) { n["hsm"]["token_label"] = ""; }, "hsm.token_label");
  EXPECT_NO_THROW(
      load_mutated([](YAML::Node& n) { n["hsm"]["token_label"] = std::string(32, 'x'); }));
}

TEST_F(ConfigTest, SlotIdIsANumber) {
  expect_error(
      [](YAML::Node& n) {
        n["hsm"].remove("token_label");
        n["hsm"]["slot_id"] = "first";
      },
      "hsm.slot_id");
}

TEST_F(ConfigTest, SessionsRange) {
  expect_error([](YAML::Node& n) { n["hsm"]["sessions"] = 0; }, "hsm.sessions");
  expect_error([](YAML::Node& n) { n["hsm"]["sessions"] = 1025; }, "hsm.sessions");
  EXPECT_NO_THROW(load_mutated([](YAML::Node& n) { n["hsm"]["sessions"] = 1024; }));
}

TEST_F(ConfigTest, HealthKeyRequiredAndNotAKmsKey) {
  expect_error([](YAML::Node& n) { n["hsm"].remove("health_key"); }, "hsm.health_key");
  const std::string msg = expect_error(
      [](YAML::Node& n) { n["hsm"]["health_key"] = "demo-aes-label"; }, "hsm.health_key");
  EXPECT_THAT(msg, HasSubstr("dedicated"));
}

TEST_F(ConfigTest, IvModeMustBeKnown) {
  const std::string msg = expect_error([](YAML::Node& n) { n["hsm"]["iv"] = "random"; }, "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("hsm_into_zero_buffer"));
  EXPECT_THAT(msg, HasSubstr("hsm_appended"));
}

TEST_F(ConfigTest, EarlierIvModeNamesAreRefusedNamingTheirReplacement) {
  std::string msg = expect_error([](YAML::Node& n) { n["hsm"]["iv"] = "hsm_random"; }, "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("caller_random"));
  msg = expect_error([](YAML::Node& n) { n["hsm"]["iv"] = "hsm_generated"; }, "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("hsm_into_zero_buffer"));
}

TEST_F(ConfigTest, IvModesAVendorMishandlesAreRefused) {
  // A zeroed buffer on a module that uses its IV as given would repeat the IV.
  std::string msg = expect_error(
      [](YAML::Node& n) {
        n["hsm"]["vendor"] = "luna";
        n["hsm"]["iv"] = "hsm_into_zero_buffer";
      },
      "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("Thales Luna"));
  EXPECT_THAT(msg, HasSubstr("every encryption"));
  msg = expect_error(
      [](YAML::Node& n) {
        n["hsm"]["vendor"] = "softhsm2";
        n["hsm"]["iv"] = "hsm_into_zero_buffer";
      },
      "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("caller_random"));
  msg = expect_error(
      [](YAML::Node& n) {
        n["hsm"]["vendor"] = "cloudhsm";
        n["hsm"]["pin"] = YAML::Load("{ env: XKS_TEST_CU_PIN }");
        ::setenv("XKS_TEST_CU_PIN", "crypto-user:password1", 1);
        n["hsm"]["iv"] = "caller_random";
      },
      "hsm.iv");
  EXPECT_THAT(msg, HasSubstr("CKR_MECHANISM_PARAM_INVALID"));
}

TEST_F(ConfigTest, VendorAndCodesMustBeKnown) {
  std::string msg =
      expect_error([](YAML::Node& n) { n["hsm"]["vendor"] = "thales"; }, "hsm.vendor");
  EXPECT_THAT(msg, HasSubstr("luna"));
  msg = expect_error(
      [](YAML::Node& n) {
        n["hsm"]["auth_failure_codes"] = YAML::Load("[CKR_ENCRYPTED_DATA_INVALID, CKR_BAD_TAG]");
      },
      "hsm.auth_failure_codes[1]");
  EXPECT_THAT(msg, HasSubstr("pkcs11.h"));
  expect_error([](YAML::Node& n) { n["hsm"]["auth_failure_codes"] = YAML::Load("[CKR_OK]"); },
               "hsm.auth_failure_codes[0]");
}

TEST_F(ConfigTest, CloudHsmPinMustBeUserColonPasswordAndIsNeverShown) {
  const std::string msg = expect_error(
      [](YAML::Node& n) {
        n["hsm"]["vendor"] = "cloudhsm";
        n["hsm"].remove("iv");
      },
      "hsm.pin");
  EXPECT_THAT(msg, HasSubstr("user:password"));
  EXPECT_THAT(msg, Not(HasSubstr(kPin)));
}

TEST_F(ConfigTest, NssNeedsInitArgs) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["hsm"]["vendor"] = "nss"; }, "hsm.init_args");
  EXPECT_THAT(msg, HasSubstr("configdir"));
}

TEST_F(ConfigTest, OneTokenSelectorExactly) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["hsm"]["token_serial"] = "1234"; }, "hsm");
  EXPECT_THAT(msg, HasSubstr("token_serial"));
  expect_error(
      [](YAML::Node& n) {
        n["hsm"].remove("token_label");
        n["hsm"]["token_serial"] = "0123456789abcdef0";
      },
      "hsm.token_serial");
  expect_error([](YAML::Node& n) { n["hsm"]["environment"] = YAML::Load("{ 1BAD: x }"); },
               "hsm.environment.1BAD");
}

// ------------------------------------------------------------ secrets

TEST_F(ConfigTest, PinIsRequired) {
  expect_error([](YAML::Node& n) { n["hsm"].remove("pin"); }, "hsm.pin");
}

TEST_F(ConfigTest, InlineSecretIsRefusedWithoutEchoingIt) {
  std::string msg = expect_error([](YAML::Node& n) { n["hsm"]["pin"] = kPin; }, "hsm.pin");
  EXPECT_THAT(msg, HasSubstr("never written in the configuration"));
  msg = expect_error([](YAML::Node& n) { cred0(n)["secret"] = kSecret; },
                     "keystores[0].credentials[0].secret");
}

TEST_F(ConfigTest, SecretSourceNeedsExactlyOneOfFileAndEnv) {
  expect_error([](YAML::Node& n) { n["hsm"]["pin"] = YAML::Load("{file: a, env: B}"); }, "hsm.pin");
  expect_error([](YAML::Node& n) { n["hsm"]["pin"] = YAML::Load("{}"); }, "hsm.pin");
  expect_error([](YAML::Node& n) { n["hsm"]["pin"] = YAML::Load("{env: 1BAD}"); }, "hsm.pin.env");
  expect_error(
      [](YAML::Node& n) {
        n["hsm"]["pin"] = YAML::Load("{env: A, allow_insecure_permissions: true}");
      },
      "hsm.pin.allow_insecure_permissions");
}

TEST_F(ConfigTest, SecretFileMustExist) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["hsm"]["pin"]["file"] = "secrets/none"; }, "hsm.pin");
  EXPECT_THAT(msg, HasSubstr("does not exist"));
}

TEST_F(ConfigTest, SecretFileMustBeRegular) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["hsm"]["pin"]["file"] = "secrets"; }, "hsm.pin");
  EXPECT_THAT(msg, HasSubstr("not a regular file"));
}

TEST_F(ConfigTest, SecretFileWithInsecurePermissionsIsRefused) {
  for (const ::mode_t mode : {0640, 0604, 0620, 0602, 0660, 0644, 0666}) {
    write("secrets/hsm.pin", std::string(kPin) + "\n", mode);
    const std::string msg = expect_error([](YAML::Node&) {}, "hsm.pin");
    EXPECT_THAT(msg, HasSubstr("group or others"));
    EXPECT_THAT(msg, HasSubstr("chmod 600 " + (dir_ / "secrets/hsm.pin").string()));
    EXPECT_THAT(msg, HasSubstr("allow_insecure_permissions: true"));
  }
  write("secrets/hsm.pin", std::string(kPin) + "\n", 0400);
  EXPECT_NO_THROW(load_config(write_config(base())));
}

TEST_F(ConfigTest, InsecurePermissionMessageShowsTheMode) {
  write("secrets/demo.secret", std::string(kSecret) + "\n", 0644);
  const std::string msg = expect_error([](YAML::Node&) {}, "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("mode 0644"));
}

TEST_F(ConfigTest, UnreadableSecretFile) {
  if (::geteuid() == 0) GTEST_SKIP() << "root reads every file";
  write("secrets/hsm.pin", kPin, 0000);
  EXPECT_THAT(expect_error([](YAML::Node&) {}, "hsm.pin"), HasSubstr("cannot be read"));
}

TEST_F(ConfigTest, EmptySecretFile) {
  write("secrets/hsm.pin", "\nsecond\n");
  EXPECT_THAT(expect_error([](YAML::Node&) {}, "hsm.pin"), HasSubstr("is empty"));
}

TEST_F(ConfigTest, HugeSecretFile) {
  write("secrets/hsm.pin", std::string(5000, 'x'));
  EXPECT_THAT(expect_error([](YAML::Node&) {}, "hsm.pin"), HasSubstr("one short line"));
}

TEST_F(ConfigTest, EnvSecretMustBeSetAndNonEmpty) {
  ScopedEnv unset("XKS_TEST_UNSET_VAR", nullptr);
  std::string msg = expect_error(
      [](YAML::Node& n) { n["hsm"]["pin"] = YAML::Load("{env: XKS_TEST_UNSET_VAR}"); }, "hsm.pin");
  EXPECT_THAT(msg, HasSubstr("XKS_TEST_UNSET_VAR is not set"));
  ScopedEnv empty("XKS_TEST_EMPTY_VAR", "");
  msg = expect_error(
      [](YAML::Node& n) { cred0(n)["secret"] = YAML::Load("{env: XKS_TEST_EMPTY_VAR}"); },
      "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("is empty"));
}

TEST_F(ConfigTest, SecretLengthAndAlphabetAreCheckedWithoutShowingIt) {
  write("secrets/demo.secret", std::string(kSecret).substr(0, 42));
  std::string msg = expect_error([](YAML::Node&) {}, "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("has 42 characters"));
  EXPECT_THAT(msg, Not(HasSubstr(std::string(kSecret).substr(0, 42))));

  write("secrets/demo.secret", std::string(kSecret) + std::string(19, 'A'));  // 65
  msg = expect_error([](YAML::Node&) {}, "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("has 65 characters"));

  write("secrets/demo.secret", std::string(kSecret) + " \n");  // trailing space
  msg = expect_error([](YAML::Node&) {}, "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("outside A-Z a-z 0-9 + / ="));

  ScopedEnv env("XKS_TEST_BAD_SECRET", "short-secret-value");
  msg = expect_error(
      [](YAML::Node& n) { cred0(n)["secret"] = YAML::Load("{env: XKS_TEST_BAD_SECRET}"); },
      "keystores[0].credentials[0].secret");
  EXPECT_THAT(msg, HasSubstr("env XKS_TEST_BAD_SECRET"));
  EXPECT_THAT(msg, Not(HasSubstr("short-secret-value")));
}

// ------------------------------------------------------------ keystores

TEST_F(ConfigTest, AtLeastOneKeyStoreCredentialAndKey) {
  expect_error([](YAML::Node& n) { n.remove("keystores"); }, "keystores");
  expect_error([](YAML::Node& n) { n["keystores"] = YAML::Load("[]"); }, "keystores");
  expect_error([](YAML::Node& n) { n["keystores"][0].remove("credentials"); },
               "keystores[0].credentials");
  expect_error([](YAML::Node& n) { n["keystores"][0]["credentials"] = YAML::Load("[]"); },
               "keystores[0].credentials");
  expect_error([](YAML::Node& n) { n["keystores"][0].remove("keys"); }, "keystores[0].keys");
  expect_error([](YAML::Node& n) { n["keystores"][0]["keys"] = YAML::Load("[]"); },
               "keystores[0].keys");
}

TEST_F(ConfigTest, UriPathMustEndWithKmsXksV1) {
  const std::string msg =
      expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/demo/kms/xks"; },
                   "keystores[0].uri_path");
  EXPECT_THAT(
      msg,
      HasSubstr(": keystores[0].uri_path: \"/demo/kms/xks\" must end with /kms/xks/v1; "
                "fix: set it to the XksProxyUriPath configured in KMS, e.g. /demo/kms/xks/v1"));
}

TEST_F(ConfigTest, UriPathRules) {
  const std::string up = "keystores[0].uri_path";
  expect_error([](YAML::Node& n) { n["keystores"][0].remove("uri_path"); }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "demo/kms/xks/v1"; }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/de mo/kms/xks/v1"; }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/demo.x/kms/xks/v1"; }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/demo//kms/xks/v1"; }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/demo/kms/xks/v1/"; }, up);
  expect_error([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "//kms/xks/v1"; }, up);
  const std::string long_ok = "/" + std::string(128 - 12, 'a') + "/kms/xks/v1";
  ASSERT_EQ(long_ok.size(), 128U);
  EXPECT_NO_THROW(load_mutated([&](YAML::Node& n) { n["keystores"][0]["uri_path"] = long_ok; }));
  EXPECT_THAT(
      expect_error([&](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/a" + long_ok; }, up),
      HasSubstr("longer than 128"));
  EXPECT_NO_THROW(
      load_mutated([](YAML::Node& n) { n["keystores"][0]["uri_path"] = "/kms/xks/v1"; }));
}

TEST_F(ConfigTest, UriPathsUniqueAcrossKeyStores) {
  expect_error([](YAML::Node& n) { n["keystores"].push_back(YAML::Clone(n["keystores"][0])); },
               "keystores[1].uri_path");
}

TEST_F(ConfigTest, KeyIdRules) {
  const std::string id = "keystores[0].keys[0].id";
  expect_error([](YAML::Node& n) { key0(n).remove("id"); }, id);
  expect_error([](YAML::Node& n) { key0(n)["id"] = ""; }, id);
  expect_error([](YAML::Node& n) { key0(n)["id"] = "bad/id"; }, id);
  expect_error([](YAML::Node& n) { key0(n)["id"] = "bad id"; }, id);
  expect_error([](YAML::Node& n) { key0(n)["id"] = std::string(129, 'k'); }, id);
  EXPECT_NO_THROW(load_mutated([](YAML::Node& n) { key0(n)["id"] = std::string(128, 'k'); }));
}

TEST_F(ConfigTest, KeyIdsUniqueWithinAKeyStore) {
  expect_error([](YAML::Node& n) { n["keystores"][0]["keys"][1]["id"] = "demo-aes-key"; },
               "keystores[0].keys[1].id");
}

TEST_F(ConfigTest, KeyLabelNonEmptyAndEnabledBoolean) {
  expect_error([](YAML::Node& n) { key0(n)["label"] = ""; }, "keystores[0].keys[0].label");
  expect_error([](YAML::Node& n) { key0(n)["enabled"] = "sometimes"; },
               "keystores[0].keys[0].enabled");
}

TEST_F(ConfigTest, ExpectUsageIsASetOfUsagesPossiblyEmpty) {
  EXPECT_FALSE(load_mutated([](YAML::Node&) {}).keystores[0].keys[0].expect_usage);
  for (const auto& [text, encrypt, decrypt] :
       std::vector<std::tuple<std::string, bool, bool>>{{"[ENCRYPT]", true, false},
                                                        {"[DECRYPT]", false, true},
                                                        {"[]", false, false},
                                                        {"[DECRYPT, ENCRYPT]", true, true}}) {
    const Config c =
        load_mutated([&](YAML::Node& n) { key0(n)["expect_usage"] = YAML::Load(text); });
    const auto& u = c.keystores[0].keys[0].expect_usage;
    ASSERT_TRUE(u) << text;
    EXPECT_EQ(u->encrypt, encrypt) << text;
    EXPECT_EQ(u->decrypt, decrypt) << text;
  }
  const std::string p = "keystores[0].keys[0].expect_usage";
  expect_error([](YAML::Node& n) { key0(n)["expect_usage"] = "ENCRYPT"; }, p);
  expect_error([](YAML::Node& n) { key0(n)["expect_usage"] = YAML::Load("[encrypt]"); }, p + "[0]");
  expect_error([](YAML::Node& n) { key0(n)["expect_usage"] = YAML::Load("[SIGN]"); }, p + "[0]");
  expect_error([](YAML::Node& n) { key0(n)["expect_usage"] = YAML::Load("[ENCRYPT, ENCRYPT]"); },
               p + "[1]");
}

TEST_F(ConfigTest, AccessKeyIdRules) {
  const std::string ak = "keystores[0].credentials[0].access_key_id";
  expect_error([](YAML::Node& n) { cred0(n).remove("access_key_id"); }, ak);
  expect_error([](YAML::Node& n) { cred0(n)["access_key_id"] = "AKIAXKSPROXYEXAMPL"; }, ak);  // 18
  expect_error([](YAML::Node& n) { cred0(n)["access_key_id"] = std::string(31, 'A'); }, ak);
  expect_error([](YAML::Node& n) { cred0(n)["access_key_id"] = "AKIAXKSPROXYEXAMPLE1"; }, ak);  // 1
  expect_error([](YAML::Node& n) { cred0(n)["access_key_id"] = "akiaxksproxyexample2"; }, ak);
  EXPECT_NO_THROW(
      load_mutated([](YAML::Node& n) { cred0(n)["access_key_id"] = std::string(30, 'Z'); }));
}

TEST_F(ConfigTest, AccessKeyIdsUniqueWithinAKeyStore) {
  expect_error(
      [](YAML::Node& n) {
        YAML::Node c2 = YAML::Clone(cred0(n));
        c2["secret"]["file"] = "secrets/other.secret";
        n["keystores"][0]["credentials"].push_back(c2);
      },
      "keystores[0].credentials[1].access_key_id");
}

TEST_F(ConfigTest, NotAfterMustBeATime) {
  for (const std::string bad :
       {"tomorrow", "2027-13-01", "2027-02-30", "2027-01-01T00:00:00", "2027-01-01T25:00:00Z",
        "2027-01-01T00:00Z", "2027-01-01Z", "9881-01-01", "2263-04-12T00:00:00Z", "1969-12-31"}) {
    expect_error([&](YAML::Node& n) { cred0(n)["not_after"] = bad; },
                 "keystores[0].credentials[0].not_after");
  }
}

// ------------------------------------------------------------ health / logging

TEST_F(ConfigTest, HealthRanges) {
  expect_error([](YAML::Node& n) { n["health"]["max_age_ms"] = 60001; }, "health.max_age_ms");
  expect_error([](YAML::Node& n) { n["health"]["interval_ms"] = 99; }, "health.interval_ms");
  expect_error([](YAML::Node& n) { n["health"]["degraded_latency_ms"] = 0; },
               "health.degraded_latency_ms");
  const std::string msg = expect_error(
      [](YAML::Node& n) {
        n["health"]["interval_ms"] = 30000;
        n["health"]["max_age_ms"] = 20000;
      },
      "health.max_age_ms");
  EXPECT_THAT(msg, HasSubstr("interval_ms"));
}

TEST_F(ConfigTest, LoggingValues) {
  expect_error([](YAML::Node& n) { n["logging"]["level"] = "verbose"; }, "logging.level");
  expect_error([](YAML::Node& n) { n["logging"]["format"] = "xml"; }, "logging.format");
}

TEST_F(ConfigTest, LogFileSettings) {
  fs::create_directories(dir_ / "logs");
  const auto file = [](std::function<void(YAML::Node&)> f) {
    return [f](YAML::Node& n) {
      n["logging"]["file"]["path"] = "logs/xks.log";
      f(n);
    };
  };
  expect_error([](YAML::Node& n) { n["logging"]["file"]["rotate"] = "size"; }, "logging.file.path");
  std::string msg =
      expect_error([](YAML::Node& n) { n["logging"]["file"]["path"] = "missing-folder/xks.log"; },
                   "logging.file.path");
  EXPECT_THAT(msg, HasSubstr("does not exist"));
  msg = expect_error([](YAML::Node& n) { n["logging"]["file"]["path"] = "logs"; },
                     "logging.file.path");
  EXPECT_THAT(msg, HasSubstr("is a folder"));
  expect_error(file([](YAML::Node& n) { n["logging"]["file"]["rotate"] = "hourly"; }),
               "logging.file.rotate");
  expect_error(file([](YAML::Node& n) { n["logging"]["file"]["max_size_mb"] = 0; }),
               "logging.file.max_size_mb");
  expect_error(file([](YAML::Node& n) { n["logging"]["file"]["max_files"] = 0; }),
               "logging.file.max_files");
  for (const char* bad : {"24:00", "7:30", "07:60", "0730", "07:3x", "-1:30"}) {
    SCOPED_TRACE(bad);
    expect_error(file([bad](YAML::Node& n) {
                   n["logging"]["file"]["rotate"] = "daily";
                   n["logging"]["file"]["daily_at"] = bad;
                 }),
                 "logging.file.daily_at");
  }
  msg = expect_error(file([](YAML::Node& n) {
                       n["logging"]["file"]["rotate"] = "daily";
                       n["logging"]["file"]["max_size_mb"] = 5;
                     }),
                     "logging.file.max_size_mb");
  EXPECT_THAT(msg, HasSubstr("rotate: size"));
  expect_error(file([](YAML::Node& n) { n["logging"]["file"]["daily_at"] = "01:00"; }),
               "logging.file.daily_at");
  expect_error(file([](YAML::Node& n) { n["logging"]["file"]["colour"] = "red"; }),
               "logging.file.colour");
  expect_error([](YAML::Node& n) { n["logging"]["flush_interval_ms"] = 10001; },
               "logging.flush_interval_ms");
}

TEST_F(ConfigTest, ValuesWithControlCharactersStayOnOneLine) {
  const std::string msg = expect_error(
      [](YAML::Node& n) { n["logging"]["level"] = "info\n\x1b[31mred"; }, "logging.level");
  EXPECT_THAT(msg, HasSubstr("\\x0a"));
  EXPECT_EQ(msg.find('\x1b'), std::string::npos);
}

}  // namespace
}  // namespace xks::config::test

// ------------------------------------------------------------ mTLS names and key store region

namespace xks::config::test {
namespace {

using ::testing::HasSubstr;

TEST_F(ConfigTest, ClientCaWithoutNamesNeedsARegion) {
  // A CA alone would accept every certificate it issued.
  const std::string msg =
      expect_error([](YAML::Node& n) { n["tls"].remove("client_names"); }, "tls.client_names");
  EXPECT_THAT(msg, HasSubstr("keystores[0].region"));
  EXPECT_THAT(msg, HasSubstr("cks.kms.<region>.amazonaws.com"));
}

TEST_F(ConfigTest, ClientNamesDefaultToKmsSubjectOfEachRegion) {
  const Config c = load_mutated([](YAML::Node& n) {
    n["tls"].remove("client_names");
    n["keystores"][0]["region"] = "eu-west-1";
    YAML::Node second = YAML::Clone(n["keystores"][0]);
    second["uri_path"] = "/other/kms/xks/v1";
    second["region"] = "us-gov-west-1";
    n["keystores"].push_back(second);
  });
  EXPECT_EQ(c.tls.client_names, (std::vector<std::string>{"cks.kms.eu-west-1.amazonaws.com",
                                                          "cks.kms.us-gov-west-1.amazonaws.com"}));
  EXPECT_TRUE(c.tls.client_names_defaulted);
  EXPECT_EQ(c.tls.client_names_match, TlsConfig::NameMatch::Cn);
  EXPECT_EQ(c.keystores[0].region, std::optional<std::string>("eu-west-1"));
}

TEST_F(ConfigTest, ExplicitClientNamesAreKept) {
  const Config c = load_mutated([](YAML::Node& n) { n["keystores"][0]["region"] = "us-east-1"; });
  EXPECT_EQ(c.tls.client_names, std::vector<std::string>{"cks.kms.eu-west-1.amazonaws.com"});
  EXPECT_FALSE(c.tls.client_names_defaulted);
}

TEST_F(ConfigTest, ClientNamesMatch) {
  const Config c =
      load_mutated([](YAML::Node& n) { n["tls"]["client_names_match"] = "cn_or_dns_san"; });
  EXPECT_EQ(c.tls.client_names_match, TlsConfig::NameMatch::CnOrDnsSan);
  const std::string msg = expect_error(
      [](YAML::Node& n) { n["tls"]["client_names_match"] = "san"; }, "tls.client_names_match");
  EXPECT_THAT(msg, HasSubstr("cn_or_dns_san"));
}

TEST_F(ConfigTest, KeystoreRegionMustBeARegionName) {
  for (const char* bad :
       {"EU-WEST-1", "eu_west_1", "euwest1", "eu-west-", "-eu-1", "eu--west-1", ""}) {
    SCOPED_TRACE(bad);
    const std::string msg =
        expect_error([bad](YAML::Node& n) { n["keystores"][0]["region"] = std::string(bad); },
                     "keystores[0].region");
    EXPECT_THAT(msg, HasSubstr("eu-west-1"));
  }
}

TEST_F(ConfigTest, KeystoreEnabled) {
  EXPECT_TRUE(load_mutated([](YAML::Node&) {}).keystores[0].enabled);
  EXPECT_FALSE(load_mutated([](YAML::Node& n) { n["keystores"][0]["enabled"] = false; })
                   .keystores[0]
                   .enabled);
  expect_error([](YAML::Node& n) { n["keystores"][0]["enabled"] = "off"; }, "keystores[0].enabled");
}

}  // namespace
}  // namespace xks::config::test
