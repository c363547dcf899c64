"""Prometheus metrics of the real daemon after known traffic (issue 6): request
counters by key store, API and outcome, latency histograms, HSM call latency,
health, credential last use, build info — and never a secret in the output."""

import os
import re
import shutil
import tempfile
import unittest
import urllib.request

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
        cls.metrics_port = free_port()
        cls.config = os.path.join(cls.demo.dir, "metrics-config.yaml")
        with open(cls.demo.config) as f:
            text = f.read()
        with open(cls.config, "w") as f:
            f.write(text + f'\nmetrics: {{ listen: "127.0.0.1:{cls.metrics_port}" }}\n')
        os.chmod(cls.config, 0o600)
        cls.daemon = Daemon(find_binary("xks-proxy", "XKS_PROXY_BIN"), cls.demo,
                            config=cls.config).start()
        cls.daemon.wait_ready()
        cls.client = Client(cls.demo)

    @classmethod
    def tearDownClass(cls):
        if cls.daemon.stop() == 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)

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

    def test_other_paths_are_404(self):
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/", timeout=10)
        self.assertEqual(e.exception.code, 404)


if __name__ == "__main__":
    unittest.main()
