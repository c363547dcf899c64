"""Prometheus metrics of the real daemon after known traffic: request
counters by key store, API and outcome, latency histograms, HSM call latency,
health, credential last use, build info — and never a secret in the output.

The daemon runs on the demo configuration exactly as scripts/provision-demo.sh wrote
it: the demo enables metrics (XKS_METRICS_LISTEN, here a free port from harness.Demo)."""

import os
import re
import shutil
import subprocess
import tempfile
import unittest
import urllib.error
import urllib.request

import harness
from harness import Client, Daemon, Demo, find_binary, free_port


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.status, r.headers.get("Content-Type", ""), r.read().decode()


def value(text, name, **labels):
    """The sample of `name` whose labels include `labels`; None if absent."""
    for line in text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        m = re.match(r'^(\w+)(?:\{(.*)\})? (\S+)$', line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            return float(m.group(3))
    return None


class MetricsTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-metrics-")
        cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        cls.metrics_port = cls.demo.metrics_port
        cls.daemon = Daemon(find_binary("xks-proxy", "XKS_PROXY_BIN"), cls.demo).start()
        cls.daemon.wait_ready()
        cls.client = Client(cls.demo)

    @classmethod
    def tearDownClass(cls):
        if cls.daemon.stop() == 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_demo_config_serves_metrics_on_the_given_port(self):
        """provision-demo.sh writes a metrics section with XKS_METRICS_LISTEN, says where in
        its summary line, and the daemon started on that file serves /metrics there."""
        with open(self.demo.config) as f:
            config = f.read()
        self.assertRegex(config, re.compile(
            r'^metrics: \{ listen: "127\.0\.0\.1:%d" \}$' % self.metrics_port, re.M))
        self.assertIn(f"metrics http://127.0.0.1:{self.metrics_port}/metrics",
                      self.demo.provision_output)
        status, ctype, text = scrape(self.metrics_port)
        self.assertEqual(status, 200)
        self.assertIn("text/plain", ctype)
        self.assertEqual(value(text, "xks_proxy_build_info"), 1)

    def test_provisioning_defaults_and_off(self):
        """Without XKS_METRICS_LISTEN the demo uses the documented 127.0.0.1:9464; "off" leaves
        the section out. Checked on the written file (a copy of the directory, so the
        running daemon's demo is untouched); no daemon binds 9464 here."""
        copy = os.path.join(self.tmp, "copy")
        shutil.copytree(self.demo.dir, copy, symlinks=True)
        script = os.path.join(harness.REPO, "scripts", "provision-demo.sh")
        env = {k: v for k, v in os.environ.items() if k != "XKS_METRICS_LISTEN"}
        env["XKS_LISTEN"] = f"127.0.0.1:{self.demo.port}"
        for knob, expected in ((None, 'metrics: { listen: "127.0.0.1:9464" }'), ("off", None)):
            with self.subTest(XKS_METRICS_LISTEN=knob):
                run_env = dict(env) if knob is None else dict(env, XKS_METRICS_LISTEN=knob)
                res = subprocess.run([script, copy], env=run_env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, timeout=120)
                self.assertEqual(res.returncode, 0, self.demo.redact(res.stdout))
                with open(os.path.join(copy, "xks-proxy.yaml")) as f:
                    lines = [l for l in f.read().splitlines() if l.startswith("metrics:")]
                self.assertEqual(lines, [expected] if expected else [])
                if expected:
                    self.assertIn("metrics http://127.0.0.1:9464/metrics", res.stdout)
                else:
                    self.assertNotIn("metrics http", res.stdout)

    def test_counters_after_known_traffic(self):
        ks = self.demo.uri_path
        _, _, before = scrape(self.metrics_port)
        ok0 = value(before, "xks_proxy_requests_total", keystore=ks, api="Encrypt", outcome="ok") or 0
        nf0 = value(before, "xks_proxy_requests_total", keystore=ks, api="GetKeyMetadata",
                    outcome="KeyNotFoundException") or 0
        hsm0 = value(before, "xks_proxy_hsm_call_duration_seconds_count", function="encrypt") or 0
        for _ in range(5):
            self.assertEqual(self.client.encrypt("demo-aes-key", self.client.new_plaintext()).status, 200)
        for _ in range(3):
            self.assertEqual(self.client.key_metadata("no-such-key").status, 404)

        status, ctype, text = scrape(self.metrics_port)
        self.assertEqual(status, 200)
        self.assertIn("text/plain", ctype)
        self.assertEqual(value(text, "xks_proxy_requests_total", keystore=ks, api="Encrypt",
                               outcome="ok"), ok0 + 5)
        self.assertEqual(value(text, "xks_proxy_requests_total", keystore=ks, api="GetKeyMetadata",
                               outcome="KeyNotFoundException"), nf0 + 3)
        self.assertEqual(value(text, "xks_proxy_hsm_call_duration_seconds_count",
                               function="encrypt"), hsm0 + 5)
        # The 250 ms budget is a bucket bound, and every Encrypt landed inside it.
        count = value(text, "xks_proxy_request_duration_seconds_count", api="Encrypt")
        self.assertEqual(value(text, "xks_proxy_request_duration_seconds_bucket", api="Encrypt",
                               le="0.25"), count)
        self.assertEqual(value(text, "xks_proxy_hsm_health", status="ACTIVE"), 1)
        self.assertGreater(value(text, "xks_proxy_credential_last_used_timestamp_seconds",
                                 keystore=ks, access_key_id=self.demo.akid), 0)
        self.assertEqual(value(text, "xks_proxy_build_info"), 1)
        self.assertGreater(value(text, "xks_proxy_tls_certificate_days_remaining"), 0)
        self.assertGreater(value(text, "xks_proxy_tls_handshakes_total", result="ok"), 0)
        for secret in self.demo.secrets():
            self.assertNotIn(secret, text)

    def test_hsm_session_pool_occupancy(self):
        """xks_proxy_hsm_sessions_open / _in_use{hsm} come from the HSM's session pool: the
        demo's hsm1 has `sessions: 4`, opened at startup; at rest (between requests) at
        most the background health probe holds one."""
        for _ in range(3):
            self.assertEqual(self.client.encrypt("demo-aes-key", self.client.new_plaintext()).status, 200)
        _, _, text = scrape(self.metrics_port)
        self.assertIn("# TYPE xks_proxy_hsm_sessions_open gauge", text)
        self.assertIn("# TYPE xks_proxy_hsm_sessions_in_use gauge", text)
        opened = value(text, "xks_proxy_hsm_sessions_open", hsm="hsm1")
        in_use = value(text, "xks_proxy_hsm_sessions_in_use", hsm="hsm1")
        self.assertIsNotNone(opened, "no xks_proxy_hsm_sessions_open{hsm=\"hsm1\"}")
        self.assertIsNotNone(in_use, "no xks_proxy_hsm_sessions_in_use{hsm=\"hsm1\"}")
        self.assertGreaterEqual(opened, 1)
        self.assertLessEqual(opened, 4)
        self.assertGreaterEqual(in_use, 0)
        self.assertLessEqual(in_use, 1)
        self.assertLess(in_use, opened)

    def test_head_and_wrong_method(self):
        """HEAD /metrics answers as GET without a body; POST is 405 with Allow: GET."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}/metrics", method="HEAD")
        with urllib.request.urlopen(req, timeout=10) as r:
            self.assertEqual(r.status, 200)
            self.assertIn("text/plain", r.headers.get("Content-Type", ""))
            self.assertEqual(r.read(), b"")
        req = urllib.request.Request(f"http://127.0.0.1:{self.metrics_port}/metrics", data=b"",
                                     method="POST")
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req, timeout=10)
        self.assertEqual(e.exception.code, 405)
        self.assertEqual(e.exception.headers.get("Allow"), "GET")

    def test_other_paths_are_404(self):
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/", timeout=10)
        self.assertEqual(e.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
