"""SigV4 authentication: signatures from botocore and curl are accepted; every way of
getting it wrong is 401 AuthenticationFailedException."""

import datetime
import re
import secrets
import unittest

from harness import setUpModule, tearDownModule  # noqa: F401  (one daemon per module)
from harness import DaemonTestCase, botocore_headers

AUTH = "AuthenticationFailedException"
SIGNATURE = r"signature"
CLOCK = r"date|time|clock|skew|expired|stale|window"


def other_secret(secret):
    return "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
                   for _ in range(len(secret)))


class AuthTests(DaemonTestCase):

    def health(self, **kw):
        return self.client.post("/health", self.client.health_body(), **kw)

    def encrypt(self, **kw):
        return self.client.post("/keys/demo-aes-key/encrypt",
                                self.client.encrypt_body(self.client.new_plaintext()), **kw)

    def test_valid_signatures_accepted(self):
        self.assert_ok(self.health())
        self.assert_ok(self.encrypt())
        self.assert_ok(self.client.health(signer="curl"))

    def test_wrong_secret(self):
        bad = other_secret(self.demo.secret)
        self.assert_error(self.health(secret=bad), 401, AUTH, SIGNATURE)
        self.assert_error(self.encrypt(secret=bad), 401, AUTH, SIGNATURE)
        self.assert_error(self.client.health(signer="curl", secret=bad), 401, AUTH, SIGNATURE)
        # a secret that differs only in its last character
        last = self.demo.secret[-1]
        near = self.demo.secret[:-1] + ("A" if last != "A" else "B")
        self.assert_error(self.health(secret=near), 401, AUTH, SIGNATURE)

    def test_unknown_access_key_id(self):
        akid = "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(20))
        self.assertNotEqual(akid, self.demo.akid)
        self.assert_error(self.health(akid=akid), 401, AUTH, r"access key|credential")
        self.assert_error(self.client.health(signer="curl", akid=akid), 401, AUTH, r"access key|credential")

    def test_stale_and_future_dates(self):
        for minutes in (-6, +6, -60, +60 * 24):
            with self.subTest(skew_minutes=minutes):
                r = self.health(skew=datetime.timedelta(minutes=minutes))
                self.assert_error(r, 401, AUTH, CLOCK)

    def test_dates_inside_window_accepted(self):
        for minutes in (-4, +4):
            with self.subTest(skew_minutes=minutes):
                self.assert_ok(self.health(skew=datetime.timedelta(minutes=minutes)))

    def test_body_tampered_after_signing(self):
        path = self.client.path("/keys/demo-aes-key/encrypt")
        body = self.client.encode(self.client.encrypt_body(self.client.new_plaintext()))
        headers = self.client.sign(path, body)
        tampered = body.replace(b'"AES_GCM"', b'"AES_GCM" ')
        self.assertNotEqual(tampered, body)
        r = self.client.send("POST", path, tampered, headers)
        self.assert_error(r, 401, AUTH, SIGNATURE)

    def test_host_changed_after_signing(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        headers = self.client.sign(path, body)
        headers["Host"] = f"localhost:{self.demo.port}"
        self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH, SIGNATURE)

    def test_path_changed_after_signing(self):
        body = self.client.encode(self.client.encrypt_body(self.client.new_plaintext()))
        headers = self.client.sign(self.client.path("/keys/demo-encrypt-only/encrypt"), body)
        r = self.client.send("POST", self.client.path("/keys/demo-aes-key/encrypt"), body, headers)
        self.assert_error(r, 401, AUTH, SIGNATURE)

    def test_signed_header_changed_after_signing(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        headers = self.client.sign(path, body)
        headers["Content-Type"] = "application/json; charset=utf-8"
        self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH, SIGNATURE)

    def test_missing_authorization(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        headers = self.client.sign(path, body)
        del headers["Authorization"]
        self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH,
                          r"authorization|missing")
        r = self.client.send("POST", path, body, {"Content-Type": "application/json"})
        self.assert_error(r, 401, AUTH, r"authorization|missing")

    def test_missing_date(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        headers = self.client.sign(path, body)
        del headers["X-Amz-Date"]
        self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH)

    def test_wrong_service_in_scope(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        headers = botocore_headers(self.client.base + path, body, self.demo.akid, self.demo.secret,
                                   service="kms")
        self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH)

    def test_malformed_authorization(self):
        path = self.client.path("/health")
        body = self.client.encode(self.client.health_body())
        good = self.client.sign(path, body)
        sig = re.search(r"Signature=([0-9a-f]{64})", good["Authorization"]).group(1)
        for value in ("Basic dXNlcjpwYXNz", "AWS4-HMAC-SHA256",
                      good["Authorization"].replace("AWS4-HMAC-SHA256", "AWS4-HMAC-SHA512"),
                      good["Authorization"].replace(sig, sig[:-1]),
                      good["Authorization"].replace(sig, "0" * 64)):
            with self.subTest(authorization=value[:40]):
                headers = dict(good, Authorization=value)
                self.assert_error(self.client.send("POST", path, body, headers), 401, AUTH)

    def test_auth_failure_does_not_touch_key(self):
        # Authentication comes before key lookup: an unknown key with a bad signature is 401.
        r = self.client.post("/keys/no-such-key/metadata",
                             {"requestMetadata": self.client.metadata("DescribeKey")},
                             secret=other_secret(self.demo.secret))
        self.assert_error(r, 401, AUTH)


if __name__ == "__main__":
    unittest.main()
