"""Debian's Prometheus server scraping the real daemon, with the shipped alert rules, and
the shipped Grafana dashboard checked against a live /metrics.

- scrape: Prometheus on a free loopback port scrapes the daemon's /metrics every second;
  after known traffic (Encrypts that succeed, GetKeyMetadata of a missing key) its HTTP
  API shows exactly those counts, the target is up, and the HSM is ACTIVE;
- rules: deploy/prometheus/xks-proxy-rules.yml loads (every rule healthy) and, with the
  credential's secret file written 100 days ago, XksProxyCredentialTooOld fires in the
  real server for that access key id, and nothing else fires;
- dashboard: every metric name a query of deploy/grafana/xks-proxy.json uses is in the
  live /metrics (histograms by their _bucket/_count/_sum series), and every query
  evaluates without error in the real Prometheus.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import harness
from harness import Client, Daemon, Demo, figure, find_binary, free_port

PROMETHEUS = "/usr/bin/prometheus"
RULES = os.path.join(harness.REPO, "deploy", "prometheus", "xks-proxy-rules.yml")
DASHBOARD = os.path.join(harness.REPO, "deploy", "grafana", "xks-proxy.json")
JOB = "xks-proxy"
ENCRYPTS, MISSING = 7, 3
CREDENTIAL_AGE_DAYS = 100


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read().decode()


def dashboard_queries():
    with open(DASHBOARD) as f:
        dash = json.load(f)
    out = []
    for panel in dash["panels"]:
        for t in panel.get("targets", []):
            out.append((panel["title"], t["expr"]))
    for var in dash.get("templating", {}).get("list", []):
        q = var.get("definition")
        if q:
            out.append((f"variable {var['name']}", q))
    return out


# PromQL words that look like metric names but are not.
PROMQL_WORDS = {"sum", "by", "without", "rate", "increase", "histogram_quantile", "max", "min",
                "avg", "count", "time", "ignoring", "on", "group_left", "group_right", "label_values",
                "le", "bool", "and", "or", "unless", "offset", "irate", "delta", "topk", "abs"}


def metric_names(expr):
    """Identifiers of `expr` that are metric names: not inside quotes or {} / [] and not
    PromQL keywords, functions or labels of a by/ignoring clause."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", "{}", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)
    text = re.sub(r"\b(by|without|ignoring|on|group_left|group_right)\s*\([^)]*\)", r"\1", text)
    text = re.sub(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*\w+\s*\)", r"label_values(\1)", text)
    names = set()
    for m in re.finditer(r"\b[A-Za-z_:][\w:]*\b", text):
        word = m.group(0)
        if word in PROMQL_WORDS or re.fullmatch(r"\d.*", word):
            continue
        names.add(word)
    return names


class Env:
    def __init__(self):
        if not os.access(PROMETHEUS, os.X_OK):
            raise unittest.SkipTest("prometheus is not installed (scripts/install-deps.sh test)")
        self.t0 = time.monotonic()
        self.tmp = tempfile.mkdtemp(prefix="xks-it-prometheus-")
        self.demo = Demo(os.path.join(self.tmp, "demo"), free_port())
        # The credential was issued CREDENTIAL_AGE_DAYS ago (its secret file's mtime).
        secret = os.path.join(self.demo.dir, "secrets", f"{self.demo.akid}.secret")
        old = time.time() - CREDENTIAL_AGE_DAYS * 86400
        os.utime(secret, (old, old))
        # A not_after far away: its series exists (the dashboard shows it), no alert fires.
        with open(self.demo.config) as f:
            text = f.read()
        line = f"secrets/{self.demo.akid}.secret }} }}"
        assert line in text, "the demo config's credential line changed"
        with open(self.demo.config, "w") as f:
            f.write(text.replace(line, f"secrets/{self.demo.akid}.secret }}, not_after: 2099-01-01 }}"))
        self.daemon = Daemon(find_binary("xks-proxy", "XKS_PROXY_BIN"), self.demo).start()
        self.prom = None
        try:
            self.daemon.wait_ready()
            self.start_prometheus()
        except BaseException:
            self.finish(keep=True)
            raise
        self.client = Client(self.demo)

    def start_prometheus(self):
        self.prom_port = free_port()
        self.prom_url = f"http://127.0.0.1:{self.prom_port}"
        cfg = os.path.join(self.tmp, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ["127.0.0.1:{self.demo.metrics_port}"]
""")
        self.prom_log = open(os.path.join(self.tmp, "prometheus.log"), "ab")
        self.prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={cfg}", f"--storage.tsdb.path={self.tmp}/tsdb",
             f"--web.listen-address=127.0.0.1:{self.prom_port}"],
            stdout=self.prom_log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if "Ready" in get(f"{self.prom_url}/-/ready", timeout=1):
                    return
            except OSError:
                pass
            if self.prom.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"prometheus did not become ready; log:\n{self.prom_log_tail()}")
            time.sleep(0.1)

    def prom_log_tail(self):
        with open(os.path.join(self.tmp, "prometheus.log"), "rb") as f:
            return f.read().decode(errors="replace")[-3000:]

    def query(self, expr):
        """Instant query: (status, result list)."""
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            js = json.loads(get(url))
        except urllib.error.HTTPError as e:
            js = json.loads(e.read().decode())
        return js["status"], js.get("data", {}).get("result", []), js.get("error")

    def finish(self, keep=False):
        if self.prom is not None and self.prom.poll() is None:
            self.prom.terminate()
            try:
                self.prom.wait(15)
            except subprocess.TimeoutExpired:
                self.prom.kill()
                self.prom.wait()
        if self.prom is not None:
            self.prom_log.close()
        rc = self.daemon.stop()
        if keep or rc != 0 or os.environ.get("XKS_IT_KEEP"):
            print(f"\nkept {self.tmp} (daemon exit {rc})")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        return rc


_env = None


def setUpModule():
    global _env
    _env = Env()


def tearDownModule():
    global _env
    env, _env = _env, None
    if env is not None:
        rc = env.finish()
        figure(f"prometheus module: {time.monotonic() - env.t0:.1f} s in all")
        assert rc == 0, f"xks-proxy exited with {rc}"


class PrometheusTests(unittest.TestCase):
    def wait_for(self, what, expr, check, timeout=20):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            status, result, error = _env.query(expr)
            last = (status, result, error)
            if status == "success" and check(result):
                return result
            time.sleep(0.2)
        self.fail(f"{what}: {expr} gave {last}")

    def test_1_scrape_sees_known_traffic(self):
        env, ks = _env, _env.demo.uri_path
        sel = f'job="{JOB}",keystore="{ks}"'
        enc = f'xks_proxy_requests_total{{{sel},api="Encrypt",outcome="ok"}}'
        nf = f'xks_proxy_requests_total{{{sel},api="GetKeyMetadata",outcome="KeyNotFoundException"}}'
        self.wait_for("the target is scraped", f'up{{job="{JOB}"}}',
                      lambda r: len(r) == 1 and r[0]["value"][1] == "1")
        # The counters exist from the start at 0: the baseline is a scraped sample.
        base_enc = float(self.wait_for("baseline", enc, lambda r: len(r) == 1)[0]["value"][1])
        base_nf = float(self.wait_for("baseline", nf, lambda r: len(r) == 1)[0]["value"][1]) \
            if env.query(nf)[1] else 0.0
        for _ in range(ENCRYPTS):
            self.assertEqual(env.client.encrypt("demo-aes-key", env.client.new_plaintext()).status, 200)
        for _ in range(MISSING):
            self.assertEqual(env.client.key_metadata("no-such-key").status, 404)
        t0 = time.monotonic()
        self.wait_for("Encrypts counted", enc,
                      lambda r: len(r) == 1 and float(r[0]["value"][1]) == base_enc + ENCRYPTS)
        self.wait_for("KeyNotFound counted", nf,
                      lambda r: len(r) == 1 and float(r[0]["value"][1]) == base_nf + MISSING)
        seen = time.monotonic() - t0
        self.wait_for("HSM ACTIVE", f'xks_proxy_hsm_health{{job="{JOB}",status="ACTIVE"}}',
                      lambda r: len(r) == 1 and r[0]["value"][1] == "1")
        # The latency histogram went through: every Encrypt inside the 250 ms bucket.
        self.wait_for("Encrypt latency", f'xks_proxy_request_duration_seconds_bucket{{job="{JOB}",api="Encrypt",le="0.25"}}'
                      f' - ignoring(le) xks_proxy_request_duration_seconds_count{{job="{JOB}",api="Encrypt"}}',
                      lambda r: len(r) == 1 and float(r[0]["value"][1]) == 0)
        figure(f"Prometheus saw {ENCRYPTS} Encrypts and {MISSING} KeyNotFoundException "
               f"{seen:.1f} s after they were answered (scrape interval 1 s)")

    def test_2_rules_load_and_the_old_credential_alert_fires(self):
        env = _env
        rules = json.loads(get(f"{env.prom_url}/api/v1/rules"))["data"]["groups"]
        loaded = [r for g in rules for r in g["rules"]]
        self.assertGreaterEqual(len(loaded), 12)
        for r in loaded:
            self.assertEqual(r.get("health"), "ok", r)
        deadline = time.monotonic() + 20
        firing = []
        while time.monotonic() < deadline:
            alerts = json.loads(get(f"{env.prom_url}/api/v1/alerts"))["data"]["alerts"]
            firing = [a for a in alerts if a["state"] == "firing"]
            if any(a["labels"]["alertname"] == "XksProxyCredentialTooOld" for a in firing):
                break
            time.sleep(0.2)
        names = sorted(a["labels"]["alertname"] for a in firing)
        figure(f"alerts firing on the test daemon: {names}")
        self.assertEqual(names, ["XksProxyCredentialTooOld"])
        self.assertEqual(firing[0]["labels"]["access_key_id"], env.demo.akid)

    def test_3_dashboard_uses_only_exported_metrics(self):
        env = _env
        live = get(env.demo.metrics_url)
        exported = set()
        for line in live.splitlines():
            m = re.match(r"# TYPE (\S+) (\S+)", line)
            if m:
                name, kind = m.groups()
                exported.add(name)
                if kind == "histogram":
                    exported |= {name + "_bucket", name + "_count", name + "_sum"}
        exported.add("up")  # Prometheus's own, per target
        queries = dashboard_queries()
        self.assertGreater(len(queries), 15)
        used = set()
        for title, expr in queries:
            names = metric_names(expr)
            self.assertTrue(names, f"{title}: no metric in {expr}")
            for n in names:
                self.assertIn(n, exported, f"panel {title!r} uses {n}, which /metrics does not export")
            used |= names
            if title.startswith("variable"):
                continue
            promql = expr.replace("$__rate_interval", "1m").replace("$instance", ".*")
            status, _, error = env.query(promql)
            self.assertEqual(status, "success", f"panel {title!r}: {error}")
        figure(f"dashboard: {len(queries)} queries, {len(used)} metric names, all exported")


if __name__ == "__main__":
    unittest.main()
