"""xksctl against the demo: credentials new, kms-config, keys create|list, call, bench,
and doctor detecting each problem KMS would trip over with the KMS error code and a fix:
an expired certificate, a name mismatch, an invalid URI path, a malformed credential,
a missing key, an extractable key, an encrypt-only key in a key store, a wrong PIN.

The binary comes from $XKSCTL_BIN (set by CTest), else build/{test,h-it,release}/xksctl.
"""

import datetime
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import tempfile
import unittest

from harness import DaemonTestCase, find_binary, only_on, setUpModule, tearDownModule  # noqa: F401

SUBCOMMANDS = (["credentials", "--help"], ["kms-config", "--help"], ["keys", "--help"],
               ["call", "--help"], ["doctor", "--help"], ["bench", "--help"])


class XksctlTestCase(DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.xksctl = find_binary("xksctl", "XKSCTL_BIN")
        with open(cls.demo.config) as f:
            cls.good_config = f.read()

    def run_ctl(self, *args, input=None, timeout=120):
        res = subprocess.run([self.xksctl, *args], input=input, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=self.daemon.env(), cwd=self.demo.dir,
                             timeout=timeout, text=True)
        return res.returncode, res.stdout, res.stderr

    def ok(self, *args, **kw):
        rc, out, err = self.run_ctl(*args, **kw)
        self.assertEqual(rc, 0, f"xksctl {' '.join(args[:2])} failed:\n{self.demo.redact(out + err)}")
        return out, err

    def config_variant(self, name, *replacements, drop=()):
        """The demo config with (old, new) replacements and the lines containing any of `drop`
        removed, written next to it (relative paths keep working)."""
        text = self.good_config
        for old, new in replacements:
            self.assertIn(old, text)
            text = text.replace(old, new)
        text = "\n".join(line for line in text.splitlines() if not any(d in line for d in drop)) + "\n"
        path = os.path.join(self.demo.dir, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def healthy_config(self, name="healthy.yaml", *replacements, extra_keys=()):
        """Only keys that a KMS key store can use (the demo's deliberate broken keys dropped)."""
        keys = "      - { id: demo-aes-key }\n" + "".join(f"      - {{ id: {k} }}\n" for k in extra_keys)
        return self.config_variant(name, ("      - { id: demo-aes-key }\n", keys), *replacements,
                                   drop=("demo-encrypt-only", "demo-decrypt-only", "demo-no-usage"))

    def doctor(self, config, *extra):
        rc, out, err = self.run_ctl("doctor", "--config", config, "--cacert", self.demo.ca, *extra)
        self.assertEqual(find_secret(out + err, self.demo), None)
        return rc, out, err

    def assert_fail_line(self, out, pattern, code):
        """A FAIL line matching `pattern` that names the KMS code and a fix."""
        lines = [l for l in out.splitlines() if l.startswith("FAIL") and re.search(pattern, l, re.I)]
        self.assertTrue(lines, f"no FAIL line matching {pattern!r} in:\n{out}")
        self.assertTrue(any(code in l and "fix:" in l for l in lines),
                        f"FAIL line for {pattern!r} lacks {code} or a fix:\n" + "\n".join(lines))


def find_secret(text, demo):
    for s in demo.secrets():
        if s and s in text:
            return "a demo secret"
    return None


# ---------------------------------------------------------------------------------------

class CliTests(XksctlTestCase):

    def test_every_subcommand_has_help(self):
        for args in SUBCOMMANDS:
            with self.subTest(args=args):
                out, _ = self.ok(*args)
                self.assertIn("usage: xksctl", out)

    def test_usage_errors_are_one_line_and_exit_2(self):
        for args in (["nope"], ["call", "encrypt", "--bogus"], ["bench", "--config", self.demo.config],
                     ["kms-config", "--config", self.demo.config]):
            with self.subTest(args=args):
                rc, out, err = self.run_ctl(*args)
                self.assertEqual(rc, 2, err)
                self.assertEqual(len(err.strip().splitlines()), 1, err)
                self.assertRegex(err, r"^xksctl: ")


class CredentialTests(XksctlTestCase):

    def test_credentials_new_is_compliant_and_fresh(self):
        out1, _ = self.ok("credentials", "new")
        out2, _ = self.ok("credentials", "new")
        m = re.fullmatch(r"access_key_id: ([A-Z2-7]{20,30})\nsecret: ([A-Za-z0-9+/=]{43,64})\n", out1)
        self.assertIsNotNone(m, "unexpected output format")
        self.assertNotEqual(out1, out2)
        js = json.loads(self.ok("credentials", "new", "--json")[0])
        self.assertRegex(js["access_key_id"], r"^[A-Z2-7]{20,30}$")
        self.assertRegex(js["secret"], r"^[A-Za-z0-9+/=]{43,64}$")

    def test_credentials_new_secret_file(self):
        path = os.path.join(self.demo.dir, f"new-{secrets.token_hex(4)}.secret")
        out, _ = self.ok("credentials", "new", "--secret-file", path)
        self.assertRegex(out, r"^access_key_id: [A-Z2-7]{20}\n$")
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        with open(path) as f:
            self.assertRegex(f.read(), r"^[A-Za-z0-9+/=]{43,64}\n$")
        rc, _, err = self.run_ctl("credentials", "new", "--secret-file", path)
        self.assertEqual(rc, 1)
        self.assertIn("already exists", err)

    def test_kms_config_matches_the_demo(self):
        out_path = os.path.join(self.demo.dir, "kms-out.json")
        self.ok("kms-config", "--config", self.demo.config, "--keystore", self.demo.uri_path, "--out", out_path)
        self.assertEqual(stat.S_IMODE(os.stat(out_path).st_mode), 0o600)
        with open(out_path) as f:
            got = json.load(f)
        self.assertEqual(got, {"XksProxyUriPath": self.demo.uri_path,
                               "XksProxyAuthenticationCredential": {"AccessKeyId": self.demo.akid,
                                                                    "RawSecretAccessKey": self.demo.secret}})
        out, _ = self.ok("kms-config", "--config", self.demo.config, "--keystore", self.demo.uri_path)
        self.assertEqual(json.loads(out), got)
        rc, _, err = self.run_ctl("kms-config", "--config", self.demo.config, "--keystore", "/x/kms/xks/v1")
        self.assertEqual(rc, 2)
        self.assertIn("/demo/kms/xks/v1", err)


class KeysTests(XksctlTestCase):

    def list_keys(self):
        out, _ = self.ok("keys", "list", "--config", self.demo.config)
        return out

    def test_create_then_list(self):
        label = f"ctl-{secrets.token_hex(4)}"
        out, _ = self.ok("keys", "create", "--config", self.demo.config, "--label", label)
        self.assertRegex(out, rf"created key label={label} id=[0-9a-f]{{32}} AES-256 usages=encrypt,decrypt "
                              r"sensitive=yes extractable=no")
        listing = self.list_keys()
        self.assertRegex(listing, rf"\n  {label} +[0-9a-f]{{32}} +AES-256 +encrypt,decrypt +yes +no +-\n")
        rc, _, err = self.run_ctl("keys", "create", "--config", self.demo.config, "--label", label)
        self.assertEqual(rc, 1)
        self.assertIn("already exists", err)

    def test_create_encrypt_only_with_id(self):
        label = f"ctl-e-{secrets.token_hex(4)}"
        out, _ = self.ok("keys", "create", "--config", self.demo.config, "--label", label,
                         "--usage", "encrypt", "--id", "c0ffee")
        self.assertIn("id=c0ffee", out)
        self.assertIn("usages=encrypt ", out)
        self.assertRegex(out, r"WARN .*lacks DECRYPT.*XksKeyInvalidConfigurationException")

    def test_list_warns_about_keys_kms_cannot_use_unless_expected(self):
        listing = self.list_keys()
        for label in ("demo-aes-key", "demo-encrypt-only", "xks-health"):
            self.assertRegex(listing, rf"\n  {label} ")
        # The stock demo says its restricted keys are restricted on purpose (expect_usage).
        self.assertNotRegex(listing, r"WARN .*'demo-(encrypt-only|decrypt-only|no-usage|aes-key)'")
        cfg = self.config_variant("list-unexpected.yaml",
                                  ("{ id: demo-encrypt-only, expect_usage: [ENCRYPT] }", "{ id: demo-encrypt-only }"),
                                  ("{ id: demo-decrypt-only, expect_usage: [DECRYPT] }", "{ id: demo-decrypt-only }"))
        out, _ = self.ok("keys", "list", "--config", cfg)
        self.assertRegex(out, r"WARN .*'demo-encrypt-only'.*lacks DECRYPT")
        self.assertRegex(out, r"WARN .*'demo-decrypt-only'.*lacks ENCRYPT")
        self.assertNotRegex(out, r"WARN .*'demo-no-usage'")

    def test_list_warns_about_a_missing_configured_key(self):
        cfg = self.config_variant("list-missing.yaml", ("      - { id: demo-aes-key }\n",
                                                        "      - { id: demo-aes-key }\n      - { id: ghost-key }\n"))
        out, _ = self.ok("keys", "list", "--config", cfg)
        self.assertRegex(out, r"WARN .*'ghost-key'.*not on this token.*XksKeyNotFoundException")


class CallTests(XksctlTestCase):

    def call(self, api, *args, **kw):
        return self.run_ctl("call", api, "--config", self.demo.config, "--cacert", self.demo.ca, *args, **kw)

    def assert_timing(self, err):
        self.assertRegex(err, r"timing: dns [\d.]+ ms, connect [\d.]+ ms, tls [\d.]+ ms, "
                              r"request->response [\d.]+ ms, total [\d.]+ ms: within KMS's 250 ms budget")

    def test_health(self):
        rc, out, err = self.call("health")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["ekmFleetDetails"][0]["healthStatus"], "ACTIVE")
        self.assertIn("HTTP 200", err)
        self.assert_timing(err)

    def test_metadata(self):
        rc, out, err = self.call("metadata", "--key", "demo-encrypt-only")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out), {"keySpec": "AES_256", "keyStatus": "ENABLED", "keyUsage": ["ENCRYPT"]})

    def test_encrypt_output_feeds_decrypt(self):
        pt = self.client.new_plaintext(40)
        b64 = __import__("base64").b64encode(pt).decode()
        rc, out, err = self.call("encrypt", "--plaintext-b64", b64, "--aad", "project=nile", "--cdiv")
        self.assertEqual(rc, 0, err)
        sealed = json.loads(out)
        self.assertEqual(sealed["keyId"], "demo-aes-key")
        self.assertIn("ciphertextDataIntegrityValue", sealed)
        path = os.path.join(self.demo.dir, "ct.json")
        with open(path, "w") as f:
            f.write(out)
        rc, out2, err2 = self.call("decrypt", "--ciphertext-json", path)
        self.assertEqual(rc, 0, err2)
        self.assertEqual(json.loads(out2)["plaintext"], b64)
        # From stdin too; and a wrong AAD is InvalidCiphertextException.
        rc, out3, _ = self.call("decrypt", "--ciphertext-json", "-", input=out)
        self.assertEqual((rc, json.loads(out3)["plaintext"]), (0, b64))
        rc, out4, err4 = self.call("decrypt", "--ciphertext-json", path, "--aad", "project=amazon")
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out4)["errorName"], "InvalidCiphertextException")
        self.assertIn("HTTP 400 InvalidCiphertextException", err4)

    def test_trusts_the_configured_certificate_without_cacert(self):
        # The demo CA is not in the system store; the configuration names the certificate.
        rc, out, err = self.run_ctl("call", "encrypt", "--config", self.demo.config, "--plaintext", "hello")
        self.assertEqual(rc, 0, err)
        self.assertIn('"ciphertext"', out)
        rc, out, err = self.run_ctl("call", "health", "--config", self.demo.config,
                                    "--endpoint", f"https://localhost:{self.demo.port}")
        self.assertEqual(rc, 0, err)  # a name the certificate is issued for
        out, _ = self.ok("bench", "--config", self.demo.config, "--api", "health", "--connections", "1",
                         "--requests", "5")
        self.assertRegex(out, r"requests/s")

    def test_cacert_overrides_and_verification_stays_on(self):
        # --cacert replaces the configured certificate as the anchor: the system bundle
        # does not hold the demo CA, so the handshake fails rather than being skipped.
        rc, _, err = self.run_ctl("call", "health", "--config", self.demo.config,
                                  "--cacert", "/etc/ssl/certs/ca-certificates.crt")
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"TLS handshake .* failed: certificate verification failed")

    def test_error_response_exits_1(self):
        rc, out, err = self.call("encrypt", "--key", "no-such-key", "--plaintext", "x")
        self.assertEqual(rc, 1)
        self.assertEqual(json.loads(out)["errorName"], "KeyNotFoundException")
        self.assert_timing(err)

    def test_unreachable_endpoint(self):
        rc, _, err = self.call("health", "--endpoint", "https://127.0.0.1:1")
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"cannot connect to 127\.0\.0\.1:1")


class BenchTests(XksctlTestCase):

    def bench(self, *args):
        return self.ok("bench", "--config", self.demo.config, "--cacert", self.demo.ca, *args, timeout=300)

    def test_closed_loop_text(self):
        out, _ = self.bench("--api", "encrypt", "--connections", "2", "--requests", "200")
        self.assertRegex(out, r"(?m)^\d+\.\d requests/s$")
        self.assertRegex(out, r"requests: 200 completed, 200 ok, 0 errors")
        self.assertRegex(out, r"latency ms: p50 [\d.]+  p90 [\d.]+  p99 [\d.]+  p99\.9 [\d.]+  max [\d.]+")

    def test_mix_json(self):
        out, _ = self.bench("--api", "mix", "--connections", "3", "--requests", "120", "--json")
        js = json.loads(out)
        self.assertEqual((js["requests"], js["ok"], js["errors"]), (120, 120, {}))
        self.assertEqual(js["mode"], "closed")
        for p in ("p50", "p90", "p99", "p99.9", "max"):
            self.assertGreater(js["latency_ms"][p], 0)
        self.assertGreater(js["requests_per_second"], 0)

    def test_open_loop_duration(self):
        out, _ = self.bench("--api", "decrypt", "--connections", "2", "--duration", "1", "--rate", "50", "--json")
        js = json.loads(out)
        self.assertEqual(js["mode"], "open")
        self.assertEqual(js["ok"], js["requests"])
        self.assertTrue(40 <= js["requests"] <= 51, js["requests"])

    def test_errors_by_error_name(self):
        # Every request refused: the figures are still printed, and the exit status is 1.
        rc, out, err = self.run_ctl("bench", "--config", self.demo.config, "--cacert", self.demo.ca,
                                    "--api", "encrypt", "--key", "demo-decrypt-only", "--connections", "1",
                                    "--requests", "5")
        self.assertEqual(rc, 1, err)
        self.assertRegex(out, r"requests: 5 completed, 0 ok, 5 errors")
        self.assertRegex(out, r"error InvalidKeyUsageException: 5")


# ---------------------------------------------------------------------------------------
# doctor

def make_cert(directory, name, ca_pem, ca_key, dns_names, not_before, not_after):
    """An EC certificate signed by the demo CA (python3-cryptography); returns (cert, key) paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID
    with open(ca_pem, "rb") as f:
        ca = x509.load_pem_x509_certificate(f.read())
    with open(ca_key, "rb") as f:
        ca_priv = serialization.load_pem_private_key(f.read(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, dns_names[0])]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName(n) for n in dns_names]), critical=False)
            .sign(ca_priv, hashes.SHA256()))
    cert_path = os.path.join(directory, f"{name}.pem")
    key_path = os.path.join(directory, f"{name}.key")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


class DoctorTests(XksctlTestCase):

    TLS_LINE = "tls:     { certificate: tls/server.pem, private_key: tls/server.key }"

    def cert_config(self, name, dns_names, days_from, days_to):
        now = datetime.datetime.utcnow()
        cert, key = make_cert(os.path.join(self.demo.dir, "tls"), name, self.demo.ca,
                              os.path.join(self.demo.dir, "tls", "ca.key"), dns_names,
                              now + datetime.timedelta(days=days_from), now + datetime.timedelta(days=days_to))
        return self.healthy_config(f"{name}.yaml", (self.TLS_LINE,
                                                    f"tls:     {{ certificate: {cert}, private_key: {key} }}"))

    def test_healthy_demo_passes(self):
        rc, out, _ = self.doctor(self.healthy_config())
        self.assertEqual(rc, 0, out)
        self.assertNotRegex(out, r"(?m)^FAIL")
        for pattern in (r"PASS  config: .* is valid", r"PASS  tls.certificate: valid for \d+ more days",
                        r"PASS  tls.private_key: matches", r"PASS  hsm .*: login with hsm.pin accepted",
                        r"PASS  keystore /demo/kms/xks/v1 key demo-aes-key: .*AES-256",
                        r"PASS  hsm .*: health key AES-GCM encrypt\+decrypt round trip [\d.]+ ms",
                        r"PASS  tls at https://127.0.0.1:\d+: offers TLSv1.3",
                        r"PASS  end to end .*/health: HTTP 200 .*within KMS's 250 ms budget",
                        r"WARN  tls.certificate: chain does not verify against this system's CA store"):
            self.assertRegex(out, pattern)
        self.assertRegex(out, r"doctor: 0 FAIL, \d+ WARN, \d+ PASS")

    def test_endpoint_by_name(self):
        rc, out, _ = self.doctor(self.healthy_config(), "--endpoint", f"https://localhost:{self.demo.port}")
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"PASS  tls.certificate: matches the endpoint host localhost")
        self.assertRegex(out, r"PASS  certificate served by https://localhost:\d+: matches")

    def test_expired_certificate(self):
        cfg = self.cert_config("expired", ["localhost"], -60, -2)
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"tls.certificate: .*expired \d+ day", "XKS_PROXY_INVALID_TLS_CONFIGURATION")

    def test_expiring_soon_warns(self):
        cfg = self.cert_config("soon", ["localhost"], -1, 10)
        _, out, _ = self.doctor(cfg, "--endpoint", f"https://localhost:{self.demo.port}")
        self.assertRegex(out, r"WARN  tls.certificate: .*expires in (9|10) day")

    def test_name_mismatch(self):
        cfg = self.cert_config("othername", ["proxy.other.example"], -1, 90)
        rc, out, _ = self.doctor(cfg, "--endpoint", f"https://localhost:{self.demo.port}")
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"tls.certificate: name mismatch.*localhost.*DNS:proxy.other.example",
                              "XKS_PROXY_INVALID_TLS_CONFIGURATION")

    def test_private_key_mismatch(self):
        cfg = self.healthy_config("keymismatch.yaml", (self.TLS_LINE,
                                  "tls:     { certificate: tls/server.pem, private_key: tls/client.key }"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"tls.private_key: does not match", "XKS_PROXY_INVALID_TLS_CONFIGURATION")

    def test_invalid_uri_path(self):
        cfg = self.healthy_config("baduri.yaml", ("uri_path: /demo/kms/xks/v1", "uri_path: /demo/kms/xks/v2"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"uri_path.*kms/xks/v1", "XKS_PROXY_INVALID_CONFIGURATION")

    def test_uri_path_the_proxy_does_not_serve(self):
        cfg = self.healthy_config("otheruri.yaml", ("uri_path: /demo/kms/xks/v1", "uri_path: /other/kms/xks/v1"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"end to end .*/other/kms/xks/v1/health: HTTP 404", "XKS_PROXY_INVALID_CONFIGURATION")

    def test_malformed_credential(self):
        cfg = self.healthy_config("badakid.yaml", (f"access_key_id: {self.demo.akid}",
                                                    f"access_key_id: {self.demo.akid.lower()}"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"access_key_id", "INVALID_CREDENTIALS")

    def test_credential_the_proxy_does_not_accept(self):
        secret_file = os.path.join(self.demo.dir, "secrets", f"other-{secrets.token_hex(4)}.secret")
        out, _ = self.ok("credentials", "new", "--secret-file", secret_file)
        akid = out.split()[-1]
        cfg = self.healthy_config("othercred.yaml", (f"access_key_id: {self.demo.akid}, secret: {{ file: secrets/{self.demo.akid}.secret }}",
                                                      f"access_key_id: {akid}, secret: {{ file: {secret_file} }}"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"end to end .*HTTP 401", "INVALID_CREDENTIALS")

    def test_missing_key(self):
        cfg = self.healthy_config("missing.yaml", extra_keys=("ghost-key",))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"key ghost-key: no secret key labelled 'ghost-key'", "XksKeyNotFoundException")

    def test_stock_demo_has_no_fail(self):
        # The demo's restricted keys carry expect_usage: they PASS as restricted on purpose.
        rc, out, _ = self.run_ctl("doctor", "--config", self.demo.config)  # no --cacert: the config's certificate
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"doctor: 0 FAIL, \d+ WARN, \d+ PASS")
        for key, usages in (("demo-encrypt-only", "encrypt"), ("demo-decrypt-only", "decrypt"),
                            ("demo-no-usage", "none")):
            self.assertRegex(out, rf"PASS  keystore \S+ key {key}: key '{key}' .* is AES-256, {usages} as expect_usage "
                                  r"says \(restricted on purpose: KMS gets XksKeyInvalidConfigurationException")

    def test_unexpected_restriction_fails(self):
        cfg = self.config_variant("unexpected.yaml",
                                  ("{ id: demo-encrypt-only, expect_usage: [ENCRYPT] }", "{ id: demo-encrypt-only }"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"key demo-encrypt-only: .*has usages encrypt;.*ENCRYPT and DECRYPT",
                              "XksKeyInvalidConfigurationException")
        self.assertRegex(out, r"FAIL .*demo-encrypt-only.*if the restriction is deliberate, say so with expect_usage")
        self.assertRegex(out, r"doctor: 1 FAIL")

    def test_restriction_other_than_expected_fails(self):
        cfg = self.config_variant("otherusage.yaml",
                                  ("{ id: demo-encrypt-only, expect_usage: [ENCRYPT] }",
                                   "{ id: demo-encrypt-only, expect_usage: [DECRYPT] }"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"key demo-encrypt-only: .*has usages encrypt but expect_usage is \[DECRYPT\]",
                              "XksKeyInvalidConfigurationException")

    def test_usage_broader_than_expected_warns(self):
        # KMS would not fail on it, but the configuration's description of the key is wrong.
        cfg = self.config_variant("broader.yaml",
                                  ("{ id: demo-aes-key }", "{ id: demo-aes-key, expect_usage: [ENCRYPT] }"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"WARN  keystore \S+ key demo-aes-key: key 'demo-aes-key' has usages encrypt,decrypt, "
                              r"more than expect_usage \[ENCRYPT\] says; fix: ")
        self.assertNotRegex(out, r"PASS .*key demo-aes-key:")

    @only_on("softhsm2", "the extractable key is made with pkcs11-tool, which cannot pass NSS "
                         "softoken the init string C_Initialize needs")
    def test_extractable_key(self):
        tool = shutil.which("pkcs11-tool")
        if not tool:
            self.skipTest("pkcs11-tool (opensc) not installed")
        label = f"ctl-extractable-{secrets.token_hex(3)}"
        with open(os.path.join(self.demo.dir, "secrets", "hsm.pin")) as f:
            pin = f.read().strip()
        # pkcs11-tool's own template: extractable and (unless asked) not sensitive.
        res = subprocess.run([tool, "--module", "/usr/lib/softhsm/libsofthsm2.so", "--token-label", "xks-demo",
                              "--login", "--pin", pin, "--keygen", "--key-type", "AES:32", "--label", label,
                              "--extractable", "--usage-decrypt"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.daemon.env(), text=True)
        self.assertEqual(res.returncode, 0, self.demo.redact(res.stdout))
        cfg = self.healthy_config("extractable.yaml", extra_keys=(label,))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, rf"key {label}: .*extractable", "XksKeyInvalidConfigurationException")
        listing, _ = self.ok("keys", "list", "--config", cfg)
        self.assertRegex(listing, rf"WARN .*'{label}'.*is extractable")

    def test_wrong_pin(self):
        pin_file = os.path.join(self.demo.dir, "secrets", "wrong.pin")
        fd = os.open(pin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("not-the-pin-" + secrets.token_hex(4) + "\n")
        cfg = self.healthy_config("wrongpin.yaml", ("pin: { file: secrets/hsm.pin }", "pin: { file: secrets/wrong.pin }"))
        rc, out, _ = self.doctor(cfg)
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"hsm.pin: login refused with CKR_PIN_INCORRECT .*one attempt", "XKS_PROXY_NOT_REACHABLE")
        self.assertNotRegex(out, r"PASS .*key demo-aes-key")  # no key checks without a login
        # keys list refuses the same way, once, with the setting to fix.
        rc, _, err = self.run_ctl("keys", "list", "--config", cfg)
        self.assertEqual(rc, 1)
        self.assertRegex(err, r"CKR_PIN_INCORRECT.*not retried.*hsm.pin")

    def test_unreachable(self):
        rc, out, _ = self.doctor(self.healthy_config(), "--endpoint", "https://127.0.0.1:1")
        self.assertEqual(rc, 1)
        self.assert_fail_line(out, r"end to end .*cannot connect", "XKS_PROXY_NOT_REACHABLE")


if __name__ == "__main__":
    unittest.main()
