"""Key versions: rotation under continuous load, retirement, reloads that would
orphan ciphertexts, and ciphertexts written by other proxies.

Test vectors nobody here wrote: AES-256 keys made in Python are imported into the demo
token with OpenSC's pkcs11-tool (extractable, so that Python holds the same key), and
ciphertexts are built with python3-cryptography's AESGCM in each layout: this proxy's
versioned metadata, the AWS sample proxy's SHA-256-of-AAD framing, and the spec's framing
without metadata. The real daemon decrypts them over TLS, signed by botocore.
"""

import hashlib
import os
import re
import secrets
import signal
import struct
import subprocess
import threading
import time
import unittest
import urllib.request

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

import harness
from harness import DaemonTestCase, figure, only_on, setUpModule, tearDownModule  # noqa: F401


def spec_aad(aad, metadata):
    """The spec's AAD: u16_be(len(aad)) || aad || u8(len(metadata)) || metadata."""
    aad = aad or b""
    metadata = metadata or b""
    return struct.pack(">H", len(aad)) + aad + struct.pack("B", len(metadata)) + metadata


def aws_sample_aad(aad, metadata):
    """The AWS sample proxy's AAD (handlers/mod.rs build_full_aad): the AAD's length, its
    SHA-256 whenever the field is present (even empty), then the metadata's length and
    the metadata as the request carries it (absent: empty)."""
    out = struct.pack(">H", len(aad) if aad is not None else 0)
    if aad is not None:
        out += hashlib.sha256(aad).digest()
    metadata = metadata or b""
    return out + struct.pack("B", len(metadata)) + metadata


def ours(version):
    """This proxy's ciphertextMetadata for a key version, from docs/configuration.md."""
    return b"xks\x01" if version == 1 else b"xks\x02" + struct.pack(">I", version)


def seal(key, plaintext, full_aad):
    iv = secrets.token_bytes(12)
    out = AESGCM(key).encrypt(iv, plaintext, full_aad)
    return out[:-16], iv, out[-16:]


class VersionsBase(DaemonTestCase):
    def text(self):
        with open(self.demo.config) as f:
            return f.read()

    def write(self, text):
        harness.write_private(self.demo.config, text)

    def hup(self):
        self.daemon.proc.send_signal(signal.SIGHUP)

    def reloads(self):
        return sum(1 for line in self.daemon.log_lines() if line.get("event") in ("reloaded", "reload_refused"))

    def setUp(self):
        self.base = self.text()

    def tearDown(self):
        if self.text() != self.base:
            self.reload(self.base)

    def reload(self, text=None, expect="reloaded"):
        """Writes `text` (if given), sends SIGHUP and waits for the outcome's log line."""
        if text is not None:
            self.write(text)
        n = self.reloads()
        self.hup()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            lines = [l for l in self.daemon.log_lines() if l.get("event") in ("reloaded", "reload_refused")]
            if len(lines) > n:
                last = lines[-1]
                self.assertEqual(last.get("event"), expect, f"reload: {last}")
                return last
            time.sleep(0.05)
        self.fail(f"no reload outcome within 20 s; log:\n{self.daemon.log_tail()}")

    def add_keys(self, lines):
        """Appends key entries (YAML lines at the demo's key indentation) to the key store."""
        text = self.text()
        anchor = "      - { id: demo-disabled, enabled: false }\n"
        self.assertIn(anchor, text)
        return text.replace(anchor, anchor + "".join(f"      {l}\n" for l in lines))

    def metrics(self):
        with urllib.request.urlopen(self.demo.metrics_url, timeout=10) as r:
            return r.read().decode()

    def metric(self, text, name, **labels):
        total = 0.0
        for line in text.splitlines():
            if not line.startswith(name + "{"):
                continue
            if all(f'{k}="{v}"' in line for k, v in labels.items()):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def xksctl(self, *args, check=True):
        binary = harness.find_binary("xksctl", "XKSCTL_BIN")
        env = dict(self.demo.env, **harness.lsan_env())
        res = subprocess.run([binary, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=env, cwd=self.demo.dir, timeout=120)
        if check:
            self.assertEqual(res.returncode, 0, f"xksctl {' '.join(args)}:\n{self.demo.redact(res.stdout)}")
        return res

    def decrypt(self, key, ct, iv, tag, aad=None, metadata=None):
        return self.client.decrypt(key, ct, iv, tag, aad=aad, metadata=metadata)


@only_on("softhsm2", "the keys are imported with pkcs11-tool into a SoftHSM2 token")
class LegacyLayouts(VersionsBase):
    """Ciphertexts made in Python in each layout, decrypted by the daemon; the legacy
    layouts only once the key store enables them."""

    @classmethod
    def import_key(cls, label):
        key = secrets.token_bytes(32)
        path = os.path.join(cls.demo.dir, f"{label}.bin")
        with open(path, "wb") as f:
            f.write(key)
        with open(cls.demo.config) as f:
            token = re.search(r"^  token_label: (\S+)$", f.read(), re.M).group(1)
        res = subprocess.run(
            ["pkcs11-tool", "--module", cls.demo.module, "--token-label", token, "--login",
             "--pin", cls.demo.pins[0], "--write-object", path, "--type", "secrkey",
             "--key-type", "AES:32", "--label", label, "--id", label.encode().hex(),
             "--usage-decrypt", "--extractable"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cls.demo.env, timeout=60)
        os.unlink(path)
        if res.returncode != 0:
            raise AssertionError(f"pkcs11-tool could not import {label}:\n{cls.demo.redact(res.stdout)}")
        return key

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.k1 = cls.import_key("vectors-v1")
        cls.k2 = cls.import_key("vectors-v2")

    def test_vectors_in_every_layout(self):
        self.reload(self.add_keys([
            "- id: vectors",
            "  current: 2",
            "  versions:",
            "    - { version: 1, label: vectors-v1 }",
            "    - { version: 2, label: vectors-v2 }",
        ]))
        pt = self.client.new_plaintext(48)

        # This proxy's layout, both versions, built in Python.
        for version, key in ((1, self.k1), (2, self.k2)):
            for aad in (None, b"", b"project=nile,department=marketing"):
                md = ours(version)
                ct, iv, tag = seal(key, pt, spec_aad(aad, md))
                js = self.assert_ok(self.decrypt("vectors", ct, iv, tag, aad=aad, metadata=md))
                self.assertEqual(harness.unb64(js["plaintext"]), pt)
        # And the daemon's Encrypt under version 2 decrypts in Python.
        js = self.assert_ok(self.client.encrypt("vectors", pt, aad=b"ctx"))
        sealed = harness.Sealed(js, b"ctx")
        self.assertEqual(sealed.metadata, ours(2))
        self.assertEqual(AESGCM(self.k2).decrypt(sealed.iv, sealed.ciphertext + sealed.tag,
                                                 spec_aad(b"ctx", sealed.metadata)), pt)

        sample_md = b"key_version=1"
        legacy = []
        for aad in (None, b"", b"tenant=42"):
            for md in (None, sample_md):
                legacy.append(("aws-sample", aad, md, *seal(self.k1, pt, aws_sample_aad(aad, md))))
        for aad in (None, b"tenant=42"):
            legacy.append(("spec-no-metadata", aad, None, *seal(self.k1, pt, spec_aad(aad, None))))

        # Not enabled: refused, whatever the layout.
        for layout, aad, md, ct, iv, tag in legacy:
            with self.subTest(layout=layout, aad=aad, md=md, enabled=False):
                self.assert_error(self.decrypt("vectors", ct, iv, tag, aad=aad, metadata=md), 400,
                                  "InvalidCiphertextException", "not written by this proxy")

        enabled = self.text().replace(
            "  - uri_path: /demo/kms/xks/v1\n",
            "  - uri_path: /demo/kms/xks/v1\n    legacy_layouts: [aws-sample, spec-no-metadata]\n")
        self.assertNotEqual(enabled, self.text())
        self.reload(enabled)
        for layout, aad, md, ct, iv, tag in legacy:
            with self.subTest(layout=layout, aad=aad, md=md, enabled=True):
                js = self.assert_ok(self.decrypt("vectors", ct, iv, tag, aad=aad, metadata=md))
                self.assertEqual(harness.unb64(js["plaintext"]), pt)
        # Empty and absent AAD are different AADs in the sample's framing.
        layout, aad, md, ct, iv, tag = legacy[2]
        self.assertEqual((layout, aad, md), ("aws-sample", b"", None))
        self.assert_error(self.decrypt("vectors", ct, iv, tag, aad=None, metadata=None), 400,
                          "InvalidCiphertextException", "aws-sample, spec-no-metadata")
        # A legacy ciphertext is version 1's: under version 2's key it cannot verify.
        ct, iv, tag = seal(self.k2, pt, aws_sample_aad(None, None))
        self.assert_error(self.decrypt("vectors", ct, iv, tag), 400, "InvalidCiphertextException")

        m = self.metrics()
        # Without AAD and metadata both layouts frame the same bytes: the spec-no-metadata
        # vector without AAD is decrypted by aws-sample, listed first.
        self.assertEqual(self.metric(m, "xks_proxy_legacy_decrypts_total", layout="aws-sample"), 7)
        self.assertEqual(self.metric(m, "xks_proxy_legacy_decrypts_total", layout="spec-no-metadata"), 1)
        # Legacy decrypts count as version 1's: 3 in this proxy's layout, 8 legacy.
        self.assertEqual(self.metric(m, "xks_proxy_key_version_operations_total", key="vectors",
                                     version="1", operation="decrypt", outcome="ok"), 11)
        self.assertEqual(self.metric(m, "xks_proxy_key_version_operations_total", key="vectors",
                                     version="1", operation="decrypt", outcome="error"), 2)
        logged = [l for l in self.daemon.log_lines() if l.get("event") == "legacy_ciphertext_decrypted"]
        self.assertEqual(sorted(l["layout"] for l in logged if l.get("keyId") == "vectors"),
                         ["aws-sample", "spec-no-metadata"], "one line per key and layout")
        access = [l for l in self.daemon.log_lines()
                  if l.get("event") == "access" and l.get("keyId") == "vectors" and l.get("api") == "Decrypt"
                  and l.get("outcome") == "ok"]
        self.assertIn("aws-sample", {l.get("legacyLayout") for l in access})
        self.assertEqual({l.get("keyVersion") for l in access}, {1, 2})


class Rotation(VersionsBase):
    """Encrypt under v1; rotate to v2 (xksctl keys rotate --write, SIGHUP) under continuous
    Encrypt+Decrypt load; both decrypt; retire v1; a reload that removes the current
    version is refused."""

    THREADS = 4

    def test_rotate_under_load_retire_and_refuse(self):
        self.xksctl("keys", "create", "--config", self.demo.config, "--label", "rotating-v1")
        self.reload(self.add_keys(["- id: rotating", "  label: rotating-v1"]))
        pt1 = self.client.new_plaintext()
        _, v1 = self.seal("rotating", pt1, aad=b"v1")
        self.assertEqual(v1.metadata, b"xks\x01", "the single-label form writes version 1's metadata")

        counts = {"requests": 0, "failures": 0}
        failures = []
        versions_seen = set()
        lock = threading.Lock()
        stop = threading.Event()

        def load():
            conn = self.client.connection()
            try:
                while not stop.is_set():
                    pt = self.client.new_plaintext()
                    r = self.client.post("/keys/rotating/encrypt", self.client.encrypt_body(pt), conn=conn)
                    ok = r.status == 200
                    d = None
                    if ok:
                        s = harness.Sealed(r.json)
                        d = self.client.post("/keys/rotating/decrypt",
                                             self.client.decrypt_body(s.ciphertext, s.iv, s.tag,
                                                                      metadata=s.metadata), conn=conn)
                        ok = d.status == 200 and harness.unb64(d.json["plaintext"]) == pt
                    with lock:
                        counts["requests"] += 2 if d is not None else 1
                        if ok:
                            versions_seen.add(s.metadata)
                        else:
                            counts["failures"] += 1
                            failures.append(repr(d if d is not None and d.status != 200 else r))
            except Exception as e:  # noqa: BLE001 - counted and reported below
                with lock:
                    counts["failures"] += 1
                    failures.append(repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=load, daemon=True) for _ in range(self.THREADS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        try:
            time.sleep(1.0)
            out = self.xksctl("keys", "rotate", "--config", self.demo.config, "--key", "rotating",
                              "--write").stdout
            self.assertRegex(out, r"created key label=rotating-v2 .* sensitive=yes extractable=no")
            backup = re.search(r"\(backup (\S+)\)", out).group(1)
            self.assertTrue(os.path.exists(backup))
            self.assertIn("+        current: 2", out)
            self.reload()
            deadline = time.monotonic() + 10
            while ours(2) not in versions_seen and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        elapsed = time.monotonic() - t0
        figure(f"rotation under load: {counts['requests']} requests ({self.THREADS} keep-alive clients, "
               f"{elapsed:.1f} s, Encrypt+Decrypt), {counts['failures']} failed, across xksctl keys rotate "
               f"--write and SIGHUP")
        self.assertEqual(counts["failures"], 0, f"failed requests: {failures[:5]}")
        self.assertGreater(counts["requests"], 20)
        self.assertIn(ours(1), versions_seen, "no ciphertext before the rotation")
        self.assertIn(ours(2), versions_seen, "no ciphertext under version 2 after the reload")

        # New ciphertexts carry v2; the one written under v1 still decrypts.
        pt2 = self.client.new_plaintext()
        _, v2 = self.seal("rotating", pt2)
        self.assertEqual(v2.metadata, ours(2))
        js = self.assert_ok(self.client.decrypt("rotating", **v1.decrypt_args()))
        self.assertEqual(harness.unb64(js["plaintext"]), pt1)
        self.assert_ok(self.client.key_metadata("rotating"))

        # Mark v1 decrypt_only: it still decrypts, and doctor warns that it is in use.
        v1_line = "          - { version: 1, label: rotating-v1 }\n"
        text = self.text()
        self.assertIn(v1_line, text)
        self.reload(text.replace(v1_line, v1_line.replace(" }", ", decrypt_only: true }")))
        self.assert_ok(self.client.decrypt("rotating", **v1.decrypt_args()))
        m = self.metrics()
        self.assertGreaterEqual(self.metric(m, "xks_proxy_key_version_operations_total", key="rotating",
                                            version="1", operation="decrypt", outcome="ok"), 2)
        self.assertGreater(self.metric(m, "xks_proxy_key_version_last_used_timestamp_seconds",
                                       key="rotating", version="2", operation="encrypt"), 0)
        doc = self.xksctl("doctor", "--config", self.demo.config, check=False).stdout
        self.assertRegex(doc, r"WARN  keystore /demo/kms/xks/v1 key rotating version 1 is decrypt_only "
                              r"\(about to be retired\) but served \d+ Decrypt")
        self.assertRegex(doc, r"PASS  keystore /demo/kms/xks/v1 key rotating version 2 \(current\): "
                              r"key 'rotating-v2' .* AES-256")

        # Retire v1: its ciphertexts are refused, naming key, version and setting.
        text = self.text()
        self.reload(text.replace("label: rotating-v1, decrypt_only: true }", "label: rotating-v1, enabled: false }"))
        self.assert_error(self.client.decrypt("rotating", **v1.decrypt_args()), 400, "InvalidStateException",
                          r"version 1 of external key 'rotating' is retired",
                          r"keys\[\]\.versions\[\]\.enabled: false")
        self.assert_ok(self.client.decrypt("rotating", **v2.decrypt_args()))
        access = [l for l in self.daemon.log_lines() if l.get("event") == "access" and l.get("keyId") == "rotating"]
        self.assertEqual(access[-2].get("keyVersion"), 1)
        self.assertEqual(access[-2].get("hsmKeyLabel"), "rotating-v1")

        # A reload that removes the current version is refused; version 2 keeps working.
        text = self.text()
        v2_line = "          - { version: 2, label: rotating-v2 }\n"
        self.assertIn(v2_line, text)
        current_line = "      - id: rotating\n        current: 2\n"
        self.assertIn(current_line, text)
        orphaning = text.replace(v2_line, "          - { version: 3, label: rotating-v3 }\n").replace(
            current_line, current_line.replace("current: 2", "current: 3"))
        refused = self.reload(orphaning, expect="reload_refused")
        self.assertIn("version 2 of key 'rotating' is the current version", refused.get("error", ""))
        self.assertIn("fix:", refused.get("error", ""))
        self.assert_ok(self.client.decrypt("rotating", **v2.decrypt_args()))
        self.assertEqual(self.metric(self.metrics(), "xks_proxy_config_last_reload_successful"), 0)

    def test_rotate_edits_each_layout_and_prints_without_write(self):
        for label in ("flowkey-v1", "blockkey-v1"):
            self.xksctl("keys", "create", "--config", self.demo.config, "--label", label)
        self.reload(self.add_keys(["- { id: flowkey, label: flowkey-v1 }  # a comment that stays",
                                   "- id: blockkey", "  label: blockkey-v1"]))
        before = self.text()
        out = self.xksctl("keys", "rotate", "--config", self.demo.config, "--key", "flowkey").stdout
        self.assertIn("not written", out)
        self.assertEqual(self.text(), before, "without --write the file is unchanged")
        self.assertIn("-      - { id: flowkey, label: flowkey-v1 }", out)
        # That run created flowkey-v2 already: the next one makes v3 with its own label.
        self.xksctl("keys", "rotate", "--config", self.demo.config, "--key", "flowkey", "--label", "flowkey-v2b",
                    "--write")
        self.xksctl("keys", "rotate", "--config", self.demo.config, "--key", "flowkey", "--write")
        for _ in range(2):
            self.xksctl("keys", "rotate", "--config", self.demo.config, "--key", "blockkey", "--write")
        text = self.text()
        self.assertIn("  # a comment that stays", text)
        self.assertIn("[{ version: 1, label: flowkey-v1 }, { version: 2, label: flowkey-v2b }, "
                      "{ version: 3, label: flowkey-v3 }]", text)
        self.assertIn("        current: 3\n        versions:\n          - { version: 1, label: blockkey-v1 }\n"
                      "          - { version: 2, label: blockkey-v2 }\n          - { version: 3, label: blockkey-v3 }\n",
                      text)
        self.reload()
        for key in ("flowkey", "blockkey"):
            _, s = self.seal(key, self.client.new_plaintext())
            self.assertEqual(s.metadata, ours(3))


if __name__ == "__main__":
    unittest.main()
