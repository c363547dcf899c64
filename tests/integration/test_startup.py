"""Startup and shutdown: --check-config, refusal of broken configs with a one-line
message naming the file and the setting, clean exit 0 on SIGTERM."""

import os
import re
import shutil
import tempfile
import unittest

from harness import Client, Daemon, Demo, find_binary, find_leaks, free_port


class StartupTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-startup-")
        cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        with open(cls.demo.config) as f:
            cls.good_config = f.read()
        cls.failed = False

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def write_config(self, name, text):
        path = os.path.join(self.demo.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def broken(self, name, old, new):
        self.assertIn(old, self.good_config)
        return self.write_config(name, self.good_config.replace(old, new))

    def assert_refused(self, config, setting, check_only=False):
        """The daemon exits non-zero with a message naming the file and the setting."""
        extra = ("--check-config",) if check_only else ()
        d = Daemon(self.binary, self.demo, config=config, log_name="refused.log", extra_args=extra)
        rc, out = d.run_to_exit(timeout=60)
        self.assertNotEqual(rc, 0, f"config accepted: {os.path.basename(config)} ({setting})")
        self.assertLess(rc, 128, f"died of a signal or sanitizer instead of exiting: rc={rc}")
        shown = self.demo.redact(out[-1500:])
        self.assertIn(os.path.basename(config), out, f"message does not name the config file: {shown}")
        self.assertRegex(out, re.compile(re.escape(setting), re.I), f"message does not name the setting: {shown}")
        self.assertEqual(find_leaks(out, [], self.demo.secrets()), [])

    def test_provisioning_is_idempotent_and_quiet(self):
        def snapshot():
            out = {}
            for root, dirs, files in os.walk(self.demo.dir):
                if os.path.relpath(root, self.demo.dir).startswith("tokens"):
                    continue  # SoftHSM rewrites its token bookkeeping on every login
                for name in files:
                    if name.endswith(".log") or name.endswith(".yaml") and name != "xks-proxy.yaml":
                        continue  # written by the tests
                    path = os.path.join(root, name)
                    with open(path, "rb") as f:
                        out[os.path.relpath(path, self.demo.dir)] = (f.read(), os.stat(path).st_mode & 0o777)
            return out

        before = snapshot()
        again = Demo(self.demo.dir, self.demo.port)
        self.assertEqual(snapshot(), before, "second provisioning changed files")
        self.assertEqual(again.akid, self.demo.akid)
        self.assertNotRegex(again.provision_output, r"created|wrote|initialised")
        for out in (self.demo.provision_output, again.provision_output):
            self.assertEqual(find_leaks(out, [], self.demo.secrets()), [])
        for name, (_, mode) in before.items():
            if name.startswith("secrets/") or name.endswith(".key") or name == "kms-proxy-config.json":
                self.assertEqual(mode, 0o600, name)
        for d in ("", "secrets", "tls", "tokens"):
            self.assertEqual(os.stat(os.path.join(self.demo.dir, d)).st_mode & 0o777, 0o700, d or ".")

    def test_check_config_accepts_demo_config(self):
        d = Daemon(self.binary, self.demo, log_name="check.log", extra_args=("--check-config",))
        rc, out = d.run_to_exit(timeout=60)
        self.assertEqual(rc, 0, self.demo.redact(out))
        self.assertEqual(find_leaks(out, [], self.demo.secrets()), [])

    def test_uri_path_without_kms_xks_v1(self):
        for name, value in (("bad-uri-1.yaml", "/demo/kms/xks/v2"), ("bad-uri-2.yaml", "/demo"),
                            ("bad-uri-4.yaml", "/de mo/kms/xks/v1"),
                            ("bad-uri-5.yaml", "/" + "a" * 120 + "/kms/xks/v1")):
            with self.subTest(uri_path=value[:30]):
                cfg = self.broken(name, "uri_path: /demo/kms/xks/v1", f'uri_path: "{value}"')
                self.assert_refused(cfg, "uri_path")
                self.assert_refused(cfg, "uri_path", check_only=True)

    def test_missing_secret_file(self):
        cfg = self.broken("bad-secret.yaml", f"secrets/{self.demo.akid}.secret", "secrets/nope.secret")
        self.assert_refused(cfg, "nope.secret")

    def test_missing_pin_file(self):
        cfg = self.broken("bad-pin.yaml", "secrets/hsm.pin", "secrets/missing.pin")
        self.assert_refused(cfg, "missing.pin")

    def test_bad_access_key_id(self):
        cfg = self.broken("bad-akid.yaml", f"access_key_id: {self.demo.akid}", "access_key_id: lowercase1")
        self.assert_refused(cfg, "access_key_id")

    def test_missing_certificate(self):
        cfg = self.broken("bad-cert.yaml", "certificate: tls/server.pem", "certificate: tls/absent.pem")
        self.assert_refused(cfg, "absent.pem")

    def test_bad_listen(self):
        cfg = self.broken("bad-listen.yaml", f'listen: "127.0.0.1:{self.demo.port}"', 'listen: "not-an-address"')
        self.assert_refused(cfg, "listen")

    def test_unparsable_yaml(self):
        cfg = self.write_config("bad-yaml.yaml", self.good_config + "\n  : [unclosed\n")
        d = Daemon(self.binary, self.demo, config=cfg, log_name="refused.log")
        rc, out = d.run_to_exit(timeout=60)
        self.assertNotEqual(rc, 0)
        self.assertLess(rc, 128, f"rc={rc}")
        self.assertIn("bad-yaml.yaml", out)

    def test_missing_config_file(self):
        cfg = os.path.join(self.demo.dir, "does-not-exist.yaml")
        d = Daemon(self.binary, self.demo, config=cfg, log_name="refused.log")
        rc, out = d.run_to_exit(timeout=60)
        self.assertNotEqual(rc, 0)
        self.assertLess(rc, 128, f"rc={rc}")
        self.assertIn("does-not-exist.yaml", out)

    def test_serve_and_sigterm_exit_0(self):
        d = Daemon(self.binary, self.demo, log_name="serve.log").start()
        try:
            d.wait_ready()
            client = Client(self.demo)
            r = client.health()
            self.assertEqual(r.status, 200, repr(r))
        finally:
            rc = d.stop()
        self.assertEqual(rc, 0, f"exit code after SIGTERM; log:\n{d.log_tail()}")
        self.assertEqual(find_leaks(d.read_log(), client.plaintexts, self.demo.secrets()), [])

    def test_second_instance_on_same_port_fails(self):
        d = Daemon(self.binary, self.demo, log_name="first.log").start()
        try:
            d.wait_ready()
            rc, out = Daemon(self.binary, self.demo, log_name="second.log").run_to_exit(timeout=60)
            self.assertNotEqual(rc, 0, "second daemon started on a busy port")
            self.assertLess(rc, 128, f"rc={rc}")
            self.assertRegex(out, re.compile(str(self.demo.port)))
        finally:
            self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
