// xksctl doctor: answers "which part is wrong" before KMS does. Every FAIL names
// the connection error code or exception a KMS customer would see and the fix
// (docs/xksctl.md lists every check).
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <boost/asio/ip/address.hpp>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "xks/config/config.hpp"
#include "xks/hsm/ckr.hpp"
#include "xks/net/tls_context.hpp"
#include "xks/tools/cli.hpp"
#include "xks/tools/token.hpp"
#include "xks/tools/util.hpp"
#include "xks/tools/xks_client.hpp"

namespace xks::tools {

namespace {

constexpr const char* kDoctorHelp =
    "usage: xksctl doctor [--config FILE] [--endpoint https://host[:port]] [--cacert PEM] "
    "[--region R]\n"
    "\n"
    "Checks what KMS will trip over and prints PASS / WARN / FAIL lines; each FAIL names the\n"
    "KMS connection error code or exception the customer would see, and the fix:\n"
    "  configuration (load_config), URI paths, credential formats and expiry;\n"
    "  the TLS certificate: validity and days to expiry, name match for the endpoint host,\n"
    "  chain order, private key match, public CA (warns when the chain does not verify\n"
    "  against this system's CA store), protocol versions and suites the endpoint offers;\n"
    "  each HSM: module, token, one login (never retried), every configured key present,\n"
    "  AES-256, ENCRYPT+DECRYPT, sensitive and not extractable (every version of a key\n"
    "  that lists versions), health key round trip;\n"
    "  key versions: a decrypt_only or retired version the running proxy's metrics show\n"
    "  Decrypt requests for (WARN);\n"
    "  end to end: a signed GetHealthStatus per key store to --endpoint (default server.listen).\n"
    "  --config FILE   default /etc/xks-proxy/xks-proxy.yaml\n"
    "  --endpoint URL  the name KMS uses (name match, protocol probe, end-to-end call)\n"
    "  --cacert PEM    trust anchors for the end-to-end call (default: system CAs plus\n"
    "                  tls.certificate itself, so a private-CA proxy can still be reached)\n"
    "Exit status 1 if any check FAILs.\n";

constexpr const char* kInvalidConfig = "XKS_PROXY_INVALID_CONFIGURATION";
constexpr const char* kInvalidTls = "XKS_PROXY_INVALID_TLS_CONFIGURATION";
constexpr const char* kInvalidCredentials = "INVALID_CREDENTIALS";
constexpr const char* kNotReachable = "XKS_PROXY_NOT_REACHABLE";
constexpr const char* kTimedOut = "XKS_PROXY_TIMED_OUT";
constexpr const char* kInvalidResponse = "XKS_PROXY_INVALID_RESPONSE";
constexpr const char* kKeyNotFound = "XksKeyNotFoundException";
constexpr const char* kKeyInvalid = "XksKeyInvalidConfigurationException";
constexpr const char* kHsmUnavailable =
    "XKS_PROXY_NOT_REACHABLE (GetHealthStatus reports the HSM UNAVAILABLE; "
    "XksProxyUriUnreachableException on create/connect)";
constexpr int kCertWarnDays = 30;

class Report {
 public:
  void pass(const std::string& what) { line("PASS", what), ++passes_; }
  void warn(const std::string& what, const std::string& fix = {}) {
    line("WARN", fix.empty() ? what : what + "; fix: " + fix);
    ++warns_;
  }
  void fail(const std::string& what, const std::string& kms, const std::string& fix) {
    line("FAIL", what + " [KMS: " + kms + "]" + (fix.empty() ? "" : "; fix: " + fix));
    ++fails_;
  }
  int finish() const {
    std::printf("doctor: %d FAIL, %d WARN, %d PASS\n", fails_, warns_, passes_);
    return fails_ > 0 ? 1 : 0;
  }

 private:
  static void line(const char* level, const std::string& text) {
    std::printf("%s  %s\n", level, text.c_str());
    std::fflush(stdout);
  }
  int passes_ = 0, warns_ = 0, fails_ = 0;
};

// ------------------------------------------------------------------ OpenSSL RAII
struct X509Free {
  void operator()(X509* x) const noexcept { X509_free(x); }
};
using X509Ptr = std::unique_ptr<X509, X509Free>;
struct PkeyFree {
  void operator()(EVP_PKEY* k) const noexcept { EVP_PKEY_free(k); }
};
struct BioFree {
  void operator()(BIO* b) const noexcept { BIO_free(b); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;

std::vector<X509Ptr> read_chain(BIO* bio) {
  std::vector<X509Ptr> out;
  while (X509* x = PEM_read_bio_X509(bio, nullptr, nullptr, nullptr)) out.emplace_back(x);
  ERR_clear_error();  // the loop always ends on a "no start line" error
  return out;
}

std::string name_of(const X509_NAME* name) {
  char buf[256];
  X509_NAME_oneline(name, buf, sizeof buf);
  return buf;
}

std::string subject_names(X509* cert) {
  std::string out;
  auto* sans =
      static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  if (sans != nullptr) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); ++i) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type == GEN_DNS) {
        const auto* s = ASN1_STRING_get0_data(g->d.dNSName);
        out += (out.empty() ? "DNS:" : ", DNS:") +
               std::string(reinterpret_cast<const char*>(s),
                           static_cast<std::size_t>(ASN1_STRING_length(g->d.dNSName)));
      } else if (g->type == GEN_IPADD) {
        const int n = ASN1_STRING_length(g->d.iPAddress);
        const unsigned char* p = ASN1_STRING_get0_data(g->d.iPAddress);
        std::string ip;
        if (n == 4) {
          ip = std::to_string(p[0]) + "." + std::to_string(p[1]) + "." + std::to_string(p[2]) +
               "." + std::to_string(p[3]);
        } else {
          ip = "(IPv6)";
        }
        out += (out.empty() ? "IP:" : ", IP:") + ip;
      }
    }
    GENERAL_NAMES_free(sans);
  }
  return out.empty() ? "no subjectAltName (subject " + name_of(X509_get_subject_name(cert)) + ")"
                     : out;
}

bool is_ip_literal(const std::string& host) {
  boost::system::error_code ec;
  (void)boost::asio::ip::make_address(host, ec);
  return !ec;
}

// Validity, days to expiry and the name KMS connects to. `what` says which
// certificate ("tls.certificate", "certificate served by host:port").
void check_leaf(Report& r, X509* leaf, const std::string& what, const std::string& host) {
  const std::string subject = name_of(X509_get_subject_name(leaf));
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
    r.fail(what + ": " + subject + " is not valid yet", kInvalidTls,
           "check the clock of this machine or re-issue the certificate");
  }
  int days = 0, secs = 0;
  ASN1_TIME_diff(&days, &secs, nullptr, X509_get0_notAfter(leaf));
  if (days < 0 || (days == 0 && secs < 0)) {
    r.fail(what + ": " + subject + " expired " + std::to_string(-days) + " day(s) ago", kInvalidTls,
           "renew the certificate from a public CA, install it in tls.certificate and reload "
           "(SIGHUP)");
  } else if (days < kCertWarnDays) {
    r.warn(what + ": " + subject + " expires in " + std::to_string(days) + " day(s)",
           "renew it before it expires (KMS then fails with " + std::string(kInvalidTls) + ")");
  } else {
    r.pass(what + ": valid for " + std::to_string(days) + " more days");
  }
  if (host.empty()) return;
  const bool ip = is_ip_literal(host);
  const bool match = ip ? X509_check_ip_asc(leaf, host.c_str(), 0) == 1
                        : X509_check_host(leaf, host.c_str(), host.size(), 0, nullptr) == 1;
  if (!match) {
    r.fail(what + ": name mismatch: the endpoint host " + host +
               " is not among the certificate's names (" + subject_names(leaf) + ")",
           kInvalidTls,
           "issue the certificate for the DNS name in the key store's proxy URI endpoint, or pass "
           "that name as --endpoint");
  } else {
    r.pass(what + ": matches the endpoint host " + host);
    if (ip) {
      r.warn(what + ": the endpoint " + host +
                 " is an IP address, but KMS connects to a DNS name on port 443",
             "run doctor with --endpoint https://<the proxy URI endpoint's DNS name>");
    }
  }
}

// Order and links of the chain as it is served, then whether it verifies
// against this machine's CA store (the "public CA" heuristic).
void check_chain(Report& r, const std::vector<X509Ptr>& chain, const std::string& what) {
  std::string path = name_of(X509_get_subject_name(chain.front().get()));
  bool linked = true;
  for (std::size_t i = 0; i + 1 < chain.size(); ++i) {
    X509* child = chain[i].get();
    X509* parent = chain[i + 1].get();
    if (X509_check_issued(parent, child) != X509_V_OK ||
        X509_verify(child, X509_get0_pubkey(parent)) != 1) {
      r.fail(what + ": chain is out of order or broken: certificate " + std::to_string(i + 2) +
                 " (" + name_of(X509_get_subject_name(parent)) + ") did not issue certificate " +
                 std::to_string(i + 1),
             kInvalidTls, "put the server certificate first, then each intermediate in order");
      linked = false;
      break;
    }
    path += " <- " + name_of(X509_get_subject_name(parent));
  }
  if (linked)
    r.pass(what + ": chain of " + std::to_string(chain.size()) + " linked in order: " + path);

  X509_STORE* store = X509_STORE_new();
  X509_STORE_set_default_paths(store);
  STACK_OF(X509)* untrusted = sk_X509_new_null();
  for (std::size_t i = 1; i < chain.size(); ++i) sk_X509_push(untrusted, chain[i].get());
  X509_STORE_CTX* ctx = X509_STORE_CTX_new();
  X509_STORE_CTX_init(ctx, store, chain.front().get(), untrusted);
  const bool ok = X509_verify_cert(ctx) == 1;
  const int err = X509_STORE_CTX_get_error(ctx);
  X509_STORE_CTX_free(ctx);
  sk_X509_free(untrusted);
  X509_STORE_free(store);
  const std::string issuer = name_of(X509_get_issuer_name(chain.back().get()));
  if (ok) {
    r.pass(what + ": chain verifies against this system's public CA store");
  } else if (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID) {
    // Reported by check_leaf (or an intermediate: same fix).
    r.warn(what + ": chain does not verify: " + X509_verify_cert_error_string(err));
  } else {
    r.warn(what + ": chain does not verify against this system's CA store (" +
               X509_verify_cert_error_string(err) + "; top issuer " + issuer +
               "): KMS requires a certificate from a public CA and the complete chain, "
               "or it fails with " +
               kInvalidTls,
           "use a certificate from a public CA and include every intermediate in tls.certificate "
           "(a private CA is fine for tests only)");
  }
}

void check_tls_files(Report& r, const config::Config& cfg, const std::string& endpoint_host) {
  const auto& tls = cfg.tls;
  if (!tls.enabled) {
    r.warn(
        "tls: disabled: KMS only speaks HTTPS, so something in front of the proxy must terminate "
        "TLS",
        "enable tls, or check the TLS terminator with --endpoint");
    return;
  }
  BioPtr bio(BIO_new_file(tls.certificate.c_str(), "r"));
  std::vector<X509Ptr> chain;
  if (bio) chain = read_chain(bio.get());
  if (chain.empty()) {
    r.fail("tls.certificate: " + tls.certificate.string() + " holds no PEM certificate",
           kInvalidTls, "point tls.certificate at the PEM chain, server certificate first");
    return;
  }
  check_leaf(r, chain.front().get(), "tls.certificate", endpoint_host);
  check_chain(r, chain, "tls.certificate");

  BioPtr kbio(BIO_new_file(tls.private_key.c_str(), "r"));
  std::unique_ptr<EVP_PKEY, PkeyFree> key(
      kbio ? PEM_read_bio_PrivateKey(kbio.get(), nullptr, nullptr, nullptr) : nullptr);
  ERR_clear_error();
  if (!key) {
    r.fail(
        "tls.private_key: " + tls.private_key.string() + " is not an unencrypted PEM private key",
        kInvalidTls, "point tls.private_key at the key of tls.certificate (PEM, no passphrase)");
  } else if (X509_check_private_key(chain.front().get(), key.get()) != 1) {
    ERR_clear_error();
    r.fail("tls.private_key: does not match tls.certificate", kInvalidTls,
           "use the private key the certificate was issued for");
  } else {
    r.pass("tls.private_key: matches the certificate");
  }
  if (!tls.client_ca.empty()) {
    r.pass("tls.client_ca: mTLS on, accepting " +
           (tls.client_names.empty()
                ? std::string("any name from that CA")
                : std::to_string(tls.client_names.size()) + " client name(s)"));
  }
}

// --------------------------------------------------------------------- formats
void check_uri_path(Report& r, const config::KeyStore& ks) {
  const std::string& u = ks.uri_path;
  std::string problem;
  if (u.size() > 128) problem = "is longer than 128 characters";
  for (const char c : u) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '/' || c == '-' || c == '_';
    if (!ok) problem = "has characters other than a-z A-Z 0-9 / - _";
  }
  if (!u.ends_with("/kms/xks/v1")) problem = "does not end with /kms/xks/v1";
  if (u.empty() || u.front() != '/') problem = "does not start with /";
  if (problem.empty()) {
    r.pass("keystore " + u + ": URI path follows the spec");
  } else {
    r.fail("keystore " + u + ": URI path " + problem, kInvalidConfig,
           "use [/<prefix>]/kms/xks/v1, at most 128 of a-z A-Z 0-9 / - _, and the same "
           "XksProxyUriPath in KMS");
  }
}

void check_credentials(Report& r, const config::KeyStore& ks) {
  const auto now = std::chrono::system_clock::now();
  for (const auto& c : ks.credentials) {
    const std::string who = "keystore " + ks.uri_path + " credential " + c.access_key_id;
    const std::string id_problem = access_key_id_problem(c.access_key_id);
    const std::string secret_problem_text = secret_problem(c.secret.view());
    if (!id_problem.empty()) {
      r.fail(who + ": access key id " + id_problem, kInvalidCredentials,
             "generate a compliant pair with xksctl credentials new and set it in KMS too");
    } else if (!secret_problem_text.empty()) {
      r.fail(who + ": secret (" + c.secret_source.describe() + ") " + secret_problem_text,
             kInvalidCredentials,
             "generate a compliant pair with xksctl credentials new and set it in KMS too");
    } else if (c.not_after && *c.not_after < now) {
      r.fail(who + ": expired (not_after is in the past), the proxy refuses it",
             kInvalidCredentials,
             "rotate: add a new credential, update the key store in KMS, then remove this one");
    } else if (c.not_after && *c.not_after < now + std::chrono::hours(24 * kCertWarnDays)) {
      r.warn(who + ": expires within " + std::to_string(kCertWarnDays) + " days (not_after)",
             "rotate: add a new credential, update the key store in KMS, then remove this one");
    } else {
      r.pass(who + ": format valid");
    }
  }
}

// ------------------------------------------------------------------------- HSM
std::string usage_list(const config::KeyEntry::Usage& u) {
  if (u.encrypt && u.decrypt) return "[ENCRYPT, DECRYPT]";
  if (u.encrypt) return "[ENCRYPT]";
  if (u.decrypt) return "[DECRYPT]";
  return "[]";
}

void check_key(Report& r, const std::vector<TokenKey>& on_token, const std::string& hsm_name,
               const std::string& who, const std::string& label, const std::string& missing_code,
               const std::string& invalid_code,
               const std::optional<config::KeyEntry::Usage>& expect = {}) {
  std::vector<const TokenKey*> found;
  for (const auto& k : on_token) {
    if (k.label == label) found.push_back(&k);
  }
  if (found.empty()) {
    r.fail(who + ": no secret key labelled '" + label + "' on hsm " + hsm_name, missing_code,
           "create it (xksctl keys create --label " + label +
               ") or fix the key's label in the configuration");
    return;
  }
  if (found.size() > 1) {
    r.fail(who + ": " + std::to_string(found.size()) + " keys are labelled '" + label +
               "' on hsm " + hsm_name,
           invalid_code, "give each key a unique label");
    return;
  }
  const TokenKey& k = *found.front();
  bool bad = false;
  if (!k.is_aes_256()) {
    r.fail(who + ": key '" + label + "' is " + k.type_name() +
               ", not AES-256 (KMS needs keySpec AES_256)",
           invalid_code,
           "create an AES-256 key with xksctl keys create and point the configuration at it");
    bad = true;
  }
  // expect_usage documents a restriction made on purpose: the HSM key matching it is
  // what the operator wants. A key missing a usage it is expected to have fails as KMS
  // will; one with more usages than expected still works for KMS, hence a WARN.
  const config::KeyEntry::Usage want = expect.value_or(config::KeyEntry::Usage{});
  const bool restricted = !want.encrypt || !want.decrypt;
  std::string restricted_note;
  if ((want.encrypt && !k.encrypt) || (want.decrypt && !k.decrypt)) {
    if (!expect) {
      r.fail(who + ": key '" + label + "' has usages " + k.usages() +
                 "; a key store key needs ENCRYPT and DECRYPT (KMS CreateKey refuses it, existing "
                 "KMS keys fail)",
             invalid_code,
             "create a key with both usages (xksctl keys create --label NEW) and point the "
             "configuration at it, "
             "or, if the restriction is deliberate, say so with expect_usage");
    } else {
      r.fail(who + ": key '" + label + "' has usages " + k.usages() + " but expect_usage is " +
                 usage_list(want),
             invalid_code,
             "create a key with the expected usages (xksctl keys create --label NEW --usage ...) "
             "and point the "
             "configuration at it, or correct expect_usage");
    }
    bad = true;
  } else if (restricted && ((!want.encrypt && k.encrypt) || (!want.decrypt && k.decrypt))) {
    r.warn(who + ": key '" + label + "' has usages " + k.usages() + ", more than expect_usage " +
               usage_list(want) + " says",
           "restrict the key in the HSM as intended, or correct expect_usage");
    bad = true;
  } else if (restricted) {
    restricted_note = " as expect_usage says (restricted on purpose: KMS gets " +
                      std::string(kKeyInvalid) + " for it)";
  }
  // Decision (docs/xksctl.md): FAIL. KMS cannot see these attributes and would
  // accept the key, but an external key store's promise is that the key
  // material never leaves the HSM.
  if (k.extractable || !k.sensitive) {
    r.fail(
        who + ": key '" + label + "' is " +
            (k.extractable && !k.sensitive ? std::string("extractable and not sensitive")
             : k.extractable               ? std::string("extractable")
                                           : std::string("not sensitive")) +
            ": its key material can leave the HSM (KMS cannot see this and would accept the key)",
        std::string(kKeyInvalid) + " class of problem",
        "create a sensitive, non-extractable key (xksctl keys create), re-encrypt, retire this "
        "one");
    bad = true;
  }
  if (!bad) {
    r.pass(who + ": key '" + label + "' (id " + (k.id_hex.empty() ? "-" : k.id_hex) +
           ") is AES-256, " + k.usages() + restricted_note + ", sensitive, not extractable");
  }
}

void check_hsms(Report& r, const config::Config& cfg) {
  for (const auto& hsm : cfg.hsms) {
    const std::string who = "hsm " + hsm.name;
    ToolToken token(hsm);
    try {
      token.load_module();
      r.pass(who + ": module " + hsm.module.string() + " loads (" + token.module_description() +
             ")");
    } catch (const std::exception& e) {
      r.fail(e.what(), kNotReachable + std::string(" (the proxy cannot start)"), "");
      continue;
    }
    try {
      token.find_token();
      token.open_session(/*read_write=*/false);
      r.pass(who + ": token found: " + token.token_description());
    } catch (const std::exception& e) {
      r.fail(e.what(), kNotReachable + std::string(" (the proxy cannot start)"), "");
      continue;
    }
    try {
      token.check_gcm();
      r.pass(who + ": token offers CKM_AES_GCM for encryption and decryption");
    } catch (const std::exception& e) {
      r.fail(e.what(), kNotReachable + std::string(" (the proxy cannot start)"), "");
      continue;
    }
    const CK_RV rv = token.login();
    if (rv != CKR_OK) {
      const bool pin = hsm::ckr_class(rv) == hsm::CkrClass::Pin;
      r.fail(who + ": hsm.pin: login refused with " + ckr_text(rv) +
                 " (one attempt made, never retried)",
             kHsmUnavailable,
             pin ? "put the token's user PIN in hsm.pin (" + hsm.pin_source.describe() +
                       "); after repeated failures the security officer must unlock or reset it"
                 : "check the HSM user's state and role");
      continue;
    }
    r.pass(who + ": login with hsm.pin accepted");

    std::vector<TokenKey> keys;
    try {
      keys = token.secret_keys();
    } catch (const std::exception& e) {
      r.fail(who + ": cannot list keys: " + e.what(), kHsmUnavailable, "check the HSM");
      continue;
    }
    for (const auto& ks : cfg.keystores) {
      for (const auto& k : ks.keys) {
        const std::string kwho =
            "keystore " + ks.uri_path + " key " + k.id + (k.enabled ? "" : " (disabled)");
        if (!k.versions_listed) {
          check_key(r, keys, hsm.name, kwho, k.label, kKeyNotFound, kKeyInvalid, k.expect_usage);
          continue;
        }
        for (const auto& v : k.versions) {
          const std::string vwho = kwho + " version " + std::to_string(v.number) +
                                   (v.number == k.current ? " (current)"
                                    : !v.enabled          ? " (retired)"
                                    : v.decrypt_only      ? " (decrypt_only)"
                                                          : "");
          bool present = false;
          for (const auto& t : keys) present |= t.label == v.label;
          if (!v.enabled && !present) {
            r.warn(vwho + ": no key labelled '" + v.label + "' on hsm " + hsm.name +
                       ": its ciphertexts can never be decrypted again",
                   "if that is intended, delete the version from the configuration");
            continue;
          }
          check_key(r, keys, hsm.name, vwho, v.label,
                    v.number == k.current
                        ? kKeyNotFound
                        : "InvalidCiphertextException on Decrypt of its ciphertexts",
                    kKeyInvalid, k.expect_usage);
        }
      }
    }
    if (hsm.health_key.empty()) {
      r.warn(who + ": no health_key: GetHealthStatus cannot prove the HSM works",
             "set hsm.health_key to a dedicated test key");
      continue;
    }
    check_key(r, keys, hsm.name, who + " health_key", hsm.health_key, kHsmUnavailable,
              kHsmUnavailable);
    for (const auto& k : keys) {
      if (k.label != hsm.health_key || !k.encrypt || !k.decrypt) continue;
      try {
        const auto took = token.gcm_round_trip(k.handle);
        const double ms = static_cast<double>(took.count()) / 1000.0;
        char buf[64];
        std::snprintf(buf, sizeof buf, "%.2f ms", ms);
        if (ms > kKmsBudgetMs) {
          r.fail(who + ": health key AES-GCM round trip took " + buf, kTimedOut,
                 "the HSM is too slow or too far away");
        } else if (took > cfg.health.degraded_latency) {
          r.warn(who + ": health key AES-GCM round trip took " + buf +
                     ", over health.degraded_latency_ms",
                 "health reports DEGRADED; check the HSM's load and network");
        } else {
          r.pass(who + ": health key AES-GCM encrypt+decrypt round trip " + buf);
        }
      } catch (const std::exception& e) {
        r.fail(who + ": health key round trip failed: " + e.what(), kHsmUnavailable,
               "check the HSM and the key");
      }
      break;
    }
  }
}

// --------------------------------------------------------------- key versions
// The proxy's own record of which versions still serve requests: a version
// marked decrypt_only (about to be retired) or retired that was used since the
// proxy started is still needed by someone.
void check_version_use(Report& r, const config::Config& cfg) {
  bool any = false;
  for (const auto& ks : cfg.keystores) {
    for (const auto& k : ks.keys) {
      for (const auto& v : k.versions) any |= v.decrypt_only || !v.enabled;
    }
  }
  if (!any) return;
  if (!cfg.metrics.enabled) {
    r.warn(
        "key versions: some are decrypt_only or retired, but the metrics listener is off, so "
        "doctor cannot tell whether they are still used",
        "enable metrics and watch xks_proxy_key_version_operations_total before retiring a "
        "version");
    return;
  }
  Endpoint ep;
  ep.tls = false;
  ep.host = cfg.metrics.listen_host == "0.0.0.0" ? "127.0.0.1"
            : cfg.metrics.listen_host == "::"    ? "::1"
                                                 : cfg.metrics.listen_host;
  ep.port = cfg.metrics.listen_port;
  Reply reply;
  try {
    reply = run_sync([&]() -> boost::asio::awaitable<Reply> {
      Connection conn(ep, nullptr, std::chrono::seconds(3));
      Timing t;
      boost::beast::http::request<boost::beast::http::string_body> req{
          boost::beast::http::verb::get, "/metrics", 11};
      req.set(boost::beast::http::field::host, ep.host_header());
      co_return co_await conn.send(req, t);
    }());
  } catch (const std::exception& e) {
    r.warn("key versions: cannot read the proxy's metrics at " + ep.url() + "/metrics (" +
               e.what() +
               "), so doctor cannot tell whether decrypt_only or retired versions are still used",
           "run doctor where the metrics listener is reachable");
    return;
  }
  if (reply.status != 200) {
    r.warn("key versions: " + ep.url() + "/metrics answered HTTP " + std::to_string(reply.status));
    return;
  }
  // xks_proxy_key_version_operations_total{keystore="..",key="..",version="N",operation="decrypt",outcome="ok"}
  // V
  auto count = [&](const std::string& uri, const std::string& key, std::uint32_t version) {
    const std::string needle = "xks_proxy_key_version_operations_total{keystore=\"" + uri +
                               "\",key=\"" + key + "\",version=\"" + std::to_string(version) +
                               "\",operation=\"decrypt\",outcome=\"";
    double total = 0;
    for (std::size_t at = reply.body.find(needle); at != std::string::npos;
         at = reply.body.find(needle, at + 1)) {
      const auto sp = reply.body.find("} ", at);
      if (sp == std::string::npos) break;
      total += std::strtod(reply.body.c_str() + sp + 2, nullptr);
    }
    return total;
  };
  for (const auto& ks : cfg.keystores) {
    for (const auto& k : ks.keys) {
      for (const auto& v : k.versions) {
        if (!v.decrypt_only && v.enabled) continue;
        const double n = count(ks.uri_path, k.id, v.number);
        const std::string who =
            "keystore " + ks.uri_path + " key " + k.id + " version " + std::to_string(v.number);
        char num[32];
        std::snprintf(num, sizeof num, "%.0f", n);
        if (n > 0 && v.enabled) {
          r.warn(who + " is decrypt_only (about to be retired) but served " + num +
                     " Decrypt request(s) since the proxy started",
                 "keep it enabled until xks_proxy_key_version_last_used_timestamp_seconds stops "
                 "moving "
                 "(re-encrypt or wait for those data keys to age out)");
        } else if (n > 0) {
          r.warn(who + " is retired but " + num +
                     " Decrypt request(s) for it were refused since the proxy started",
                 "someone still needs it: re-enable it (enabled: true) and reload, or accept the "
                 "loss");
        } else {
          r.pass(who + (v.enabled ? " (decrypt_only)" : " (retired)") +
                 ": no Decrypt since the proxy started");
        }
      }
    }
  }
}

// ------------------------------------------------------------------ end to end
struct Probe {
  const char* name;
  int version;
  const char* suites13;
  const char* ciphers12;
  bool required;  // one of the spec's suites (else: a weak one that should be refused)
};

void probe_protocols(Report& r, const Endpoint& ep) {
  static const Probe kProbes[] = {
      {"TLSv1.3 TLS_AES_256_GCM_SHA384", TLS1_3_VERSION, "TLS_AES_256_GCM_SHA384", "", true},
      {"TLSv1.3 TLS_CHACHA20_POLY1305_SHA256", TLS1_3_VERSION, "TLS_CHACHA20_POLY1305_SHA256", "",
       true},
      {"TLSv1.2 ECDHE-ECDSA/RSA-AES256-GCM-SHA384", TLS1_2_VERSION, "", net::kTls12Ciphers, true},
      {"TLSv1.2 AES128-SHA (weak, should be refused)", TLS1_2_VERSION, "", "AES128-SHA", false},
  };
  std::string offered;
  int required_ok = 0;
  for (const auto& p : kProbes) {
    ClientTlsOptions o;
    o.verify = false;  // only the protocol is probed here; trust is checked apart
    o.min_version = p.version;
    o.max_version = p.version;
    if (*p.suites13 != 0) o.tls13_suites = p.suites13;
    if (*p.ciphers12 != 0) o.tls12_ciphers = p.ciphers12;
    bool ok = false;
    try {
      auto ctx = make_client_tls_context(o);
      ok = run_sync([&]() -> boost::asio::awaitable<bool> {
        Connection conn(ep, ctx, std::chrono::seconds(5));
        Timing t;
        co_await conn.connect(t);
        co_return true;
      }());
    } catch (const TransportError& e) {
      if (e.stage() != TransportError::Stage::Tls)
        return;  // unreachable: reported by the health call
    }
    if (ok && p.required) {
      ++required_ok;
      offered += (offered.empty() ? "" : ", ") + std::string(p.name);
    } else if (ok) {
      r.warn("tls at " + ep.url() + ": accepts " + p.name,
             "offer only the spec's suites (net::kTls12Ciphers)");
    }
  }
  if (required_ok == 0) {
    r.fail("tls at " + ep.url() +
               ": offers none of the spec's suites (TLS 1.3 AES-256-GCM or ChaCha20, "
               "TLS 1.2 ECDHE AES-256-GCM)",
           kInvalidTls, "enable TLS 1.2/1.3 with those suites on the proxy or load balancer");
  } else {
    r.pass("tls at " + ep.url() + ": offers " + offered);
  }
}

void end_to_end(Report& r, const config::Config& cfg, const Endpoint& ep, const std::string& cacert,
                const std::string& region, bool check_served) {
  // The configured certificate is trusted for --endpoint too: doctor checks the proxy
  // this file describes, wherever it is reached from.
  ClientTlsOptions o;
  o.cacert = cacert;
  if (cacert.empty() && cfg.tls.enabled) o.extra_anchor = cfg.tls.certificate.string();
  std::shared_ptr<boost::asio::ssl::context> ctx;
  try {
    ctx = ep.tls ? make_client_tls_context(o) : nullptr;
  } catch (const std::exception& e) {
    r.fail(std::string("end to end: ") + e.what(), kInvalidTls, "");
    return;
  }
  bool tls_checked = false;
  for (const auto& ks : cfg.keystores) {
    const std::string who = "end to end " + ep.url() + ks.uri_path + "/health";
    Signer signer{ks.credentials.front().access_key_id, ks.credentials.front().secret, region};
    Timing timing;
    Reply reply;
    std::string served;
    const std::string target = api_target(ks.uri_path, Api::Health, {});
    try {
      reply = run_sync([&]() -> boost::asio::awaitable<Reply> {
        Connection conn(ep, ctx, std::chrono::seconds(5));
        const auto t0 = std::chrono::steady_clock::now();
        co_await conn.connect(timing);
        served = conn.peer_chain_pem();
        nlohmann::json body = {{"requestMetadata", request_metadata(Api::Health, region)}};
        auto req = signed_post(ep, target, body.dump(), signer, std::chrono::system_clock::now());
        Reply rep = co_await conn.send(req, timing);
        timing.total_ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
        co_return rep;
      }());
    } catch (const TransportError& e) {
      if (e.stage() == TransportError::Stage::Tls) {
        r.fail(
            who + ": " + e.what(), kInvalidTls,
            "serve a certificate for the endpoint's name from a CA KMS trusts, with the full chain "
            "(or pass --cacert for a private test CA)");
      } else if (e.stage() == TransportError::Stage::Http) {
        r.fail(who + ": " + e.what(), kInvalidResponse,
               "check the proxy's log for this connection");
      } else {
        r.fail(who + ": " + e.what(), kNotReachable,
               "start xks-proxy, check server.listen, DNS, firewalls and that port 443 of the "
               "endpoint reaches it");
      }
      return;
    } catch (const std::exception& e) {
      r.fail(who + ": " + e.what(), kNotReachable, "");
      return;
    }
    if (!tls_checked && ep.tls) {
      tls_checked = true;
      if (check_served && !served.empty()) {
        BioPtr bio(BIO_new_mem_buf(served.data(), static_cast<int>(served.size())));
        auto chain = read_chain(bio.get());
        if (!chain.empty())
          check_leaf(r, chain.front().get(), "certificate served by " + ep.url(), ep.host);
      }
      probe_protocols(r, ep);
    }
    const nlohmann::json j = nlohmann::json::parse(reply.body, nullptr, false);
    const std::string status =
        "HTTP " + std::to_string(reply.status) +
        (j.is_object() && j.contains("errorName") && j["errorName"].is_string()
             ? " " + j["errorName"].get<std::string>()
             : std::string{});
    if (reply.status == 401) {
      r.fail(who + ": " + status + ": the proxy rejects the signature of credential " +
                 signer.access_key_id,
             kInvalidCredentials,
             "make KMS's proxy authentication credential equal a credential of this key store "
             "(xksctl kms-config), and reload the proxy if this file changed");
    } else if (reply.status == 404) {
      r.fail(
          who + ": " + status + ": the proxy does not serve URI path " + ks.uri_path,
          kInvalidConfig,
          "make the key store's XksProxyUriPath equal keystores[].uri_path and reload the proxy");
    } else if (reply.status == 403) {
      r.fail(who + ": " + status, "XKS_PROXY_ACCESS_DENIED",
             "health is never subject to authorization: check the proxy");
    } else if (j.is_discarded() || !j.is_object()) {
      r.fail(who + ": " + status + " with a body that is not JSON", kInvalidResponse,
             "make sure the endpoint reaches xks-proxy and not another web server");
    } else if (reply.status != 200) {
      r.fail(who + ": " + status, kInvalidResponse, "see the proxy's log for this request");
    } else {
      const auto& fleet = j.value("ekmFleetDetails", nlohmann::json::array());
      int unavailable = 0, degraded = 0;
      for (const auto& e : fleet) {
        const std::string s = e.value("healthStatus", "");
        unavailable += s == "UNAVAILABLE";
        degraded += s == "DEGRADED";
      }
      if (!j.contains("xksProxyFleetSize") || !fleet.is_array() || fleet.empty()) {
        r.fail(who + ": the response lacks xksProxyFleetSize or ekmFleetDetails", kInvalidResponse,
               "make sure the endpoint reaches xks-proxy");
      } else if (unavailable == static_cast<int>(fleet.size())) {
        r.fail(who + ": every HSM reports UNAVAILABLE", kHsmUnavailable,
               "see the HSM checks above and the proxy's log");
      } else if (unavailable + degraded > 0) {
        r.warn(who + ": " + std::to_string(unavailable) + " HSM(s) UNAVAILABLE, " +
                   std::to_string(degraded) + " DEGRADED",
               "see the proxy's log");
      }
      if (timing.total_ms > kKmsBudgetMs) {
        r.fail(who + ": " + timing.line(), kTimedOut,
               "bring the proxy closer to the AWS region (<= 35 ms round trip) and check the HSM "
               "latency");
      } else {
        r.pass(who + ": HTTP 200 on a new connection; " + timing.line());
      }
    }
  }
}

}  // namespace

int doctor_main(int argc, char** argv) {
  const Args args(argc, argv, 2, {"--config", "--endpoint", "--cacert", "--region"}, {}, "doctor");
  if (args.help()) return std::fputs(kDoctorHelp, stdout), 0;
  if (!args.positional().empty())
    throw UsageError("unexpected argument '" + args.positional()[0] + "'");
  const std::string file = args.get_or("--config", "/etc/xks-proxy/xks-proxy.yaml");
  std::optional<Endpoint> endpoint;
  if (const auto e = args.get("--endpoint")) endpoint = parse_endpoint(*e);

  Report r;
  config::Config cfg;
  try {
    cfg = config::load_config(file);
  } catch (const config::ConfigError& e) {
    const std::string& s = e.setting();
    const char* code = kInvalidConfig;
    if (s.find("credentials") != std::string::npos || s.ends_with(".access_key_id") ||
        s.ends_with(".secret")) {
      code = kInvalidCredentials;
    } else if (s.starts_with("tls")) {
      code = kInvalidTls;
    }
    // what() already names the file, the setting and the fix.
    std::printf("FAIL  config: %s [KMS: %s; the proxy refuses to start with this file]\n", e.what(),
                code);
    std::printf("doctor: 1 FAIL, 0 WARN, 0 PASS (fix the configuration first)\n");
    return 1;
  }
  std::size_t creds = 0, keys = 0;
  for (const auto& ks : cfg.keystores) creds += ks.credentials.size(), keys += ks.keys.size();
  r.pass("config: " + file + " is valid (" + std::to_string(cfg.keystores.size()) +
         " key store(s), " + std::to_string(creds) + " credential(s), " + std::to_string(keys) +
         " key(s), " + std::to_string(cfg.hsms.size()) + " HSM(s))");
  for (const auto& w : config::config_warnings(cfg)) r.warn("config: " + w);
  for (const auto& ks : cfg.keystores) check_uri_path(r, ks);
  for (const auto& ks : cfg.keystores) check_credentials(r, ks);

  const Endpoint ep = endpoint ? *endpoint : default_endpoint(cfg);
  check_tls_files(r, cfg, ep.host);
  check_hsms(r, cfg);
  check_version_use(r, cfg);
  end_to_end(r, cfg, ep, args.get_or("--cacert", ""), args.get_or("--region", "us-east-1"),
             endpoint.has_value());
  return r.finish();
}

}  // namespace xks::tools
