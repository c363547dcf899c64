"""Error paths: ciphertext integrity, key usage and state, unknown keys and paths,
methods, and request validation. Every check pins status, errorName and a meaningful
part of errorMessage."""

import base64
import json
import secrets
import unittest

from harness import setUpModule, tearDownModule  # noqa: F401  (one daemon per module)
from harness import DaemonTestCase, PRINCIPAL, b64, unb64

# What errorMessage must say (case-insensitive regexes).
BAD_CIPHERTEXT = r"ciphertext|tag|authenticat|integrity|verif"
AAD = b"project=nile,department=marketing"


class CiphertextIntegrityTests(DaemonTestCase):

    def expect_invalid(self, sealed, **override):
        r = self.client.decrypt("demo-aes-key", **sealed.decrypt_args(**override))
        self.assert_error(r, 400, "InvalidCiphertextException", BAD_CIPHERTEXT)

    def test_tampered_fields(self):
        _, sealed = self.seal(aad=AAD)
        cases = {
            "ciphertext first byte": dict(ciphertext=bytes([sealed.ciphertext[0] ^ 1]) + sealed.ciphertext[1:]),
            "ciphertext last bit": dict(ciphertext=sealed.ciphertext[:-1] + bytes([sealed.ciphertext[-1] ^ 0x80])),
            "ciphertext truncated": dict(ciphertext=sealed.ciphertext[:-1]),
            "tag": dict(tag=bytes([sealed.tag[0] ^ 1]) + sealed.tag[1:]),
            "tag last byte": dict(tag=sealed.tag[:-1] + bytes([sealed.tag[-1] ^ 0x40])),
            "iv": dict(iv=bytes([sealed.iv[0] ^ 1]) + sealed.iv[1:]),
            "aad changed": dict(aad=AAD[:-1] + b"X"),
            "aad missing": dict(aad=None),
            "aad added": dict(aad=AAD + b"!"),
        }
        if sealed.metadata:
            cases["metadata changed"] = dict(metadata=bytes([sealed.metadata[0] ^ 1]) + sealed.metadata[1:])
            cases["metadata missing"] = dict(metadata=None)
        else:
            cases["metadata added"] = dict(metadata=b"key_version=1")
        for name, override in cases.items():
            with self.subTest(tamper=name):
                self.expect_invalid(sealed, **override)
        # the untampered original still decrypts
        self.assert_ok(self.client.decrypt("demo-aes-key", **sealed.decrypt_args()))

    def test_ciphertext_metadata_tampering(self):
        _, sealed = self.seal()
        if sealed.metadata is None:
            self.expect_invalid(sealed, metadata=b"\x00")
        else:
            self.expect_invalid(sealed, metadata=sealed.metadata + b"\x00")
            self.expect_invalid(sealed, metadata=sealed.metadata[:-1])

    def test_metadata_passed_as_aad_fails(self):
        # Encrypt with AAD=A; decrypting with AAD=A||metadata and no metadata must fail.
        _, sealed = self.seal(aad=AAD)
        if sealed.metadata:
            self.expect_invalid(sealed, aad=AAD + sealed.metadata, metadata=None)
        # And the reverse split: AAD=X||M at encrypt must not decrypt as AAD=X, metadata=M
        # (a naive aad||metadata concatenation would accept it).
        _, sealed2 = self.seal(aad=b"tenant=1" + b"key_version=1")
        self.expect_invalid(sealed2, aad=b"tenant=1", metadata=b"key_version=1")

    def test_ciphertext_from_other_key(self):
        _, sealed = self.seal(key="demo-aes-key")
        r = self.client.decrypt("demo-decrypt-only", **sealed.decrypt_args())
        self.assert_error(r, 400, "InvalidCiphertextException", BAD_CIPHERTEXT)


class KeyTests(DaemonTestCase):

    def random_sealed(self):
        return dict(ciphertext=secrets.token_bytes(32), iv=secrets.token_bytes(12),
                    tag=secrets.token_bytes(16))

    def test_encrypt_without_encrypt_usage(self):
        for key in ("demo-decrypt-only", "demo-no-usage"):
            with self.subTest(key=key):
                r = self.client.encrypt(key, self.client.new_plaintext())
                self.assert_error(r, 400, "InvalidKeyUsageException", r"encrypt", key)

    def test_decrypt_without_decrypt_usage(self):
        _, sealed = self.seal()
        for key in ("demo-encrypt-only", "demo-no-usage"):
            with self.subTest(key=key):
                r = self.client.decrypt(key, **sealed.decrypt_args())
                self.assert_error(r, 400, "InvalidKeyUsageException", r"decrypt", key)

    def test_cdiv_needs_decrypt_usage(self):
        # CDIV means encrypt, then decrypt to prove the round trip: an encrypt-only key cannot.
        r = self.client.encrypt("demo-encrypt-only", self.client.new_plaintext(), cdiv_alg="SHA_256")
        self.assert_error(r, 400, "InvalidKeyUsageException", r"decrypt",
                          r"ciphertextDataIntegrityValue|CDIV|integrity")

    def test_encrypt_only_key_encrypts(self):
        _, sealed = self.seal(key="demo-encrypt-only")
        self.assertEqual(len(sealed.tag), 16)

    def test_disabled_key(self):
        r = self.client.encrypt("demo-disabled", self.client.new_plaintext())
        self.assert_error(r, 400, "InvalidStateException", r"disabled", "demo-disabled")
        r = self.client.decrypt("demo-disabled", **self.random_sealed())
        self.assert_error(r, 400, "InvalidStateException", r"disabled", "demo-disabled")
        js = self.assert_ok(self.client.key_metadata("demo-disabled"))
        self.assertEqual(js.get("keyStatus"), "DISABLED")

    def test_unknown_key(self):
        # no-such-key exists nowhere; xks-health exists in the HSM but is not listed for
        # the key store (it is the health-check key) and must not be reachable through it.
        for key in ("no-such-key", "xks-health", "DEMO-AES-KEY"):
            with self.subTest(key=key, api="metadata"):
                self.assert_error(self.client.key_metadata(key), 404, "KeyNotFoundException", key)
            with self.subTest(key=key, api="encrypt"):
                r = self.client.encrypt(key, self.client.new_plaintext())
                self.assert_error(r, 404, "KeyNotFoundException", key)
            with self.subTest(key=key, api="decrypt"):
                r = self.client.decrypt(key, **self.random_sealed())
                self.assert_error(r, 404, "KeyNotFoundException", key)


class CheckOrderTests(DaemonTestCase):
    """The key is judged before its request: exists in this key store, enabled, has the
    usage; only then the ciphertext and the rest of the body."""

    def test_decrypt_without_decrypt_usage_whatever_the_ciphertext(self):
        _, sealed = self.seal()
        args = sealed.decrypt_args()
        cases = {
            "metadata missing": dict(args, metadata=None),
            "metadata foreign": dict(args, metadata=b"someone else"),
            "iv 8 bytes": dict(args, iv=args["iv"][:8]),
            "tag 4 bytes": dict(args, tag=args["tag"][:4]),
        }
        for key in ("demo-encrypt-only", "demo-no-usage"):
            for name, a in cases.items():
                with self.subTest(key=key, case=name):
                    r = self.client.decrypt(key, **a)
                    self.assert_error(r, 400, "InvalidKeyUsageException", r"decrypt", key)
            with self.subTest(key=key, case="ciphertext not Base64"):
                body = self.client.decrypt_body(**args)
                body["ciphertext"] = "not base64!"
                r = self.client.post(f"/keys/{key}/decrypt", body)
                self.assert_error(r, 400, "InvalidKeyUsageException", r"decrypt", key)
        # A key that allows DECRYPT gets the ciphertext's own error.
        r = self.client.decrypt("demo-aes-key", **cases["metadata missing"])
        self.assert_error(r, 400, "InvalidCiphertextException", r"ciphertextMetadata")

    def test_encrypt_without_encrypt_usage_whatever_the_body(self):
        body = self.client.encrypt_body(self.client.new_plaintext())
        body["plaintext"] = "not base64!"
        r = self.client.post("/keys/demo-decrypt-only/encrypt", body)
        self.assert_error(r, 400, "InvalidKeyUsageException", r"encrypt", "demo-decrypt-only")
        r = self.client.post("/keys/demo-aes-key/encrypt", body)
        self.assert_error(r, 400, "ValidationException", r"plaintext")

    def test_unknown_and_disabled_keys_come_before_the_body(self):
        for api in ("encrypt", "decrypt", "metadata"):
            with self.subTest(api=api):
                r = self.client.post(f"/keys/no-such-key/{api}", {"requestMetadata": "garbage"})
                self.assert_error(r, 404, "KeyNotFoundException", "no-such-key")
        for api in ("encrypt", "decrypt"):
            with self.subTest(api=api, key="demo-disabled"):
                r = self.client.post(f"/keys/demo-disabled/{api}", {"requestMetadata": "garbage"})
                self.assert_error(r, 400, "InvalidStateException", r"disabled", "demo-disabled")


class RequestIdTests(DaemonTestCase):
    """kmsRequestId is opaque: any string is accepted, the empty one included."""

    def test_any_kms_request_id_is_accepted(self):
        for rid in ("", " ", "not-a-uuid", "\u00e9\u00e8"):
            with self.subTest(kmsRequestId=rid):
                body = self.client.health_body()
                body["requestMetadata"]["kmsRequestId"] = rid
                self.assert_ok(self.client.post("/health", body))
                body = {"requestMetadata": self.client.metadata("DescribeKey", kmsRequestId=rid)}
                self.assert_ok(self.client.post("/keys/demo-aes-key/metadata", body))
                pt = self.client.new_plaintext()
                self.client.remember(pt)
                body = self.client.encrypt_body(pt, kmsRequestId=rid)
                self.assert_ok(self.client.post("/keys/demo-aes-key/encrypt", body))


class RoutingTests(DaemonTestCase):

    def test_unknown_prefix(self):
        body = self.client.health_body()
        for uri_path in ("/other/kms/xks/v1", "/kms/xks/v1", "/demo/kms/xks/v2", "/demo"):
            with self.subTest(uri_path=uri_path):
                r = self.client.post("/health", body, uri_path=uri_path)
                self.assert_error(r, 404, "InvalidUriPathException", r"path|uri")

    def test_unknown_operation(self):
        for suffix in ("/keys/demo-aes-key/sign", "/keys/demo-aes-key", "/keys/demo-aes-key/encrypt/x",
                       "/healthz", "/keys//encrypt", "/keys/bad%20id/encrypt", "/"):
            with self.subTest(suffix=suffix):
                r = self.client.post(suffix, {"requestMetadata": self.client.metadata("Encrypt")})
                self.assert_error(r, 404, "InvalidUriPathException", r"path|uri|operation")

    def test_get_on_api_uris_is_405(self):
        for suffix in ("/health", "/keys/demo-aes-key/metadata", "/keys/demo-aes-key/encrypt",
                       "/keys/demo-aes-key/decrypt"):
            path = self.client.path(suffix)
            for signed in (False, True):
                with self.subTest(path=path, signed=signed):
                    headers = self.client.sign(path, b"", method="GET") if signed else {}
                    r = self.client.send("GET", path, headers=headers)
                    self.assertEqual(r.status, 405, f"GET {path}: {r!r}")

    def test_ping_unauthenticated_and_unsigned(self):
        r = self.client.send("GET", "/ping")
        self.assertEqual(r.status, 200)


class ValidationTests(DaemonTestCase):

    def test_health_missing_request_metadata_fields(self):
        for field in ("kmsRequestId", "kmsOperation"):
            with self.subTest(missing=field):
                body = self.client.health_body()
                del body["requestMetadata"][field]
                self.assert_error(self.client.post("/health", body), 400, "ValidationException", field)
        self.assert_error(self.client.post("/health", {}), 400, "ValidationException", "requestMetadata")

    def test_missing_request_metadata_fields_on_key_apis(self):
        for field in ("kmsRequestId", "kmsOperation"):
            with self.subTest(missing=field):
                body = self.client.encrypt_body(self.client.new_plaintext())
                del body["requestMetadata"][field]
                r = self.client.post("/keys/demo-aes-key/encrypt", body)
                self.assert_error(r, 400, "ValidationException", field)

    def test_unknown_kms_operation_accepted(self):
        self.assert_ok(self.client.post("/health", self.client.health_body("SomeFutureOperation")))
        body = self.client.encrypt_body(self.client.new_plaintext())
        body["requestMetadata"]["kmsOperation"] = "GenerateDataKeyFutureVariant"
        self.assert_ok(self.client.post("/keys/demo-aes-key/encrypt", body))

    def test_unknown_fields_accepted(self):
        body = self.client.encrypt_body(self.client.new_plaintext(), kmsViaService="ebs",
                                        awsSourceVpc="vpc-12345678", awsSourceVpce="vpce-1234",
                                        someFutureField={"nested": [1, 2, 3]})
        body["someFutureTopLevelField"] = "x"
        body["anotherOne"] = {"a": None}
        self.assert_ok(self.client.post("/keys/demo-aes-key/encrypt", body))
        hb = self.client.health_body()
        hb["requestMetadata"]["awsPrincipalArn"] = PRINCIPAL
        hb["extra"] = 1
        self.assert_ok(self.client.post("/health", hb))

    def test_long_principal_arn_accepted(self):
        prefix = "arn:aws:iam::123456789012:role/"
        arn = prefix + "r" * (2048 - len(prefix))
        self.assertEqual(len(arn), 2048)
        body = self.client.encrypt_body(self.client.new_plaintext(), principal=arn)
        self.assert_ok(self.client.post("/keys/demo-aes-key/encrypt", body))
        self.assert_ok(self.client.post("/keys/demo-aes-key/metadata",
                                        {"requestMetadata": self.client.metadata("DescribeKey", principal=arn)}))

    def test_service_principal_accepted(self):
        for principal in ("ec2.amazonaws.com", "AWS Internal"):
            with self.subTest(principal=principal):
                body = self.client.encrypt_body(self.client.new_plaintext(), principal=principal)
                self.assert_ok(self.client.post("/keys/demo-aes-key/encrypt", body))

    def test_bad_base64(self):
        good = self.client.encrypt_body(self.client.new_plaintext())
        for field, value in (("plaintext", "not base64!"), ("plaintext", "SGVsbG8-V29ybGQ_"),
                             ("plaintext", "SGVsbG8"), ("additionalAuthenticatedData", "%%%%")):
            with self.subTest(field=field, value=value):
                body = json.loads(json.dumps(good))
                body[field] = value
                r = self.client.post("/keys/demo-aes-key/encrypt", body)
                self.assert_error(r, 400, "ValidationException", field)
        _, sealed = self.seal()
        for field in ("ciphertext", "initializationVector", "authenticationTag"):
            with self.subTest(field=field):
                body = self.client.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                                metadata=sealed.metadata)
                body[field] = "@@@@"
                r = self.client.post("/keys/demo-aes-key/decrypt", body)
                self.assert_error(r, 400, "ValidationException", field)

    def test_missing_required_fields(self):
        for field in ("plaintext", "encryptionAlgorithm"):
            with self.subTest(api="encrypt", missing=field):
                body = self.client.encrypt_body(self.client.new_plaintext())
                del body[field]
                r = self.client.post("/keys/demo-aes-key/encrypt", body)
                self.assert_error(r, 400, "ValidationException", field)
        _, sealed = self.seal()
        for field in ("ciphertext", "initializationVector", "authenticationTag", "encryptionAlgorithm"):
            with self.subTest(api="decrypt", missing=field):
                body = self.client.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                                metadata=sealed.metadata)
                del body[field]
                r = self.client.post("/keys/demo-aes-key/decrypt", body)
                # Without an IV or a tag the ciphertext cannot verify (error table).
                expected = ("InvalidCiphertextException"
                            if field in ("initializationVector", "authenticationTag")
                            else "ValidationException")
                self.assert_error(r, 400, expected, field)

    def test_iv_and_tag_sizes(self):
        """12- and 16-byte IVs are the spec's; any other IV or tag size cannot verify."""
        _, sealed = self.seal()
        for field, size in (("initializationVector", 8), ("initializationVector", 13),
                            ("authenticationTag", 12), ("authenticationTag", 17)):
            with self.subTest(field=field, size=size):
                body = self.client.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                                metadata=sealed.metadata)
                body[field] = b64(b"\x01" * size)
                r = self.client.post("/keys/demo-aes-key/decrypt", body)
                self.assert_error(r, 400, "InvalidCiphertextException", field)
        # A 16-byte IV reaches the HSM, which judges the tag.
        body = self.client.decrypt_body(sealed.ciphertext, b"\x02" * 16, sealed.tag,
                                        metadata=sealed.metadata)
        r = self.client.post("/keys/demo-aes-key/decrypt", body)
        self.assert_error(r, 400, "InvalidCiphertextException", "do not verify")

    def test_wrong_encryption_algorithm(self):
        # Spec: only AES_GCM exists in v1. An unknown value is invalid input
        # (ValidationException); a proxy may instead say it is not implemented (501).
        body = self.client.encrypt_body(self.client.new_plaintext(), algorithm="AES_CBC")
        r = self.client.post("/keys/demo-aes-key/encrypt", body)
        self.assertIn((r.status, (r.json or {}).get("errorName")),
                      {(400, "ValidationException"), (501, "UnsupportedOperationException")}, repr(r))
        self.assert_error(r, r.status, r.json["errorName"], r"encryptionAlgorithm|AES_GCM")
        _, sealed = self.seal()
        body = self.client.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                        metadata=sealed.metadata, algorithm="RSAES_OAEP_SHA_256")
        r = self.client.post("/keys/demo-aes-key/decrypt", body)
        self.assertIn((r.status, (r.json or {}).get("errorName")),
                      {(400, "ValidationException"), (501, "UnsupportedOperationException")}, repr(r))

    def test_oversized_inputs(self):
        # Beyond the spec's minimums: proxy may refuse with ValidationException or 501.
        body = self.client.encrypt_body(self.client.new_plaintext(64), aad=b"a" * 70000)
        r = self.client.post("/keys/demo-aes-key/encrypt", body)
        self.assertIn(r.status, (400, 413, 501), repr(r))
        _, sealed = self.seal()
        body = self.client.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                        metadata=b"m" * 21)
        r = self.client.post("/keys/demo-aes-key/decrypt", body)
        self.assertIn((r.status, (r.json or {}).get("errorName")),
                      {(400, "ValidationException"), (400, "InvalidCiphertextException")}, repr(r))

    def test_malformed_json(self):
        for raw in (b"{", b"[]", b"null", b"{\"requestMetadata\": 5}", b"\xff\xfe"):
            with self.subTest(body=raw):
                r = self.client.post("/keys/demo-aes-key/encrypt", raw)
                self.assert_error(r, 400, "ValidationException")
                self.assertTrue(r.json.get("errorMessage"), "ValidationException without a message")

    def test_wrong_field_types(self):
        body = self.client.encrypt_body(self.client.new_plaintext())
        body["plaintext"] = 12345
        self.assert_error(self.client.post("/keys/demo-aes-key/encrypt", body), 400,
                          "ValidationException", "plaintext")


if __name__ == "__main__":
    unittest.main()
