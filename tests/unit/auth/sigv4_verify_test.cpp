// Round trips through sign() and every way verify() must say no.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "sigv4_test_util.hpp"
#include "xks/auth/canonical.hpp"

namespace xks::auth {
namespace {

using test::OwnedRequest;
using namespace std::chrono_literals;

constexpr std::string_view kAkid = "AKIAXKSPROXYTEST2345";
constexpr std::string_view kSecret = "c2VjcmV0LWZvci11bml0LXRlc3RzLW9ubHktMDEyMzQ1Njc4OQ==";
constexpr std::string_view kHost = "xks.example.com";
constexpr std::string_view kTarget = "/tenant-a/kms/xks/v1/keys/key-1/encrypt";
constexpr std::string_view kBody =
    R"({"requestMetadata":{"kmsRequestId":"r1","kmsOperation":"Encrypt"},"plaintext":"AAAA","encryptionAlgorithm":"AES_GCM"})";

std::chrono::system_clock::time_point t0() { return test::suite_time() + 24h * 3000; }

const SecureString* lookup(std::string_view akid) {
  static const SecureString secret(kSecret);
  return akid == kAkid ? &secret : nullptr;
}

struct Options {
  std::string_view secret = kSecret;
  std::string_view region = "us-east-1";
  std::string_view service = kXksService;
  std::chrono::system_clock::time_point at = t0();
  std::vector<std::pair<std::string, std::string>> extra = {{"content-type", "application/json"}};
  bool send_extra = true;
};

OwnedRequest signed_request(const Options& o = {}) {
  SignInput in;
  in.method = "POST";
  in.host = kHost;
  in.target = kTarget;
  in.body = kBody;
  in.region = o.region;
  in.service = o.service;
  in.access_key_id = kAkid;
  in.secret = o.secret;
  in.now = o.at;
  in.extra_signed_headers = o.extra;
  const SignedHeaders sh = sign(in);
  OwnedRequest r;
  r.target = kTarget;
  r.body = kBody;
  r.headers.insert("Host", kHost);
  r.headers.insert("X-Amz-Date", sh.amz_date);
  r.headers.insert("Authorization", sh.authorization);
  if (o.send_extra) {
    for (const auto& [n, v] : o.extra) r.headers.insert(n, v);
  }
  return r;
}

class Verify : public ::testing::Test {
 protected:
  Result<Verified> run(const OwnedRequest& r, std::chrono::system_clock::time_point now = t0()) {
    return verifier_.verify(r.view(), lookup, now);
  }
  // Expects a failure whose message contains `needle`, and checks the rules
  // every failure message follows.
  void expect_failure(const OwnedRequest& r, std::string_view needle,
                      std::chrono::system_clock::time_point now = t0()) {
    const auto result = run(r, now);
    ASSERT_FALSE(result) << "expected failure containing: " << needle;
    const Error& e = result.error();
    EXPECT_EQ(e.name, ErrorName::AuthenticationFailedException);
    EXPECT_NE(e.message.find(needle), std::string::npos) << e.message;
    EXPECT_TRUE(test::printable_ascii(e.message)) << e.message;
    EXPECT_LT(e.message.size(), 512u);
    EXPECT_EQ(e.message.find(kSecret), std::string::npos);
    // The right signature for this request must never be disclosed.
    const std::string right = signed_request().headers["Authorization"];
    EXPECT_EQ(e.message.find(right.substr(right.size() - 64)), std::string::npos);
  }
  void with_authorization(OwnedRequest& r, std::string_view value) {
    r.headers.set("Authorization", value);
  }

  SigV4Verifier verifier_;
};

TEST_F(Verify, RoundTrip) {
  const auto r = run(signed_request());
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->access_key_id, kAkid);
  EXPECT_EQ(r->region, "us-east-1");
}

TEST_F(Verify, AnyRegionIsAccepted) {
  Options o;
  o.region = "ap-southeast-2";
  const auto r = run(signed_request(o));
  ASSERT_TRUE(r) << r.error().message;
  EXPECT_EQ(r->region, "ap-southeast-2");
}

TEST_F(Verify, KmsStyleMinimalSignedHeaders) {
  Options o;
  o.extra = {};
  OwnedRequest r = signed_request(o);
  r.headers.insert("Content-Type", "application/json");  // sent, not signed: fine
  EXPECT_TRUE(run(r));
  EXPECT_NE(std::string(r.headers["Authorization"]).find("SignedHeaders=host;x-amz-date,"),
            std::string::npos);
}

TEST_F(Verify, WrongSecret) {
  Options o;
  o.secret = "c2VjcmV0LWZvci11bml0LXRlc3RzLW9ubHktMDEyMzQ1Njc4OA==";
  expect_failure(signed_request(o), "signature does not match");
}

TEST_F(Verify, UnknownAccessKeyId) {
  OwnedRequest r = signed_request();
  std::string auth(r.headers["Authorization"]);
  auth.replace(auth.find(kAkid), kAkid.size(), "AKIAUNKNOWNKEY234567");
  with_authorization(r, auth);
  expect_failure(r, "unknown access key id \"AKIAUNKNOWNKEY234567\"");
}

TEST_F(Verify, NoLookupMeansUnknown) {
  const auto r = verifier_.verify(signed_request().view(), SecretLookup{}, t0());
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message.find("unknown access key id"), std::string::npos);
}

TEST_F(Verify, AnExpiredCredentialIsRefusedNamingItsNotAfter) {
  const auto until = t0() - 1h;
  const SecretLookup expired = [&](std::string_view) { return SecretLookupResult::expired(until); };
  const auto r = verifier_.verify(signed_request().view(), expired, t0());
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().name, ErrorName::AuthenticationFailedException);
  EXPECT_EQ(r.error().message,
            "access key id \"" + std::string(kAkid) + "\" has expired (its not_after has passed)");
  EXPECT_EQ(r.error().detail, "keystores[].credentials[].not_after " + format_amz_date(until));
  EXPECT_TRUE(test::printable_ascii(r.error().message));
  // Checked before the signature: a wrong secret still says expired.
  const auto wrong = verifier_.verify(signed_request({.secret = "d3Jvbmc="}).view(), expired, t0());
  ASSERT_FALSE(wrong);
  EXPECT_NE(wrong.error().message.find("has expired"), std::string::npos);
}

TEST_F(Verify, ALookupResultSaysWhatItHolds) {
  const SecureString secret(kSecret);
  EXPECT_EQ(SecretLookupResult(&secret).state, SecretLookupResult::State::Found);
  EXPECT_EQ(SecretLookupResult(&secret).secret, &secret);
  EXPECT_EQ(SecretLookupResult(nullptr).state, SecretLookupResult::State::Unknown);
  EXPECT_EQ(SecretLookupResult{}.state, SecretLookupResult::State::Unknown);
  EXPECT_EQ(SecretLookupResult::expired(t0()).state, SecretLookupResult::State::Expired);
  EXPECT_EQ(SecretLookupResult::expired(t0()).not_after, t0());
}

TEST_F(Verify, TamperedBody) {
  OwnedRequest r = signed_request();
  r.body.replace(r.body.find("AAAA"), 4, "AAAB");
  expect_failure(r, "signature does not match");
}

TEST_F(Verify, ChangedHost) {
  OwnedRequest r = signed_request();
  r.headers.set("Host", "evil.example.com");
  expect_failure(r, "signature does not match");
}

TEST_F(Verify, ChangedPathOrMethod) {
  OwnedRequest r = signed_request();
  r.target = "/tenant-a/kms/xks/v1/keys/key-2/encrypt";
  expect_failure(r, "signature does not match");
  OwnedRequest m = signed_request();
  m.method = "PUT";
  expect_failure(m, "signature does not match");
}

TEST_F(Verify, ChangedSignedHeaderValue) {
  OwnedRequest r = signed_request();
  r.headers.set("Content-Type", "text/plain");
  expect_failure(r, "signature does not match");
}

TEST_F(Verify, ExtraValueForASignedHeader) {
  OwnedRequest r = signed_request();
  r.headers.insert("Content-Type", "text/plain");  // now "application/json,text/plain"
  expect_failure(r, "signature does not match");
}

TEST_F(Verify, WindowIsFiveMinutesEitherWay) {
  const OwnedRequest r = signed_request();
  EXPECT_TRUE(run(r, t0() + 300s));
  EXPECT_TRUE(run(r, t0() - 300s));
  expect_failure(r, "request date outside the 5-minute window", t0() + 301s);
  expect_failure(r, "behind the proxy clock", t0() + 301s);
  expect_failure(r, "request date outside the 5-minute window", t0() - 301s);
  expect_failure(r, "ahead of the proxy clock", t0() - 301s);
  expect_failure(r, "outside", t0() + 24h);
}

TEST_F(Verify, ConfigurableSkew) {
  const SigV4Verifier strict(SigV4Options{"kms-xks-proxy", 30s});
  const OwnedRequest r = signed_request();
  EXPECT_TRUE(strict.verify(r.view(), lookup, t0() + 30s));
  const auto res = strict.verify(r.view(), lookup, t0() + 31s);
  ASSERT_FALSE(res);
  EXPECT_NE(res.error().message.find("30-second window"), std::string::npos) << res.error().message;
}

TEST_F(Verify, DateDiffersFromScopeDate) {
  // Signed a few seconds before midnight; X-Amz-Date moved past midnight.
  Options o;
  const auto midnight = std::chrono::floor<std::chrono::days>(t0());
  o.at = midnight - 5s;
  OwnedRequest r = signed_request(o);
  r.headers.set("X-Amz-Date", format_amz_date(midnight + 5s));
  expect_failure(r, "differs from the credential scope date", midnight);
}

TEST_F(Verify, MalformedAmzDate) {
  for (const char* d :
       {"2015-08-30T12:36:00Z", "20150830T123600", "20150830 123600Z", "20150230T123600Z",
        "20150830T253600Z", "20150830T126000Z", "2015083OT123600Z", ""}) {
    OwnedRequest r = signed_request();
    r.headers.set("X-Amz-Date", d);
    expect_failure(r, "malformed X-Amz-Date");
  }
}

TEST_F(Verify, MissingOrRepeatedDate) {
  OwnedRequest r = signed_request();
  r.headers.erase("X-Amz-Date");
  expect_failure(r, "\"x-amz-date\" is missing");
  OwnedRequest twice = signed_request();
  twice.headers.insert("X-Amz-Date", twice.headers["X-Amz-Date"]);
  expect_failure(twice, "more than one X-Amz-Date");
}

TEST_F(Verify, SignedHeaderMissingFromRequest) {
  Options o;
  o.extra = {{"x-extra", "1"}};
  o.send_extra = false;
  expect_failure(signed_request(o), "signed header \"x-extra\" is missing from the request");
  OwnedRequest r = signed_request();
  r.headers.erase("Host");
  expect_failure(r, "signed header \"host\" is missing");
}

TEST_F(Verify, MissingAuthorization) {
  OwnedRequest r = signed_request();
  r.headers.erase("Authorization");
  expect_failure(r, "missing Authorization header");
}

TEST_F(Verify, RepeatedAuthorization) {
  OwnedRequest r = signed_request();
  r.headers.insert("Authorization", r.headers["Authorization"]);
  expect_failure(r, "more than one Authorization header");
}

TEST_F(Verify, HeaderNamesInAnyCase) {
  const OwnedRequest base = signed_request();
  OwnedRequest r = base;
  r.headers.clear();
  r.headers.insert("HOST", base.headers["Host"]);
  r.headers.insert("x-AMZ-date", base.headers["X-Amz-Date"]);
  r.headers.insert("AUTHORIZATION", base.headers["Authorization"]);
  r.headers.insert("Content-TYPE", base.headers["content-type"]);
  EXPECT_TRUE(run(r));
  r.headers.insert("authorization", base.headers["Authorization"]);
  expect_failure(r, "more than one Authorization header");
  OwnedRequest dates = base;
  dates.headers.insert("x-amz-DATE", base.headers["X-Amz-Date"]);
  expect_failure(dates, "more than one X-Amz-Date");
  OwnedRequest shas = base;
  shas.headers.insert("X-Amz-Content-Sha256", hex_sha256(kBody));
  EXPECT_TRUE(run(shas));
  shas.headers.insert("x-amz-content-SHA256", hex_sha256(kBody));
  expect_failure(shas, "more than one X-Amz-Content-Sha256");
}

TEST_F(Verify, PartsInAnyOrderAndWithoutSpaces) {
  const OwnedRequest base = signed_request();
  const std::string auth(base.headers["Authorization"]);
  // "AWS4-HMAC-SHA256 Credential=C, SignedHeaders=S, Signature=G"
  const auto cred_at = auth.find("Credential=");
  const auto sh_at = auth.find("SignedHeaders=");
  const auto sig_at = auth.find("Signature=");
  const std::string cred = auth.substr(cred_at, sh_at - 2 - cred_at);
  const std::string sh = auth.substr(sh_at, sig_at - 2 - sh_at);
  const std::string sig = auth.substr(sig_at);
  for (const std::string& v : {"AWS4-HMAC-SHA256 " + sig + ", " + sh + ", " + cred,
                               "AWS4-HMAC-SHA256 " + sh + "," + cred + "," + sig,
                               "AWS4-HMAC-SHA256 " + cred + ",  " + sig + " ,\t" + sh,
                               "AWS4-HMAC-SHA256   " + cred + "," + sh + "," + sig + " "}) {
    OwnedRequest r = signed_request();
    with_authorization(r, v);
    const auto res = run(r);
    EXPECT_TRUE(res) << v << ": " << (res ? "" : res.error().message);
  }
}

TEST_F(Verify, UpperCaseSignatureHexIsAccepted) {
  OwnedRequest r = signed_request();
  std::string auth(r.headers["Authorization"]);
  for (std::size_t i = auth.size() - 64; i < auth.size(); ++i) {
    if (auth[i] >= 'a' && auth[i] <= 'f') auth[i] = static_cast<char>(auth[i] - 'a' + 'A');
  }
  with_authorization(r, auth);
  EXPECT_TRUE(run(r));
}

struct Malformed {
  const char* authorization;  // "{C}" "{S}" "{G}" stand for the real parts
  const char* message;
};

TEST_F(Verify, MalformedAuthorizationHeaders) {
  const OwnedRequest base = signed_request();
  const std::string auth(base.headers["Authorization"]);
  const auto cred_at = auth.find("Credential=") + 11;
  const auto sh_at = auth.find("SignedHeaders=") + 14;
  const auto sig_at = auth.find("Signature=") + 10;
  const std::string cred = auth.substr(cred_at, auth.find(',', cred_at) - cred_at);
  const std::string sh = auth.substr(sh_at, auth.find(',', sh_at) - sh_at);
  const std::string sig = auth.substr(sig_at);
  const Malformed cases[] = {
      {"Basic dXNlcjpwYXNz", "not AWS4-HMAC-SHA256"},
      {"AWS4-HMAC-SHA1 Credential={C}, SignedHeaders={S}, Signature={G}", "not AWS4-HMAC-SHA256"},
      {"AWS4-HMAC-SHA256", "not AWS4-HMAC-SHA256"},
      {"AWS4-HMAC-SHA256,Credential={C}, SignedHeaders={S}, Signature={G}", "not AWS4-HMAC-SHA256"},
      {"AWS4-HMAC-SHA256 SignedHeaders={S}, Signature={G}", "Credential is missing"},
      {"AWS4-HMAC-SHA256 Credential={C}, Signature={G}", "SignedHeaders is missing"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}", "Signature is missing"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature={G}, Signature={G}",
       "Signature appears twice"},
      {"AWS4-HMAC-SHA256 Credential={C}, Credential={C}, SignedHeaders={S}, Signature={G}",
       "Credential appears twice"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature={G}, Extra=1",
       "unknown part \"Extra\""},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature={G},",
       "expected Credential="},
      {"AWS4-HMAC-SHA256 Credential={C} SignedHeaders={S} Signature={G}", "malformed"},
      {"AWS4-HMAC-SHA256 credential={C}, SignedHeaders={S}, Signature={G}", "unknown part"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature=abc", "malformed Signature"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature={G}0", "malformed Signature"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders={S}, Signature=zz{G}",
       "malformed Signature"},
      {"AWS4-HMAC-SHA256 Credential=AKIAXKSPROXYTEST2345/us-east-1/kms-xks-proxy/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "malformed Credential"},
      {"AWS4-HMAC-SHA256 Credential={C}/extra, SignedHeaders={S}, Signature={G}",
       "malformed Credential"},
      {"AWS4-HMAC-SHA256 Credential=/20230101/us-east-1/kms-xks-proxy/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "access key id"},
      {"AWS4-HMAC-SHA256 Credential=AKIA\"x/20230101/us-east-1/kms-xks-proxy/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "access key id"},
      {"AWS4-HMAC-SHA256 "
       "Credential=AKIAXKSPROXYTEST2345/2023-1-1/us-east-1/kms-xks-proxy/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "scope date is not yyyymmdd"},
      {"AWS4-HMAC-SHA256 Credential=AKIAXKSPROXYTEST2345/20230101/US "
       "EAST/kms-xks-proxy/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "region"},
      {"AWS4-HMAC-SHA256 Credential=AKIAXKSPROXYTEST2345/20230101/us-east-1/kms/aws4_request, "
       "SignedHeaders={S}, Signature={G}",
       "wrong service in the credential scope: \"kms\", expected \"kms-xks-proxy\""},
      {"AWS4-HMAC-SHA256 "
       "Credential=AKIAXKSPROXYTEST2345/20230101/us-east-1/kms-xks-proxy/aws5_request, "
       "SignedHeaders={S}, Signature={G}",
       "does not end with aws4_request"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=x-amz-date, Signature={G}",
       "SignedHeaders must include host"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=host, Signature={G}",
       "SignedHeaders must include x-amz-date"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=Host;X-Amz-Date, Signature={G}",
       "lower-case tokens"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=host;;x-amz-date, Signature={G}",
       "lower-case tokens"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=host;x-amz-date;, Signature={G}",
       "lower-case tokens"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=, Signature={G}", "malformed SignedHeaders"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=host;host;x-amz-date, Signature={G}",
       "\"host\" is listed twice"},
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=authorization;host;x-amz-date, "
       "Signature={G}",
       "cannot sign itself"},
      // Valid syntax, but not what was signed.
      {"AWS4-HMAC-SHA256 Credential={C}, SignedHeaders=host;x-amz-date, Signature={G}",
       "signature does not match"},
  };
  for (const Malformed& m : cases) {
    std::string v = m.authorization;
    for (const auto& [token, value] :
         {std::pair<std::string, std::string>{"{C}", cred}, {"{S}", sh}, {"{G}", sig}}) {
      for (auto at = v.find(token); at != std::string::npos; at = v.find(token)) {
        v.replace(at, token.size(), value);
      }
    }
    OwnedRequest r = signed_request();
    with_authorization(r, v);
    SCOPED_TRACE(v);
    expect_failure(r, m.message);
  }
}

TEST_F(Verify, NonPrintableAuthorizationIsNotEchoed) {
  OwnedRequest r = signed_request();
  with_authorization(r,
                     std::string("AWS4-HMAC-SHA256 Cr\x01\xff=1, SignedHeaders=host, Signature=0"));
  expect_failure(r, "unknown part");
}

TEST_F(Verify, ContentSha256HeaderMustMatchBody) {
  // Present but wrong: rejected even when it is not signed and the signature is fine.
  OwnedRequest wrong = signed_request();
  wrong.headers.insert("X-Amz-Content-Sha256", "a" + std::string(63, '0'));
  expect_failure(wrong, "X-Amz-Content-Sha256 does not match");

  // The proxy always needs the body signed.
  OwnedRequest unsigned_payload = signed_request();
  unsigned_payload.headers.insert("X-Amz-Content-Sha256", "UNSIGNED-PAYLOAD");
  expect_failure(unsigned_payload, "X-Amz-Content-Sha256 does not match");
}

TEST_F(Verify, ContentSha256HeaderThatMatchesIsFine) {
  // Signed, as the SDKs that send it do.
  Options o;
  o.extra = {{"content-type", "application/json"}, {"x-amz-content-sha256", hex_sha256(kBody)}};
  OwnedRequest r = signed_request(o);
  EXPECT_TRUE(run(r));
  // Unsigned and in upper case: still the body's hash.
  OwnedRequest u = signed_request();
  std::string upper = hex_sha256(kBody);
  for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  u.headers.insert("X-Amz-Content-Sha256", upper);
  EXPECT_TRUE(run(u));
}

TEST_F(Verify, TargetMustBeAnAbsolutePath) {
  OwnedRequest r = signed_request();
  r.target = "http://xks.example.com/tenant-a/kms/xks/v1/keys/key-1/encrypt";
  expect_failure(r, "not an absolute path");
}

TEST_F(Verify, ManyDatesAndRegionsAndThreads) {
  // More (date, region) pairs than the signing-key cache holds, from several
  // threads at once: every verification must still be right.
  const char* regions[] = {"us-east-1", "us-west-2",    "eu-west-1",  "eu-central-1", "ap-south-1",
                           "sa-east-1", "ca-central-1", "me-south-1", "af-south-1"};
  std::vector<std::pair<OwnedRequest, std::chrono::system_clock::time_point>> reqs;
  for (int day = 0; day < 6; ++day) {
    for (const char* region : regions) {
      Options o;
      o.region = region;
      o.at = t0() + 24h * day;
      reqs.emplace_back(signed_request(o), o.at);
    }
  }
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int round = 0; round < 3; ++round) {
        for (std::size_t i = 0; i < reqs.size(); ++i) {
          const auto& [req, at] = reqs[(i + static_cast<std::size_t>(t) * 7) % reqs.size()];
          if (!verifier_.verify(req.view(), lookup, at)) ++failures;
          OwnedRequest bad = req;
          bad.body += " ";
          if (verifier_.verify(bad.view(), lookup, at)) ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST_F(Verify, RotatedSecretIsNotServedFromTheKeyCache) {
  // Same access key id, date and region, new secret: the key derived from the
  // old secret (cached by the first verification) must not be used.
  constexpr std::string_view kRotated = "cm90YXRlZC1zZWNyZXQtZm9yLXVuaXQtdGVzdHMtMDEyMzQ1Ng==";
  SecureString current(kSecret);
  const SecretLookup rotating = [&](std::string_view akid) -> const SecureString* {
    return akid == kAkid ? &current : nullptr;
  };
  const OwnedRequest old_signed = signed_request();
  Options o;
  o.secret = kRotated;
  const OwnedRequest new_signed = signed_request(o);
  EXPECT_TRUE(verifier_.verify(old_signed.view(), rotating, t0()));
  EXPECT_FALSE(verifier_.verify(new_signed.view(), rotating, t0()));
  current = SecureString(kRotated);
  EXPECT_FALSE(verifier_.verify(old_signed.view(), rotating, t0()));
  EXPECT_TRUE(verifier_.verify(new_signed.view(), rotating, t0()));
}

TEST_F(Verify, KeysAreNotSharedAcrossServices) {
  // Two verifiers on one thread, same secret, date and region, different
  // services: each must use its own signing key.
  SigV4Options one_options, two_options;
  one_options.service = "svc-one";
  two_options.service = "svc-two";
  const SigV4Verifier one(one_options), two(two_options);
  Options o;
  o.service = "svc-one";
  const OwnedRequest for_one = signed_request(o);
  o.service = "svc-two";
  const OwnedRequest for_two = signed_request(o);
  for (int round = 0; round < 2; ++round) {
    EXPECT_TRUE(one.verify(for_one.view(), lookup, t0()));
    EXPECT_TRUE(two.verify(for_two.view(), lookup, t0()));
    EXPECT_FALSE(one.verify(for_two.view(), lookup, t0()));
    EXPECT_FALSE(two.verify(for_one.view(), lookup, t0()));
  }
}

TEST_F(Verify, VerifierIsMovable) {
  SigV4Verifier moved(std::move(verifier_));
  EXPECT_TRUE(moved.verify(signed_request().view(), lookup, t0()));
  EXPECT_EQ(moved.options().service, "kms-xks-proxy");
}

TEST(Sign, FormatsAmzDate) {
  EXPECT_EQ(format_amz_date(test::suite_time()), "20150830T123600Z");
  EXPECT_EQ(format_amz_date(test::suite_time() + 999ms), "20150830T123600Z");
  using namespace std::chrono;
  EXPECT_EQ(format_amz_date(sys_days{year{2024} / February / 29} + 23h + 59min + 59s),
            "20240229T235959Z");
}

}  // namespace
}  // namespace xks::auth
