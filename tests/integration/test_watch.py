"""reload.watch: the real daemon reloads by itself when Kubernetes updates its mounted
ConfigMap and Secrets, with no SIGHUP.

The configuration, the credential secrets, the HSM PIN and the TLS key pair are laid out
as the kubelet lays out a volume: MOUNT/..<timestamp>/<file>, MOUNT/..data -> ..<timestamp>
and MOUNT/<file> -> ..data/<file>; an update is the kubelet's atomic swap (a new
timestamped directory, a ..data_tmp symlink renamed over ..data, the old directory
removed). Shown, each against botocore-signed requests and the reload counters of
/metrics: a second credential added by two swaps (Secret, then ConfigMap) is accepted; a
broken ConfigMap is refused (reload_refused) while both credentials keep working; a good
one (the old credential removed) is applied; a burst of ten swaps is one reload; a renewed
certificate swapped into the TLS Secret is what new connections get; a ConfigMap that
arrives before the Secret it needs is refused, then applied by the Secret's swap.
"""

import datetime
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import unittest
import urllib.request

from harness import (Client, Daemon, Demo, figure, find_binary, find_leaks, free_port,
                     only_on, write_private)

# Far above the few milliseconds a swap takes here, even on a loaded machine.
DEBOUNCE_MS = 500
APPLY_TIMEOUT = 15


def akid():
    return "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))


def sigv4_secret():
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    return "".join(secrets.choice(alphabet) for _ in range(44))


class KubeVolume:
    """A directory the way the kubelet maintains a Secret or ConfigMap volume
    (pkg/volume/util/atomic_writer.go): every file is a symlink through ..data into the
    current timestamped directory."""

    def __init__(self, mount, files):
        self.mount = mount
        self.generation = 0
        os.makedirs(mount)
        self.current = self._write_dir(files)
        os.symlink(self.current, os.path.join(mount, "..data"))
        self._link_names(files)

    def path(self, name):
        return os.path.join(self.mount, name)

    def _write_dir(self, files):
        self.generation += 1
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y_%m_%d_%H_%M_%S")
        name = f"..{stamp}.{os.getpid()}{self.generation:04d}"
        directory = os.path.join(self.mount, name)
        os.mkdir(directory, 0o750)
        for fname, text in files.items():
            # A defaultMode of 0400 without fsGroup; the proxy refuses group-readable files
            # unless allow_insecure_permissions is set.
            write_private(os.path.join(directory, fname), text)
        return name

    def _link_names(self, files):
        for fname in files:
            link = os.path.join(self.mount, fname)
            if not os.path.islink(link):
                os.symlink(os.path.join("..data", fname), link)

    def swap(self, files):
        """The kubelet's update: new timestamped dir, ..data_tmp, rename over ..data,
        links for new names, stale links and the old dir removed."""
        old = self.current
        self.current = self._write_dir(files)
        tmp = os.path.join(self.mount, "..data_tmp")
        os.symlink(self.current, tmp)
        os.rename(tmp, os.path.join(self.mount, "..data"))
        self._link_names(files)
        for entry in os.listdir(self.mount):
            if not entry.startswith("..") and entry not in files:
                os.unlink(os.path.join(self.mount, entry))
        shutil.rmtree(os.path.join(self.mount, old))


@only_on("softhsm2", "the kubelet layout is independent of the HSM")
class KubernetesVolumeReloadTest(unittest.TestCase):
    maxDiff = 2000

    @classmethod
    def setUpClass(cls):
        binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-watch-")
        cls.ok = False
        try:
            cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise
        demo = cls.demo
        with open(demo.config) as f:
            cls.demo_config = f.read()
        with open(os.path.join(demo.dir, "secrets", "hsm.pin")) as f:
            cls.pin = pin = f.read()
        with open(os.path.join(demo.dir, "tls", "server.pem")) as f:
            cert = f.read()
        with open(os.path.join(demo.dir, "tls", "server.key")) as f:
            key = f.read()
        k8s = os.path.join(demo.dir, "k8s")
        cls.secrets = KubeVolume(os.path.join(k8s, "secrets"),
                                 {"hsm.pin": pin, "sigv4.secret": demo.secret + "\n"})
        cls.tls = KubeVolume(os.path.join(k8s, "tls"), {"tls.crt": cert, "tls.key": key})
        cls.credentials = [(demo.akid, "sigv4.secret")]
        cls.config = KubeVolume(os.path.join(k8s, "config"),
                                {"xks-proxy.yaml": cls.render(cls.credentials)})
        cls.daemon = Daemon(binary, demo, config=cls.config.path("xks-proxy.yaml")).start()
        try:
            cls.daemon.wait_ready()
        except BaseException:
            cls.daemon.stop()
            raise
        cls.client = Client(demo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        if rc == 0 and cls.ok:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def render(cls, credentials, extra=""):
        """The demo configuration with every file in the kubelet volumes, absolute paths
        (the configuration's own folder is the ConfigMap mount), and reload.watch on."""
        text = cls.demo_config
        k8s = os.path.join(cls.demo.dir, "k8s")
        text = text.replace("certificate: tls/server.pem", f"certificate: {k8s}/tls/tls.crt")
        text = text.replace("private_key: tls/server.key", f"private_key: {k8s}/tls/tls.key")
        text = text.replace("pin: { file: secrets/hsm.pin }", f"pin: {{ file: {k8s}/secrets/hsm.pin }}")
        text = text.replace("SOFTHSM2_CONF: softhsm2.conf",
                            f"SOFTHSM2_CONF: {cls.demo.dir}/softhsm2.conf")
        creds = "".join(f"      - {{ access_key_id: {a}, secret: {{ file: {k8s}/secrets/{f} }} }}\n"
                        for a, f in credentials)
        text, n = re.subn(r"    credentials:\n(      - \{ access_key_id: .*\n)+",
                          "    credentials:\n" + creds, text)
        assert n == 1, "the demo configuration's credentials line moved"
        return text + f"\nreload: {{ watch: true, debounce_ms: {DEBOUNCE_MS} }}\n{extra}"

    # -- observations -----------------------------------------------------------------
    def reloads(self):
        """xks_proxy_config_reloads_total by result."""
        with urllib.request.urlopen(self.demo.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out = {"ok": 0, "refused": 0}
        for m in re.finditer(r'^xks_proxy_config_reloads_total\{result="(\w+)"\} (\S+)$', text, re.M):
            out[m.group(1)] = int(float(m.group(2)))
        return out

    def wait_reloads(self, before, result, n=1, timeout=APPLY_TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            now = self.reloads()
            if now[result] >= before[result] + n:
                return now
            time.sleep(0.05)
        self.fail(f"no {result} reload within {timeout}s (before {before}, now {self.reloads()}); "
                  f"log:\n{self.daemon.log_tail()}")

    def settle(self):
        """Long enough for any reload still to come from the last change."""
        time.sleep(DEBOUNCE_MS / 1000 * 3 + 0.5)

    def status(self, akid_, secret):
        return self.client.health(akid=akid_, secret=secret).status

    def server_cert(self):
        ctx = ssl.create_default_context(cafile=self.demo.ca)
        with socket.create_connection(("127.0.0.1", self.demo.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                return s.getpeercert(binary_form=True)

    # -- the steps, in order ----------------------------------------------------------
    def test_1_watch_started(self):
        started = [l for l in self.daemon.log_lines() if l.get("event") == "config_watch_started"]
        self.assertEqual(len(started), 1, self.daemon.log_tail())
        # config, PIN, one secret, certificate, key
        self.assertEqual(started[0]["files"], 5)
        self.assertEqual(self.status(self.demo.akid, self.demo.secret), 200)

    def test_2_second_credential_added_by_swaps(self):
        cls = type(self)
        cls.akid2, cls.secret2 = akid(), sigv4_secret()
        self.assertEqual(self.status(cls.akid2, cls.secret2), 401)
        before = self.reloads()
        t0 = time.monotonic()
        # The Secret first (a reload that changes nothing), then the ConfigMap.
        cls.secrets.swap({"hsm.pin": self.pin,
                          "sigv4.secret": self.demo.secret + "\n",
                          "sigv4-2.secret": cls.secret2 + "\n"})
        self.wait_reloads(before, "ok")
        cls.credentials = [(self.demo.akid, "sigv4.secret"), (cls.akid2, "sigv4-2.secret")]
        cls.config.swap({"xks-proxy.yaml": self.render(cls.credentials)})
        self.wait_reloads(before, "ok", n=2)
        deadline = time.monotonic() + APPLY_TIMEOUT
        while self.status(cls.akid2, cls.secret2) != 200:
            self.assertLess(time.monotonic(), deadline, self.daemon.log_tail())
            time.sleep(0.05)
        figure(f"watch: new credential accepted {time.monotonic() - t0:.2f} s after the first "
               f"swap (debounce {DEBOUNCE_MS} ms, two swaps)")
        self.assertEqual(self.status(self.demo.akid, self.demo.secret), 200)
        # The new secret file is watched from now on.
        started = [l for l in self.daemon.log_lines() if l.get("event") == "config_changed"]
        self.assertTrue(any(any(f.endswith("/config/xks-proxy.yaml") for f in l["files"])
                            for l in started), started)

    def test_3_broken_config_is_refused_and_old_one_serves(self):
        before = self.reloads()
        type(self).config.swap({"xks-proxy.yaml": self.render(self.credentials, "keystores: [\n")})
        after = self.wait_reloads(before, "refused")
        self.assertEqual(after["ok"], before["ok"])
        refused = [l for l in self.daemon.log_lines() if l.get("event") == "reload_refused"]
        self.assertEqual(len(refused), 1, self.daemon.log_tail())
        self.assertIn("xks-proxy.yaml", refused[0]["error"])
        self.assertEqual(self.status(self.demo.akid, self.demo.secret), 200)
        self.assertEqual(self.status(self.akid2, self.secret2), 200)

    def test_4_good_config_is_applied_again(self):
        before = self.reloads()
        cls = type(self)
        # Rotation's last step: the old credential removed.
        cls.credentials = [(cls.akid2, "sigv4-2.secret")]
        cls.config.swap({"xks-proxy.yaml": self.render(cls.credentials)})
        self.wait_reloads(before, "ok")
        self.assertEqual(self.status(cls.akid2, cls.secret2), 200)
        self.assertEqual(self.status(self.demo.akid, self.demo.secret), 401)
        reloaded = [l for l in self.daemon.log_lines() if l.get("event") == "reloaded"]
        self.assertIn(f"{self.demo.uri_path}: credential removed: {self.demo.akid}",
                      reloaded[-1]["changes"])

    def test_5_a_burst_of_swaps_is_one_reload(self):
        before = self.reloads()
        swaps = 10
        gaps = []
        t0 = last = time.monotonic()
        for i in range(swaps):
            type(self).config.swap({"xks-proxy.yaml": self.render(self.credentials,
                                                                  f"# generation {i}\n")})
            now = time.monotonic()
            gaps.append(now - last)
            last = now
        spread = last - t0
        self.wait_reloads(before, "ok")
        self.settle()
        after = self.reloads()
        figure(f"watch: {swaps} ConfigMap swaps in {spread * 1000:.0f} ms (largest gap "
               f"{max(gaps) * 1000:.0f} ms) -> {after['ok'] - before['ok']} reload(s), "
               f"{after['refused'] - before['refused']} refused (debounce {DEBOUNCE_MS} ms)")
        self.assertLess(max(gaps), DEBOUNCE_MS / 1000, "a swap took longer than the debounce")
        self.assertEqual(after["ok"] - before["ok"], 1)
        self.assertEqual(after["refused"], before["refused"])

    def test_6_renewed_certificate_by_swap(self):
        old_cert = self.server_cert()
        tmp = os.path.join(self.tmp, "renew")
        os.makedirs(tmp, exist_ok=True)
        tls_dir = os.path.join(self.demo.dir, "tls")
        key = os.path.join(tmp, "tls.key")
        subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
        subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/CN=localhost",
                        "-out", os.path.join(tmp, "tls.csr")], check=True, capture_output=True)
        with open(os.path.join(tmp, "ext"), "w") as f:
            f.write("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                    "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n")
        subprocess.run(["openssl", "x509", "-req", "-in", os.path.join(tmp, "tls.csr"),
                        "-CA", os.path.join(tls_dir, "ca.pem"), "-CAkey",
                        os.path.join(tls_dir, "ca.key"), "-set_serial", "0x" + secrets.token_hex(8),
                        "-days", "90", "-sha256", "-extfile", os.path.join(tmp, "ext"),
                        "-out", os.path.join(tmp, "tls.crt")], check=True, capture_output=True)
        before = self.reloads()
        with open(os.path.join(tmp, "tls.crt")) as c, open(key) as k:
            type(self).tls.swap({"tls.crt": c.read(), "tls.key": k.read()})
        self.wait_reloads(before, "ok")
        self.assertNotEqual(self.server_cert(), old_cert, "new connections get the renewed certificate")
        self.assertEqual(self.status(self.akid2, self.secret2), 200)

    def test_7_configmap_before_its_secret(self):
        # The kubelet updates each volume on its own: the ConfigMap may name a secret
        # file whose Secret update has not arrived yet. That reload is refused; the
        # Secret's swap reloads again and applies it.
        cls = type(self)
        akid3, secret3 = akid(), sigv4_secret()
        before = self.reloads()
        cls.credentials = [(cls.akid2, "sigv4-2.secret"), (akid3, "sigv4-3.secret")]
        cls.config.swap({"xks-proxy.yaml": self.render(cls.credentials)})
        self.wait_reloads(before, "refused")
        self.assertEqual(self.status(akid3, secret3), 401)
        self.assertEqual(self.status(cls.akid2, cls.secret2), 200)
        cls.secrets.swap({"hsm.pin": self.pin, "sigv4-2.secret": cls.secret2 + "\n",
                          "sigv4-3.secret": secret3 + "\n"})
        self.wait_reloads(before, "ok")
        self.assertEqual(self.status(akid3, secret3), 200)
        # The Secret no longer holds sigv4.secret: the kubelet removed its link.
        self.assertFalse(os.path.lexists(cls.secrets.path("sigv4.secret")))
        cls.secret3 = secret3

    def test_8_no_sighup_was_needed(self):
        # Every reload above was started by the watch: one config_changed line each.
        lines = self.daemon.log_lines()
        changed = sum(1 for l in lines if l.get("event") == "config_changed")
        results = sum(1 for l in lines if l.get("event") in ("reloaded", "reload_refused"))
        self.assertEqual(changed, results, self.daemon.log_tail())
        self.assertGreaterEqual(changed, 8)
        leaks = find_leaks(self.daemon.read_log(), self.client.plaintexts,
                           self.demo.secrets() + [self.secret2, self.secret3])
        self.assertEqual(leaks, [], "the daemon log leaks")
        type(self).ok = True


if __name__ == "__main__":
    unittest.main()
