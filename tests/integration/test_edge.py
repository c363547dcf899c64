"""The server's edge against unauthenticated clients, on the real daemon over real TLS
with a real SoftHSM2 token: connection floods of three kinds (idle pingers, raw TCP
that never starts TLS, slowloris) while a fresh signed client keeps being served
inside KMS's 250 ms; the per-source cap; a slow request body blamed on the client,
never on the HSM; rate-limited log lines for failed handshakes; HEAD without a body;
exactly one Host header.

Loopback only. Flood sources bind to 127.0.0.2 and above (all of 127/8 is loopback
on Linux), the signed client stays on 127.0.0.1. Each flood is bounded in count
(at most FLOOD_MAX connections) and time.
"""

import concurrent.futures
import contextlib
import math
import multiprocessing
import os
import re
import resource
import shutil
import socket
import ssl
import tempfile
import threading
import time
import unittest
import urllib.request

from harness import Client, Daemon, Demo, find_binary, free_port

MAX_CONNECTIONS = 512
FLOOD_FILL = 600          # > MAX_CONNECTIONS: the server is full when the measuring starts
FLOOD_RATE = 100          # new attack connections per second while measuring
FLOOD_MAX = 900           # never more attack connections than this per flood
SIGNED = 100              # signed requests measured per flood
BUDGET_S = 0.25           # KMS abandons a call after 250 ms
BODY_TIMEOUT_MS = 1000
LOG_BURST = 20            # the daemon's per-cause burst per 10 s period

_tmp = None
_demo = None
_binary = None


def setUpModule():
    global _tmp, _demo, _binary
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 8192 if hard == resource.RLIM_INFINITY else min(hard, 8192)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))  # inherited by the daemons
    _binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
    _tmp = tempfile.mkdtemp(prefix="xks-it-edge-")
    _demo = Demo(os.path.join(_tmp, "demo"), free_port())


def tearDownModule():
    shutil.rmtree(_tmp, ignore_errors=True)


def config_with(limits):
    """The demo config on the demo's port with extra server.limits."""
    with open(_demo.config) as f:
        cfg = f.read()
    assert "allow_root: true }" in cfg, "provision-demo.sh must write server.allow_root: true"
    text = "limits: { " + ", ".join(f"{k}: {v}" for k, v in limits.items()) + " }"
    return cfg.replace("allow_root: true }", f"allow_root: true, {text} }}")


def start_daemon(name, limits):
    path = os.path.join(_demo.dir, f"{name}.yaml")
    with open(path, "w") as f:
        f.write(config_with(limits))
    os.chmod(path, 0o600)
    d = Daemon(_binary, _demo, config=path, log_name=f"{name}.log").start()
    try:
        d.wait_ready()
    except BaseException:
        d.stop()
        raise
    return d


def tls_context():
    return ssl.create_default_context(cafile=_demo.ca)


def connect_from(source, timeout=10):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(("127.0.0.1", _demo.port))
    return s


def flood_source(i):
    return f"127.0.{2 + (i // 250) % 200}.{1 + i % 250}"


def metric(name, labels):
    with urllib.request.urlopen(_demo.metrics_url, timeout=10) as r:
        text = r.read().decode()
    m = re.search(r"^" + re.escape(name + labels) + r" (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def dropped(cause):
    return metric("xks_proxy_connections_dropped_total", f'{{cause="{cause}"}}')


def read_response(s, timeout=5):
    """One HTTP/1.1 response (head + Content-Length body) from `s`; returns
    (status, head, body, bytes read past it)."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed mid-response: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status = int(re.match(rb"HTTP/1\.1 (\d{3}) ", head).group(1))
    m = re.search(rb"^content-length: *(\d+)", head, re.I | re.M)
    return status, head.decode("latin-1"), rest, int(m.group(1)) if m else 0


# ---------------------------------------------------------------------------------------
# Floods

class Flood:
    """Attack connections of one kind: FLOOD_FILL at once, then FLOOD_RATE a second in
    the background (the slowloris ones also trickle a byte a second each), at most
    FLOOD_MAX in all."""

    def __init__(self, kind):
        self.kind = kind
        self.socks = []
        self.lock = threading.Lock()
        self.opened = 0
        self.ctx = tls_context()
        self.payload = (f"POST {_demo.uri_path}/health HTTP/1.1\r\nHost: localhost\r\n"
                        "X-Slow: " + "a" * 2000 + "\r\n").encode()

    def open_one(self, i):
        try:
            s = connect_from(flood_source(i), timeout=10)
            if self.kind == "idle_ping":
                s = self.ctx.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                read_response(s, timeout=10)
            elif self.kind == "slowloris":
                s = self.ctx.wrap_socket(s, server_hostname="127.0.0.1")
                s.sendall(self.payload[:1])
            with self.lock:
                self.socks.append([s, 1])
        except (OSError, ssl.SSLError, AssertionError):
            pass  # refused or evicted: that is the server defending itself

    def fill(self):
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            list(pool.map(self.open_one, range(FLOOD_FILL)))
        self.opened = FLOOD_FILL

    def _background(self, opened):
        next_at = time.monotonic()
        last_drip = time.monotonic()
        while not self.stop.is_set() and self.opened < FLOOD_MAX:
            self.open_one(self.opened)
            self.opened += 1
            opened.value = self.opened
            if self.kind == "slowloris" and time.monotonic() - last_drip >= 1.0:
                last_drip = time.monotonic()
                with self.lock:
                    socks = list(self.socks)
                for entry in socks:
                    with contextlib.suppress(OSError, ssl.SSLError):
                        entry[0].settimeout(0)
                        entry[0].send(self.payload[entry[1]:entry[1] + 1])
                        entry[1] += 1
            next_at += 1.0 / FLOOD_RATE
            self.stop.wait(max(0.0, next_at - time.monotonic()))

    def run(self, ready, stop, opened):
        """The attacker, in a process of its own so that it never holds the measuring
        client's interpreter lock, and at a lower priority: on a real network the
        attacker's own CPU is on another machine; the daemon's work for it is not."""
        os.nice(10)
        self.stop = stop
        self.fill()
        opened.value = self.opened
        ready.set()
        self._background(opened)
        for s, _ in self.socks:
            with contextlib.suppress(OSError):
                s.close()

    def __enter__(self):
        ctx = multiprocessing.get_context("fork")
        self.ready, self.stop_event, self.count = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        self.proc = ctx.Process(target=self.run, args=(self.ready, self.stop_event, self.count),
                                daemon=True)
        self.proc.start()
        if not self.ready.wait(120):
            self.__exit__()
            raise AssertionError(f"{self.kind}: the flood did not fill within 120 s")
        return self

    @property
    def total(self):
        return self.count.value

    def __exit__(self, *exc):
        self.stop_event.set()
        self.proc.join(30)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class FloodTests(unittest.TestCase):
    """max_connections 512, default timeouts (unauthenticated idle 5 s, handshake 5 s,
    header 10 s, authenticated idle 120 s): each flood fills every slot, and a fresh
    client's signed requests are still served, each inside 250 ms."""

    @classmethod
    def setUpClass(cls):
        cls.daemon = start_daemon("flood", {"max_connections": MAX_CONNECTIONS,
                                            "body_timeout_ms": BODY_TIMEOUT_MS})
        cls.client = Client(_demo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        assert rc == 0, f"exit {rc}; log:\n{cls.daemon.log_tail()}"

    def measure(self, kind):
        latencies, failures = [], []
        for _ in range(SIGNED):
            t0 = time.monotonic()
            try:
                r = self.client.health()  # a fresh connection each: TCP + TLS + signed request
                if r.status != 200:
                    failures.append(repr(r))
            except Exception as e:  # any failure counts: reset, TLS error, timeout
                failures.append(repr(e))
            latencies.append(time.monotonic() - t0)
            time.sleep(0.01)
        latencies.sort()
        p99 = latencies[math.ceil(0.99 * len(latencies)) - 1]  # nearest rank
        return latencies, failures, p99

    def run_flood(self, kind):
        _, _, baseline = self.measure(kind)  # the same client on the same machine, no flood
        evicted_before = dropped("evicted")
        with Flood(kind) as flood:
            time.sleep(0.3)
            latencies, failures, p99 = self.measure(kind)
            opened = flood.total
        evicted = dropped("evicted") - evicted_before
        print(f"\nflood {kind}: signed requests sent {SIGNED}, failed {len(failures)}, "
              f"p99 {p99 * 1000:.1f} ms (without the flood: p99 {baseline * 1000:.1f} ms; "
              f"attack connections {opened}, evicted {evicted:.0f})",
              flush=True)
        self.assertEqual(failures, [], f"{kind}: signed requests failed during the flood")
        self.assertLess(p99, BUDGET_S, f"{kind}: latencies {latencies}")
        self.assertGreater(opened, MAX_CONNECTIONS)
        self.assertLessEqual(opened, FLOOD_MAX)
        return evicted

    def test_a_idle_pingers(self):
        self.run_flood("idle_ping")

    def test_b_raw_tcp_without_tls(self):
        # Opened faster than any timeout ends them: the server is full and makes room
        # by evicting. (Idle pingers and slowloris clients, slower to open, may also
        # be ended by the short unauthenticated timeouts before the server fills.)
        self.assertGreater(self.run_flood("raw_tcp"), 0, "the full server evicted nothing")

    def test_c_slowloris(self):
        self.run_flood("slowloris")


# ---------------------------------------------------------------------------------------
# Per-source cap and log rate limits

class SourceCapAndLogTests(unittest.TestCase):
    CAP = 8

    @classmethod
    def setUpClass(cls):
        cls.daemon = start_daemon("cap", {"max_unauthenticated_per_source": cls.CAP})
        cls.client = Client(_demo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        assert rc == 0, f"exit {rc}; log:\n{cls.daemon.log_tail()}"

    def events(self, name):
        return [l for l in self.daemon.log_lines() if l.get("event") == name]

    def test_per_source_cap(self):
        before = dropped("refused_per_source")
        socks = [connect_from("127.0.9.9") for _ in range(3 * self.CAP)]
        try:
            time.sleep(0.5)
            open_left = 0
            for s in socks:
                s.settimeout(0.05)
                try:
                    if s.recv(1):
                        open_left += 1   # data (not expected before a ClientHello): open
                except socket.timeout:
                    open_left += 1       # nothing yet: still open
                except OSError:
                    pass                 # reset: refused
            self.assertEqual(open_left, self.CAP, "connections held open from one address")
            # Another address is unaffected, and a signed client is served.
            self.assertEqual(self.client.health().status, 200)
        finally:
            for s in socks:
                s.close()
        self.assertEqual(dropped("refused_per_source") - before, 2 * self.CAP)
        refused = [l for l in self.events("connection_refused")
                   if "max_unauthenticated_per_source" in l.get("reason", "")]
        self.assertTrue(refused, "no connection_refused line naming the setting")

    def test_failed_handshakes_give_a_bounded_number_of_lines(self):
        before_lines = len(self.events("tls_handshake_failed"))
        before = dropped("handshake_failed")
        n = 1000
        t0 = time.monotonic()
        for i in range(n):
            # Plain HTTP on the TLS port: a protocol failure at once.
            with connect_from(flood_source(i)) as s:
                s.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                with contextlib.suppress(OSError):
                    while s.recv(4096):
                        pass
        self.assertLess(time.monotonic() - t0, 30)
        self.assertGreaterEqual(dropped("handshake_failed") - before, n, "every failure is counted")
        # The rest are reported in a summary within the 10 s period (a warning, which
        # also flushes the info lines before it).
        deadline = time.monotonic() + 15
        summary = []
        while time.monotonic() < deadline and not summary:
            summary = [l for l in self.events("log_lines_suppressed")
                       if l.get("cause") == "handshake_failed"]
            time.sleep(0.2)
        self.assertTrue(summary, "no log_lines_suppressed summary for handshake_failed")
        lines = len(self.events("tls_handshake_failed")) - before_lines
        self.assertLessEqual(lines, 2 * LOG_BURST, f"{lines} lines for {n} failed handshakes")
        self.assertGreaterEqual(sum(l["suppressed"] for l in summary) + lines, n)


# ---------------------------------------------------------------------------------------
# Request-level edge: slow body, HEAD, Host

class RequestEdgeTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.daemon = start_daemon("request-edge", {"body_timeout_ms": BODY_TIMEOUT_MS})
        cls.client = Client(_demo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        assert rc == 0, f"exit {rc}; log:\n{cls.daemon.log_tail()}"

    def tls(self):
        s = tls_context().wrap_socket(socket.create_connection(("127.0.0.1", _demo.port), timeout=10),
                                      server_hostname="127.0.0.1")
        return s

    def signed_encrypt(self):
        """A signed Encrypt request, split into (head bytes, body bytes)."""
        path = _demo.uri_path + "/keys/demo-aes-key/encrypt"
        body = self.client.encode(self.client.encrypt_body(b"slow body test"))
        headers = self.client.sign(path, body)
        headers.setdefault("Content-Length", str(len(body)))
        head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return (head + "\r\n").encode(), body

    def test_body_late_but_within_body_timeout_is_served(self):
        # The request deadline (200 ms) starts when the request is complete, not when
        # its head arrived: a body 300 ms behind its head is no HSM timeout.
        head, body = self.signed_encrypt()
        with self.tls() as s:
            s.sendall(head)
            time.sleep(0.3)
            s.sendall(body)
            status, h, rest, length = read_response(s)
        self.assertIn(status, (200, 408), h)
        self.assertEqual(status, 200, f"{h}\n{rest[:300]!r}")

    def test_body_past_body_timeout_is_the_clients_fault(self):
        head, body = self.signed_encrypt()
        with self.tls() as s:
            s.sendall(head)
            time.sleep(BODY_TIMEOUT_MS / 1000 + 0.5)
            with contextlib.suppress(OSError):
                s.sendall(body)
            data = b""
            with contextlib.suppress(OSError):
                s.settimeout(5)
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
        # Closed, or 408 with Connection: close; never 503.
        if data:
            self.assertRegex(data, rb"^HTTP/1\.1 408 ")
            self.assertRegex(data, re.compile(rb"^connection: close", re.I | re.M))
        deadline = time.monotonic() + 5
        slow = []
        while time.monotonic() < deadline and not slow:
            slow = [l for l in self.daemon.log_lines() if l.get("event") == "client_slow"]
            time.sleep(0.1)
        self.assertTrue(slow, "no client_slow log line")
        self.assertEqual(slow[-1].get("level"), "warning", slow[-1])
        self.assertRegex(slow[-1].get("reason", ""), "client was slow")
        bad = [l for l in self.daemon.log_lines()
               if l.get("event") == "access" and l.get("outcome") == "DependencyTimeoutException"]
        self.assertEqual(bad, [], "a slow client was reported as an HSM timeout")

    def test_client_caused_501_is_a_warning(self):
        r = self.client.post("/keys/demo-aes-key/encrypt",
                             self.client.encrypt_body(b"x" * 16, algorithm="AES_CBC"))
        self.assertEqual(r.status, 501, repr(r))
        deadline = time.monotonic() + 5
        access = []
        while time.monotonic() < deadline and not access:
            access = [l for l in self.daemon.log_lines()
                      if l.get("event") == "access" and l.get("status") == 501]
            time.sleep(0.1)
        self.assertTrue(access, "no access line for the 501")
        self.assertEqual({l.get("level") for l in access}, {"warning"})

    def test_head_ping_has_no_body(self):
        with self.tls() as s:
            s.sendall(b"HEAD /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, head, rest, length = read_response(s)
            self.assertEqual(status, 200, head)
            self.assertGreater(length, 0, "HEAD keeps the GET answer's Content-Length")
            # Nothing follows the head.
            s.settimeout(0.3)
            with contextlib.suppress(socket.timeout):
                rest += s.recv(65536)
            self.assertEqual(rest, b"", "bytes after the HEAD response's head")
            s.sendall(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
            status, head, rest, length = read_response(s)
            self.assertEqual(status, 200, head)
            while len(rest) < length:
                rest += s.recv(65536)
            self.assertEqual(rest, b'{"status":"ok"}')

    def raw(self, request):
        with self.tls() as s:
            s.sendall(request)
            status, head, rest, length = read_response(s)
            while len(rest) < length:
                rest += s.recv(65536)
        return status, head, rest

    def test_no_host_is_400(self):
        status, head, body = self.raw(b"GET /ping HTTP/1.1\r\n\r\n")
        self.assertEqual(status, 400, head)
        self.assertIn(b"ValidationException", body)
        self.assertIn(b"Host", body)
        self.assertRegex(head, re.compile(r"^connection: close", re.I | re.M))

    def test_two_hosts_is_400(self):
        status, head, body = self.raw(b"GET /ping HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertEqual(status, 400, head)
        self.assertIn(b"ValidationException", body)
        self.assertIn(b"Host", body)

    def test_one_host_is_fine(self):
        status, head, body = self.raw(b"GET /ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        self.assertEqual(status, 200, head)


if __name__ == "__main__":
    unittest.main()
