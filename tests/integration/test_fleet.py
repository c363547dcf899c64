"""A fleet of three proxies behind a real load balancer, operated the way operators do.

Debian's HAProxy stands in for the AWS Network Load Balancer: TCP mode (TLS passes
through to the proxies, as with an NLB's TCP listener), round robin over connections,
HTTP health checks `GET /ping` over TLS every CHECK_INTER_MS (faster while a server
changes state), FALL failures to take a server out, RISE successes to take it back.
Three xks-proxy daemons serve one SoftHSM2 token on loopback ports; the third reaches it
through the fault-injecting PKCS#11 module (tests/fault_pkcs11). Client threads act as
KMS: each keeps one keep-alive connection to the balancer, sends botocore-signed
Encrypts without pause, opens a new connection when a response says `Connection:
close`, and never retries a failed request.

Events, in order, each while the load runs:
- rolling restart: SIGTERM one proxy, wait for it to exit, start it, wait until HAProxy
  has it back; then the next. Every request gets 200. The proxies run with
  server.shutdown_delay_ms (see docs/operations.md, "Behind a load balancer").
- credential rotation: a new credential added to each proxy by SIGHUP, the client
  switched, the old one removed by SIGHUP: no authentication failure, no failure at all.
- kill -9 of one proxy: failures only for requests on its connections at that moment
  (at most one per client thread), HAProxy marks it DOWN within one check interval plus
  (FALL - 1) fast intervals, the two others serve everything after that.
- HSM unusable for the third proxy (device errors from the fault module): its /ping
  answers 503, HAProxy marks it DOWN and sends it nothing more, its GetHealthStatus
  reports the HSM UNAVAILABLE, and the other two serve every request.

Figures are printed with the prefix "FIGURE".
"""

import base64
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import yaml

import harness
from harness import (Client, Daemon, Demo, Faults, fault_module, figure, find_binary,
                     free_port, write_private)

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
HAPROXY = "/usr/sbin/haproxy"
PROXIES = 3
CLIENT_THREADS = 4
CHECK_INTER_MS = 500       # HAProxy `inter`: check period of a server in a steady state
CHECK_FAST_MS = 100        # `fastinter`: while a server is changing state
FALL, RISE = 2, 2
# After SIGTERM, longer than HAProxy needs to mark the proxy DOWN (inter + fastinter).
SHUTDOWN_DELAY_MS = 1000
MODULE_BUDGET_S = 90
# A client opens a new connection after this many requests on one, as KMS's hosts
# renew theirs: HAProxy's round robin then spreads the load over every proxy again.
REQUESTS_PER_CONNECTION = 40

FAILED = "failed"
DEADLINE = "DependencyTimeoutException"
# DependencyTimeoutException answers tolerated, as a share of all requests: on a shared
# 2-core machine a request can miss the deadline waiting for the CPU; that is reported,
# and it is an answer, not a dropped request.
MAX_DEADLINE_SHARE = 0.02


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return r.read().decode()


def encrypts_served(port):
    """Encrypt requests this proxy has answered, any outcome (its /metrics)."""
    total = 0.0
    for line in scrape(port).splitlines():
        if line.startswith("xks_proxy_requests_total{") and 'api="Encrypt"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


class HAProxy:
    def __init__(self, directory, servers):
        self.port = free_port()
        self.sock = os.path.join(directory, "haproxy.sock")
        self.cfg = os.path.join(directory, "haproxy.cfg")
        self.log_path = os.path.join(directory, "haproxy.log")
        lines = [
            "global",
            f"  stats socket {self.sock} mode 600 level admin",
            "  maxconn 2000",
            "defaults",
            "  mode tcp",
            "  timeout connect 200ms",
            "  timeout client 30s",
            "  timeout server 30s",
            "  timeout check 400ms",
            # A connection the proxy refuses (it is stopping or dead) is retried on
            # another server before the client's bytes go anywhere.
            "  retries 5",
            "  option redispatch 1",
            "frontend kms",
            f"  bind 127.0.0.1:{self.port}",
            "  default_backend xks",
            "backend xks",
            "  balance roundrobin",
            "  option httpchk GET /ping",
            "  http-check expect status 200",
            f"  default-server check check-ssl verify none inter {CHECK_INTER_MS}ms "
            f"fastinter {CHECK_FAST_MS}ms downinter {CHECK_INTER_MS}ms fall {FALL} rise {RISE}",
        ]
        lines += [f"  server {name} 127.0.0.1:{port}" for name, port in servers]
        with open(self.cfg, "w") as f:
            f.write("\n".join(lines) + "\n")
        res = subprocess.run([HAPROXY, "-c", "-f", self.cfg], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=30)
        if res.returncode != 0:
            raise AssertionError(f"haproxy -c refused the configuration:\n{res.stdout}")
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([HAPROXY, "-db", "-f", self.cfg], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def command(self, cmd):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2)
            s.connect(self.sock)
            s.sendall(cmd.encode() + b"\n")
            out = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                out += chunk
        return out.decode()

    def statuses(self):
        """{server name: "UP" | "DOWN" | "UP 1/2" | ...} from `show stat`."""
        text = self.command("show stat")
        rows = [line.split(",") for line in text.splitlines() if line]
        header = rows[0]
        header[0] = header[0].lstrip("# ")
        pxi, svi, sti = header.index("pxname"), header.index("svname"), header.index("status")
        return {r[svi]: r[sti] for r in rows[1:]
                if len(r) > sti and r[pxi] == "xks" and r[svi] not in ("FRONTEND", "BACKEND")}

    def wait_status(self, name, wanted, timeout, poll=0.005):
        """Seconds until `name` is `wanted` ("UP" or "DOWN"); fails after `timeout`."""
        t0 = time.monotonic()
        last = None
        while time.monotonic() - t0 < timeout:
            with_retry = None
            try:
                last = self.statuses().get(name)
            except OSError as e:  # the stats socket is not there yet
                with_retry = e
            if last == wanted:
                return time.monotonic() - t0
            if with_retry is None and self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}")
            time.sleep(poll)
        raise AssertionError(f"HAProxy did not see {name} {wanted} within {timeout}s (last {last})")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Proxy:
    """One fleet member: its own config (listen and metrics ports, credentials, module)."""

    def __init__(self, env, name, faulty):
        self.env, self.name, self.faulty = env, name, faulty
        self.port = free_port()
        self.metrics_port = free_port()
        self.config = os.path.join(env.demo.dir, f"{name}.json")
        self.credentials = [env.demo.akid]
        self.daemon = None
        self.starts = 0
        self.write_config()

    def write_config(self):
        cfg = json.loads(json.dumps(self.env.base))
        cfg["server"]["listen"] = f"127.0.0.1:{self.port}"
        cfg["server"]["fleet_size"] = PROXIES
        cfg["server"]["shutdown_delay_ms"] = SHUTDOWN_DELAY_MS
        # The largest deadline: on a busy 2-core box a request can wait for the CPU.
        cfg["server"]["request_deadline_ms"] = 250
        cfg["metrics"] = {"listen": f"127.0.0.1:{self.metrics_port}"}
        cfg["hsm"]["module"] = self.env.module if self.faulty else SOFTHSM
        # A failing HSM shows within a few hundred ms.
        cfg["health"] = {"interval_ms": 250, "max_age_ms": 2000}
        cfg["keystores"][0]["credentials"] = [
            {"access_key_id": a, "secret": {"file": f"secrets/{a}.secret"}} for a in self.credentials]
        write_private(self.config, json.dumps(cfg, indent=1))

    def start(self):
        self.starts += 1
        extra = {}
        if self.faulty:
            f = self.env.faults
            extra = dict(XKS_FAULT_TARGET=SOFTHSM, XKS_FAULT_CONTROL=f.control, XKS_FAULT_STATS=f.stats)
        self.daemon = Daemon(self.env.binary, self.env.demo, config=self.config,
                             log_name=f"{self.name}-{self.starts}.log", extra_env=extra)
        self.daemon.port = self.port
        self.env.daemons.append(self.daemon)
        self.daemon.start()
        self.daemon.wait_ready()
        # A first Encrypt before the balancer sends any: the first HSM operation of a
        # fresh process is the slowest.
        c = Client(self.env.demo)
        c.port, c.base = self.port, f"https://127.0.0.1:{self.port}"
        akid, secret = self.env.credential
        c.post("/keys/demo-aes-key/encrypt", c.encrypt_body(os.urandom(32)), akid=akid, secret=secret)
        return self

    def reload(self):
        self.write_config()
        self.daemon.proc.send_signal(signal.SIGHUP)


class Load:
    """CLIENT_THREADS KMS-like clients on keep-alive connections through the balancer."""

    def __init__(self, client, credential):
        self.client = client
        self.credential = credential      # (akid, secret); switched during the rotation
        self.results = []                 # (thread, t_sent, t_done, outcome)
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(CLIENT_THREADS)]
        self.connections = 0

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.stop_event.set()
        for t in self.threads:
            t.join(30)

    def run(self, index):
        conn = None
        used = 0
        while not self.stop_event.is_set():
            if conn is None or used >= REQUESTS_PER_CONNECTION:
                if conn is not None:
                    conn.close()
                conn = self.client.connection(timeout=10)
                used = 0
                with self.lock:
                    self.connections += 1
            used += 1
            akid, secret = self.credential
            body = self.client.encrypt_body(os.urandom(32))
            t0 = time.monotonic()
            try:
                r = self.client.post("/keys/demo-aes-key/encrypt", body, conn=conn,
                                     akid=akid, secret=secret)
                if r.status == 200:
                    outcome = "ok"
                else:
                    name = r.json.get("errorName") if isinstance(r.json, dict) else None
                    outcome = f"{r.status} {name}"
                if r.headers.get("connection", "").lower() == "close" or conn.sock is None:
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException, ssl.SSLError) as e:
                outcome = f"{FAILED}: {type(e).__name__}"
                conn.close()
                conn = None
            with self.lock:
                self.results.append((index, t0, time.monotonic(), outcome))
        if conn is not None:
            conn.close()

    def window(self, t_from, t_to=None):
        with self.lock:
            return [r for r in self.results if r[1] >= t_from and (t_to is None or r[1] < t_to)]

    @staticmethod
    def failures(rows):
        """Requests the events could fail: everything but 200 and DependencyTimeoutException
        (an answer at the request deadline: the machine, not the fleet, was too slow)."""
        return [r for r in rows if r[3] != "ok" and not r[3].endswith(DEADLINE)]

    @staticmethod
    def deadline_answers(rows):
        return [r for r in rows if r[3].endswith(DEADLINE)]

    @staticmethod
    def summary(rows):
        kinds = {}
        for r in Load.failures(rows):
            kinds[r[3]] = kinds.get(r[3], 0) + 1
        late = len(Load.deadline_answers(rows))
        ok = sum(1 for r in rows if r[3] == "ok")
        text = f"{len(rows)} requests sent, {ok} ok, {sum(kinds.values())} failed"
        if kinds:
            text += f" {kinds}"
        if late:
            text += f", {late} answered 503 {DEADLINE} (machine too slow)"
        return text


class Env:
    def __init__(self):
        if not os.access(HAPROXY, os.X_OK):
            raise unittest.SkipTest("haproxy is not installed (scripts/install-deps.sh test)")
        self.t0 = time.monotonic()
        self.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        self.module = fault_module()
        self.tmp = tempfile.mkdtemp(prefix="xks-it-fleet-")
        self.demo = Demo(os.path.join(self.tmp, "demo"), free_port())
        self.faults = Faults(self.demo.dir)
        with open(self.demo.config) as f:
            self.base = yaml.safe_load(f)
        self.daemons = []
        self.credential = (self.demo.akid, self.demo.secret)   # the one the client uses
        self.haproxy = None
        self.load = None
        self.failed = False

    def finish(self):
        if self.load is not None:
            self.load.stop()
        if self.haproxy is not None:
            self.haproxy.stop()
        self.faults.set()
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            if d.proc is not None and not d.log.closed:
                d.log.close()
        if self.failed or os.environ.get("XKS_IT_KEEP"):
            print(f"\nkept {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)


_env = None


def setUpModule():
    global _env
    _env = Env()


def tearDownModule():
    global _env
    env, _env = _env, None
    if env is not None:
        env.finish()
        figure(f"fleet module: {time.monotonic() - env.t0:.1f} s in all")


class FleetTests(unittest.TestCase):
    """One test: the events share the fleet and the load, one after the other."""

    maxDiff = 4000

    def tearDown(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            _env.failed = True

    def test_fleet_behind_haproxy(self):
        env = _env
        demo = env.demo
        self.proxies = [Proxy(env, f"xks-{i + 1}", faulty=(i == PROXIES - 1)) for i in range(PROXIES)]
        for p in self.proxies:
            p.start()
        env.haproxy = HAProxy(env.tmp, [(p.name, p.port) for p in self.proxies])
        for p in self.proxies:
            env.haproxy.wait_status(p.name, "UP", 15)
        client = Client(demo)
        client.port = env.haproxy.port
        client.base = f"https://127.0.0.1:{client.port}"
        env.load = load = Load(client, (demo.akid, demo.secret))
        load.start()
        time.sleep(1.0)
        warm = load.window(0)
        figure(f"warm-up: {Load.summary(warm)}")
        self.assertEqual(Load.failures(warm), [], "failures before any event")
        self.assertGreater(len(warm), 20)

        self.rolling_restart(load)
        self.rotation(load)
        self.kill_9(load)
        self.hsm_unusable(load)
        load.stop()
        env.load = None
        everything = load.window(0)
        figure(f"whole run: {Load.summary(everything)}, {load.connections} client connections")
        for d in _env.daemons:
            self.assertEqual(harness.find_leaks(d.read_log(), [], _env.demo.secrets()), [], d.log_path)
        late = Load.deadline_answers(everything)
        self.assertLessEqual(len(late), MAX_DEADLINE_SHARE * len(everything), late)
        self.assertLess(time.monotonic() - env.t0, MODULE_BUDGET_S)

    # -- rolling restart ----------------------------------------------------------------
    def rolling_restart(self, load):
        haproxy = _env.haproxy
        t_start = time.monotonic()
        for p in self.proxies:
            before = p.daemon
            t0 = time.monotonic()
            before.proc.send_signal(signal.SIGTERM)
            rc = before.proc.wait(30)
            before.log.close()
            self.assertEqual(rc, 0, before.log_tail())
            down = [e for e in before.log_lines() if e.get("event") == "drain_timeout"]
            self.assertEqual(down, [], f"{p.name}: the drain timed out")
            t_exit = time.monotonic() - t0
            p.start()
            haproxy.wait_status(p.name, "UP", 15)
            figure(f"rolling restart of {p.name}: exited {t_exit:.2f} s after SIGTERM, back in "
                   f"HAProxy {time.monotonic() - t0:.2f} s after it")
        rows = load.window(t_start)
        figure(f"rolling restart (3 proxies, one at a time): {Load.summary(rows)}")
        self.assertEqual(Load.failures(rows), [], "a rolling restart must not fail a request")
        self.assertGreater(len(rows), 50)

    # -- credential rotation ------------------------------------------------------------
    def rotation(self, load):
        demo = _env.demo
        t_start = time.monotonic()
        old = (demo.akid, demo.secret)
        new_akid = "FLEETROT" + "".join("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[b % 32] for b in os.urandom(12))
        new_secret = base64.b64encode(os.urandom(36)).decode()
        demo.pins.append(new_secret)  # scanned for in the logs like the other secrets
        write_private(os.path.join(demo.dir, "secrets", f"{new_akid}.secret"), new_secret + "\n")

        def direct(p, cred):
            c = Client(demo)
            c.port = p.port
            c.base = f"https://127.0.0.1:{p.port}"
            return c.health(akid=cred[0], secret=cred[1]).status

        def wait_all(cred, status):
            for p in self.proxies:
                deadline = time.monotonic() + 15
                while direct(p, cred) != status:
                    self.assertLess(time.monotonic(), deadline, f"{p.name}: reload not applied")
                    time.sleep(0.05)

        for p in self.proxies:
            p.credentials = [old[0], new_akid]
            p.reload()
        wait_all((new_akid, new_secret), 200)
        t_added = time.monotonic() - t_start
        load.credential = _env.credential = (new_akid, new_secret)   # KMS after UpdateCustomKeyStore
        time.sleep(0.5)
        for p in self.proxies:
            p.credentials = [new_akid]
            p.reload()
        wait_all(old, 401)
        time.sleep(0.3)
        rows = load.window(t_start)
        auth = [r for r in rows if "401" in r[3] or "Authentication" in r[3]]
        figure(f"credential rotation across the fleet (added in {t_added:.2f} s, old removed "
               f"{time.monotonic() - t_start:.2f} s after the start): {Load.summary(rows)}, "
               f"{len(auth)} authentication failures")
        self.assertEqual(auth, [])
        self.assertEqual(Load.failures(rows), [])
        for p in self.proxies:
            events = [e.get("event") for e in p.daemon.log_lines()]
            self.assertEqual(events.count("reloaded"), 2, f"{p.name}: {events[-10:]}")

    # -- kill -9 ------------------------------------------------------------------------
    def kill_9(self, load):
        haproxy = _env.haproxy
        victim = self.proxies[1]
        others = [p for p in self.proxies if p is not victim]
        before = {p.name: encrypts_served(p.metrics_port) for p in others}
        time.sleep(0.3)
        t_kill = time.monotonic()
        victim.daemon.proc.send_signal(signal.SIGKILL)
        out_s = haproxy.wait_status(victim.name, "DOWN", 10, poll=0.002)
        t_down = t_kill + out_s
        victim.daemon.proc.wait(10)
        victim.daemon.log.close()
        time.sleep(1.5)
        t_end = time.monotonic()
        rows = load.window(t_kill - 0.3, t_end)
        failed = Load.failures(rows)
        after_down = Load.failures(load.window(t_down, t_end))
        absorbed = {p.name: encrypts_served(p.metrics_port) - before[p.name] for p in others}
        limit_s = (CHECK_INTER_MS + (FALL - 1) * CHECK_FAST_MS) / 1000
        figure(f"kill -9 of {victim.name}: HAProxy marked it DOWN {out_s * 1000:.0f} ms after "
               f"the kill (limit {limit_s * 1000:.0f} ms: inter + (fall-1) x fastinter); "
               f"{Load.summary(rows)}; {len(after_down)} failed after it was DOWN; "
               f"the others served {absorbed}")
        in_flight = [r for r in failed if r[1] < t_kill]
        figure("kill -9: failed requests (sent at, relative to the kill): " +
               ", ".join(f"{(r[1] - t_kill) * 1000:+.0f} ms {r[3]}" for r in failed))
        # What fails is what was on the killed proxy's connections: at most one request
        # per client, the ones in flight at the kill; a request sent after the kill can
        # only fail while HAProxy still counts the proxy UP, and none once it is DOWN.
        self.assertLessEqual(len(failed), CLIENT_THREADS, failed)
        self.assertGreaterEqual(len(in_flight), len(failed) - 1, failed)
        for r in failed:
            self.assertLess(r[1], t_down, f"a request sent after HAProxy marked it DOWN failed: {r}")
        self.assertEqual(after_down, [])
        self.assertLessEqual(out_s, limit_s + 0.3)
        # The survivors carried every request answered after the kill. (Which of them
        # depends on where HAProxy put the clients' connections: TCP mode pins each
        # connection to one server, so one survivor may carry them all.)
        after_kill_ok = [r for r in rows if r[1] >= t_kill and r[3] == "ok"]
        self.assertGreater(len(after_kill_ok), 0)
        self.assertGreaterEqual(sum(absorbed.values()), len(after_kill_ok), absorbed)
        victim.start()
        haproxy.wait_status(victim.name, "UP", 15)

    # -- an HSM made unusable -----------------------------------------------------------
    def hsm_unusable(self, load):
        haproxy, faults = _env.haproxy, _env.faults
        sick = self.proxies[2]
        self.assertTrue(sick.faulty)
        direct = Client(_env.demo)
        direct.port = sick.port
        direct.base = f"https://127.0.0.1:{sick.port}"
        ctx = direct.ctx
        served_before = encrypts_served(sick.metrics_port)
        time.sleep(0.5)
        self.assertGreater(encrypts_served(sick.metrics_port), served_before,
                           f"{sick.name} had no traffic before its HSM failed")
        t_fault = time.monotonic()
        faults.set("C_Encrypt rv=CKR_DEVICE_ERROR", "C_Decrypt rv=CKR_DEVICE_ERROR")

        def ping():
            conn = http.client.HTTPSConnection("127.0.0.1", sick.port, context=ctx, timeout=2)
            try:
                conn.request("GET", "/ping")
                return conn.getresponse().status
            finally:
                conn.close()

        while ping() != 503:
            self.assertLess(time.monotonic() - t_fault, 10, "/ping never turned 503")
            time.sleep(0.01)
        t_503 = time.monotonic() - t_fault
        out_s = haproxy.wait_status(sick.name, "DOWN", 10)
        t_down = time.monotonic()
        health = direct.health(akid=load.credential[0], secret=load.credential[1])
        self.assertEqual(health.status, 200, repr(health))
        statuses = [e["healthStatus"] for e in health.json["ekmFleetDetails"]]
        self.assertEqual(statuses, ["UNAVAILABLE"])
        logged = [e for e in sick.daemon.log_lines()
                  if e.get("event") == "hsm_health" and e.get("status") == "UNAVAILABLE"]
        self.assertTrue(logged, sick.daemon.log_tail())
        why = logged[-1].get("detail", "")
        self.assertTrue(why, logged[-1])
        time.sleep(0.3)   # requests already on their way when it went DOWN
        served0 = encrypts_served(sick.metrics_port)
        t_quiet = time.monotonic()
        time.sleep(1.5)
        served1 = encrypts_served(sick.metrics_port)
        quiet = load.window(t_quiet)
        rows = load.window(t_fault)
        during = load.window(t_fault, t_down)
        figure(f"HSM unusable on {sick.name}: /ping 503 after {t_503 * 1000:.0f} ms, HAProxy "
               f"DOWN {out_s * 1000:.0f} ms later; GetHealthStatus {statuses} (log: {why!r}); "
               f"before DOWN: {Load.summary(during)}; once DOWN: {Load.summary(quiet)}, "
               f"{served1 - served0} sent to {sick.name}")
        self.assertEqual(served1 - served0, 0, "the balancer still sends to the proxy")
        self.assertEqual(Load.failures(quiet), [])
        self.assertGreater(len(quiet), 20)
        self.assertTrue(rows)
        # The HSM comes back: the proxy is taken back without a restart.
        faults.set()
        back = haproxy.wait_status(sick.name, "UP", 15)
        figure(f"HSM back on {sick.name}: HAProxy UP again after {back:.2f} s")


if __name__ == "__main__":
    unittest.main()
