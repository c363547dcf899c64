"""SIGTERM drain against the real daemon ("a SIGTERM during load lets in-flight
requests complete").

What src/app/app.cpp does on SIGTERM (Daemon::begin_shutdown / poll_drain): log
`stopping` (with the requests in flight and open connections), close the listener, close
the keep-alive connections that are waiting for a request with nothing received, let the
others finish the request they are receiving or serving (answered with `Connection:
close`), poll every 5 ms until no connection is left or the drain timeout (kDrainTimeout,
10 s, not configurable) has passed (`drain_timeout`), stop the I/O threads, stop the HSM
worker pool, log `stopped`, exit 0. A request is never in flight for longer than
server.request_deadline_ms (at most 250 ms): an HSM call that overruns it is answered 503
DependencyTimeoutException and left to finish on its worker; one still running 2 s after
the last connection closed (kHsmStopGrace) is abandoned: `hsm_calls_abandoned`, exit 0
without C_Finalize.

- in flight: eight Encrypts held inside C_Encrypt by the fault-injecting PKCS#11 module
  (tests/fault_pkcs11, `hang`) when SIGTERM arrives; the listener closes, then the HSM is
  released: all eight answer 200 with a ciphertext that another daemon decrypts, no new
  connection is served, exit 0 without `drain_timeout`;
- load: client threads doing signed Encrypts on keep-alive connections against plain
  SoftHSM2, SIGTERM in the middle: every request fully sent before the signal gets a
  complete 200, later ones only fail to connect or find the
  connection closed, none is truncated or 5xx, every 200 the daemon logged reached its
  client, exit 0;
- a request still being received at SIGTERM (head and most of the body sent) is answered
  too, completely, with `Connection: close`;
- stuck HSM call: C_Encrypt never returns; the client gets 503 DependencyTimeoutException
  at the deadline, and the daemon still exits within the drain timeout + 2 s.

Measured figures are printed (prefix "FIGURE").
"""

import concurrent.futures
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import tempfile
import threading
import time
import unittest

import yaml

import harness
from harness import (Client, Daemon, Demo, Faults, Sealed, fault_module, figure,
                     find_binary, free_port, unb64)

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
DRAIN_TIMEOUT_S = 10   # kDrainTimeout in src/app/app.cpp
EXIT_MARGIN_S = 2.0    # beyond the drain timeout: a sanitized build's teardown, a busy box
DEADLINE_MS = 250      # server.request_deadline_ms here: the largest the config accepts
IN_FLIGHT = 8          # concurrent Encrypts held in the HSM; == hsm.sessions below
# A connection closed unanswered for a request sent less than this many ms before SIGTERM
# is tolerated. 0: none is (the drain closes only connections with nothing received).
ARRIVAL_RACE_MS = 0
LOAD_THREADS = 4
LOAD_SECONDS = 1.5
# Failures a client may see for a request sent after SIGTERM: the listener is closed
# (refused), or its keep-alive connection was closed before an answer.
CLOSED = (ConnectionRefusedError, ConnectionResetError, BrokenPipeError,
          http.client.RemoteDisconnected, ssl.SSLEOFError, ssl.SSLZeroReturnError)


class Env:
    """One provisioned demo for the module; each test starts its own daemons on it."""

    def __init__(self):
        self.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        self.module = fault_module()
        self.tmp = tempfile.mkdtemp(prefix="xks-it-lifecycle-")
        self.demo = Demo(os.path.join(self.tmp, "demo"), free_port())
        self.faults = Faults(self.demo.dir)
        self.demo.env.update(XKS_FAULT_TARGET=SOFTHSM, XKS_FAULT_CONTROL=self.faults.control,
                             XKS_FAULT_STATS=self.faults.stats)
        with open(self.demo.config) as f:
            self.base = yaml.safe_load(f)
        self.failed = False

    def config(self, name, faulty, sessions=4):
        """The demo config (metrics included) with the fault module or plain SoftHSM2, the
        largest request deadline, and no background health check during a test (it would
        run C_Encrypt on the health key and could be caught by a `hang`)."""
        cfg = json.loads(json.dumps(self.base))
        cfg["hsm"]["module"] = self.module if faulty else SOFTHSM
        cfg["hsm"]["sessions"] = sessions
        cfg["server"]["request_deadline_ms"] = DEADLINE_MS
        cfg["health"] = {"interval_ms": 50000, "max_age_ms": 60000}
        path = os.path.join(self.demo.dir, f"{name}.json")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(cfg, f, indent=1)
        return path

    def finish(self):
        if self.failed or os.environ.get("XKS_IT_KEEP"):
            print(f"\nkept {self.tmp}")
            return
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


class LifecycleTests(unittest.TestCase):
    maxDiff = 4000

    def setUp(self):
        if _env is None:
            self.skipTest("no environment")
        self.env = _env
        self.demo = _env.demo
        self.faults = _env.faults
        self.faults.set()
        self.daemons = []

    def tearDown(self):
        self.faults.set()  # never leave an HSM call hung
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.proc.kill()
                d.proc.wait()
            if d.proc is not None and not d.log.closed:
                d.log.close()
        outcome = getattr(self, "_outcome", None)
        if outcome is not None and not getattr(outcome, "success", True):
            self.env.failed = True

    # -- helpers ------------------------------------------------------------------------
    def start(self, name, faulty, sessions=4):
        d = Daemon(self.env.binary, self.demo, config=self.env.config(name, faulty, sessions),
                   log_name=f"{name}.log")
        self.daemons.append(d)
        d.start()
        d.wait_ready()
        return d

    def prepare(self, client):
        """A botocore-signed Encrypt of a fresh plaintext: (plaintext, path, body, headers)."""
        plaintext = client.new_plaintext()
        body = json.dumps(client.encrypt_body(plaintext)).encode()
        path = client.path("/keys/demo-aes-key/encrypt")
        return plaintext, path, body, client.sign(path, body)

    def wait_exit(self, d, timeout):
        """(exit code, seconds waited) or (None, timeout)."""
        t0 = time.monotonic()
        try:
            rc = d.proc.wait(timeout)
        except Exception:  # subprocess.TimeoutExpired
            return None, timeout
        return rc, time.monotonic() - t0

    def events(self, d, name):
        return [e for e in d.log_lines() if e.get("event") == name]

    def assert_clean_stop(self, d, in_flight=None):
        """`stopping` (SIGTERM, and how many requests were in flight), `stopped`, no
        `drain_timeout`, no secret or plaintext in the log."""
        stopping = self.events(d, "stopping")
        self.assertEqual(len(stopping), 1, d.log_tail())
        self.assertEqual(stopping[0].get("signal"), "SIGTERM")
        if in_flight is not None:
            self.assertEqual(stopping[0].get("requestsInFlight"), in_flight,
                             "SIGTERM did not find the requests in flight")
        self.assertEqual(len(self.events(d, "stopped")), 1, d.log_tail())
        self.assertEqual(self.events(d, "drain_timeout"), [], d.log_tail())

    def assert_no_leaks(self, d, client):
        self.assertEqual(harness.find_leaks(d.read_log(), client.plaintexts, self.demo.secrets()), [])

    def decrypt_elsewhere(self, sealed):
        """Decrypts every (plaintext, Sealed) with a fresh daemon on plain SoftHSM2: the
        ciphertexts are complete and genuine, not merely well-formed JSON."""
        d = self.start("decrypt-check", faulty=False)
        client = Client(self.demo)
        conn = client.connection()
        try:
            for plaintext, s in sealed:
                r = client.decrypt("demo-aes-key", **s.decrypt_args(), conn=conn)
                self.assertEqual(r.status, 200, repr(r))
                self.assertEqual(unb64(r.json["plaintext"]), plaintext)
        finally:
            conn.close()
            self.assertEqual(d.stop(), 0, d.log_tail())
        self.assert_no_leaks(d, client)

    def refused(self, port):
        """True when a TCP connect to `port` is refused (the listener is closed)."""
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return False
        except ConnectionRefusedError:
            return True

    def wait_refused(self, port, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.refused(port):
                return True
            time.sleep(0.001)
        return False

    # -- (a) requests held in the HSM when SIGTERM arrives ------------------------------
    def test_1_sigterm_lets_in_flight_requests_complete(self):
        # The hold (first request in, SIGTERM, listener closed, HSM released) must fit in
        # the request deadline; on a busy box it may not, and then the attempt proves
        # nothing (503 DependencyTimeoutException by design): try again, at most 3 times.
        for attempt in range(1, 4):
            if self.in_flight_attempt(attempt):
                return
        self.fail("3 attempts were inconclusive: the machine is too busy to hold 8 requests in "
                  f"the HSM and signal the daemon within {DEADLINE_MS} ms")

    def in_flight_attempt(self, attempt):
        d = self.start(f"inflight-{attempt}", faulty=True, sessions=IN_FLIGHT)
        client = Client(self.demo)
        self.assertEqual(client.encrypt("demo-aes-key", client.new_plaintext()).status, 200)
        conns = [client.connection(timeout=30) for _ in range(IN_FLIGHT)]
        for c in conns:
            c.connect()  # TLS handshakes done before the clock starts
        prepared = [self.prepare(client) for _ in range(IN_FLIGHT)]
        base = self.faults.count("C_Encrypt")
        self.faults.set("C_Encrypt hang")
        barrier = threading.Barrier(IN_FLIGHT + 1)
        results = [None] * IN_FLIGHT

        def one(i):
            _, path, body, headers = prepared[i]
            barrier.wait()
            try:
                conns[i].request("POST", path, body=body, headers=headers)
                r = conns[i].getresponse()
                data = r.read()
                results[i] = harness.Response(r.status, data, {k.lower(): v for k, v in r.getheaders()})
            except Exception as e:  # reported below
                results[i] = e

        threads = [threading.Thread(target=one, args=(i,)) for i in range(IN_FLIGHT)]
        for t in threads:
            t.start()
        barrier.wait()
        t0 = time.monotonic()
        all_in = self.faults.wait_count("C_Encrypt", base + IN_FLIGHT, timeout=2)
        t_in = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        t_kill = time.monotonic()
        listener_closed = self.wait_refused(self.demo.port, timeout=2)
        t_closed = time.monotonic()
        # A whole HTTPS request on a new connection, while the eight are still held.
        try:
            late = client.health()
        except Exception as e:
            late = e
        metrics_closed = self.wait_refused(self.demo.metrics_port, timeout=0.5)
        t_release = time.monotonic()
        self.faults.set()
        for t in threads:
            t.join(30)
        rc, waited = self.wait_exit(d, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
        t_exit = time.monotonic()
        for c in conns:
            c.close()
        if rc is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()

        hold_ms = (t_release - t0) * 1000
        figure(f"in flight (attempt {attempt}): {IN_FLIGHT} Encrypts in C_Encrypt "
               f"{(t_in - t0) * 1000:.0f} ms after the start, SIGTERM -> listener closed "
               f"{(t_closed - t_kill) * 1000:.1f} ms, HSM released {hold_ms:.0f} ms after the "
               f"start, exit {(t_exit - t_release) * 1000:.0f} ms after the release (rc {rc})")
        timed_out = [r for r in results if isinstance(r, harness.Response) and r.status == 503
                     and (r.json or {}).get("errorName") == "DependencyTimeoutException"]
        if (not all_in or timed_out) and hold_ms > DEADLINE_MS - 40:
            figure(f"in flight (attempt {attempt}): inconclusive, held {hold_ms:.0f} ms against a "
                   f"{DEADLINE_MS} ms deadline")
            self.assertEqual(rc, 0, f"exit code; log:\n{d.log_tail()}")
            return False
        self.assertTrue(all_in, f"only {self.faults.count('C_Encrypt') - base} of {IN_FLIGHT} "
                                f"Encrypts reached the HSM; results {results}")

        # Every request held across SIGTERM: a complete 200 with a ciphertext, and the
        # connection is not kept alive.
        sealed = []
        for i, r in enumerate(results):
            with self.subTest(request=i):
                self.assertIsInstance(r, harness.Response, f"request {i} failed: {r!r}")
                self.assertEqual(r.status, 200, f"request {i}: {r!r}")
                self.assertEqual(r.headers.get("connection", "").lower(), "close",
                                 "a response during the drain must close its connection")
                sealed.append((prepared[i][0], Sealed(r.json)))
        # No new connection after SIGTERM, on either listener.
        self.assertTrue(listener_closed, "the listener still accepted 2 s after SIGTERM")
        self.assertIsInstance(late, CLOSED, f"a new connection after SIGTERM was served: {late!r}")
        self.assertTrue(metrics_closed, "the metrics listener still accepted after SIGTERM")
        # Exit 0, promptly once nothing is in flight, well inside the drain timeout.
        self.assertEqual(rc, 0, f"exit code (None: still running {waited:.0f} s after SIGTERM); "
                                f"log:\n{d.log_tail()}")
        self.assertLess(t_exit - t_kill, DRAIN_TIMEOUT_S, "the drain waited for nothing")
        self.assert_clean_stop(d, in_flight=IN_FLIGHT)
        ok = [e for e in self.events(d, "access") if e.get("api") == "Encrypt" and e.get("status") == 200]
        self.assertEqual(len(ok), IN_FLIGHT + 1, "access lines of the Encrypts")
        self.assert_no_leaks(d, client)
        self.decrypt_elsewhere(sealed)
        return True

    # -- (b) continuous load ------------------------------------------------------------
    def test_2_sigterm_under_continuous_load(self):
        d = self.start("load", faulty=False)
        client = Client(self.demo)
        stop = threading.Event()
        lock = threading.Lock()
        records = []   # dicts: start, sent (None if the send failed), response/error

        def worker():
            conn = client.connection(timeout=30)
            while not stop.is_set():
                plaintext, path, body, headers = self.prepare(client)
                rec = {"start": time.monotonic(), "sent": None, "plaintext": plaintext}
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    rec["sent"] = time.monotonic()
                    r = conn.getresponse()
                    data = r.read()
                    rec["response"] = harness.Response(r.status, data,
                                                       {k.lower(): v for k, v in r.getheaders()})
                    if rec["response"].headers.get("connection", "").lower() == "close":
                        conn.close()  # the next request opens a new connection
                except Exception as e:
                    rec["error"] = e
                    conn.close()
                rec["end"] = time.monotonic()
                with lock:
                    records.append(rec)
                if "error" in rec:
                    return  # after SIGTERM there is nobody left to talk to
            conn.close()

        with concurrent.futures.ThreadPoolExecutor(LOAD_THREADS) as pool:
            futures = [pool.submit(worker) for _ in range(LOAD_THREADS)]
            time.sleep(LOAD_SECONDS)
            t_kill = time.monotonic()
            d.proc.send_signal(signal.SIGTERM)
            rc, waited = self.wait_exit(d, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
            t_exit = time.monotonic()
            time.sleep(0.3)  # the workers see the closed listener
            stop.set()
            for f in futures:
                f.result(timeout=60)
        if rc is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()

        before = [r for r in records if r["sent"] is not None and r["sent"] < t_kill]
        after = [r for r in records if r["sent"] is None or r["sent"] >= t_kill]
        lost = []       # fully sent before SIGTERM, no complete 200
        raced = []      # sent just before SIGTERM, connection closed unanswered (see above)
        bad_after = []  # after SIGTERM: anything but a complete 200 or a closed connection
        for r in before:
            resp = r.get("response")
            if resp is None or resp.status != 200 or not isinstance(resp.json, dict) \
                    or "ciphertext" not in resp.json:
                what = resp if resp is not None else r.get("error")
                ms = (t_kill - r["sent"]) * 1000
                text = f"sent {ms:.1f} ms before SIGTERM: {what!r}"
                if resp is None and isinstance(what, CLOSED) and ms < ARRIVAL_RACE_MS:
                    raced.append(text)
                else:
                    lost.append(text)
        for r in after:
            resp = r.get("response")
            if resp is not None:
                if resp.status != 200:
                    bad_after.append(repr(resp))
            elif not isinstance(r.get("error"), CLOSED):
                bad_after.append(repr(r.get("error")))
        ok_after = sum(1 for r in after if r.get("response") is not None)
        closed_after = sorted({type(r["error"]).__name__ for r in after if "error" in r})
        figure(f"load: {len(records)} Encrypts on {LOAD_THREADS} keep-alive connections, "
               f"{len(before)} sent before SIGTERM ({len(lost)} without a complete 200, "
               f"{len(raced)} closed unanswered within {ARRIVAL_RACE_MS} ms of it {raced}), "
               f"{len(after)} after ({ok_after} still answered 200, the rest {closed_after}); "
               f"exit {waited:.2f} s after SIGTERM (rc {rc})")

        self.assertGreater(len(before), 20, "too little load before SIGTERM to mean anything")
        self.assertEqual(lost, [], "requests fully sent before SIGTERM that did not get a complete "
                                   f"200 (daemon log {d.log_path})")
        self.assertEqual(bad_after, [], "requests after SIGTERM must be answered 200 or find the "
                                        "connection refused/closed")
        self.assertEqual(rc, 0, f"exit code (None: still running {waited:.0f} s after SIGTERM); "
                                f"log:\n{d.log_tail()}")
        self.assertLess(t_exit - t_kill, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
        self.assert_clean_stop(d)
        # Every 200 the daemon answered (logged) reached its client: none was lost in the
        # window between the handler's answer and the write.
        logged = sum(1 for e in self.events(d, "access")
                     if e.get("api") == "Encrypt" and e.get("status") == 200)
        received = sum(1 for r in records if r.get("response") is not None
                       and r["response"].status == 200)
        self.assertEqual(logged, received, "200s logged by the daemon vs. received by clients")
        self.assert_no_leaks(d, client)
        # The answers closest to the signal (and any after it) decrypt.
        answered = [r for r in records if r.get("response") is not None]
        answered.sort(key=lambda r: abs(r["sent"] - t_kill))
        self.decrypt_elsewhere([(r["plaintext"], Sealed(r["response"].json)) for r in answered[:16]])

    def test_2b_request_being_received_at_sigterm_is_answered(self):
        """Head and most of the body are sent, SIGTERM, the listener closes, then the last
        bytes: the request was under way before the signal and must get a complete answer."""
        d = self.start("receiving", faulty=False)
        client = Client(self.demo)
        plaintext, path, body, headers = self.prepare(client)
        conn = client.connection(timeout=30)
        try:
            conn.connect()
        except OSError as e:
            self.skipTest(f"setup: {e!r}")
        conn.putrequest("POST", path, skip_host=True, skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(body)))
        conn.endheaders()
        conn.send(body[:-8])
        time.sleep(0.3)  # the daemon has read the head and is waiting for the body
        d.proc.send_signal(signal.SIGTERM)
        t_kill = time.monotonic()
        if not self.wait_refused(self.demo.port, timeout=5):
            self.skipTest("setup: the listener did not close after SIGTERM")
        error = resp = None
        try:
            conn.send(body[-8:])
            r = conn.getresponse()
            resp = harness.Response(r.status, r.read(), {k.lower(): v for k, v in r.getheaders()})
        except Exception as e:
            error = e
        finally:
            conn.close()
        rc, waited = self.wait_exit(d, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
        d.log.close()
        what = resp if resp is not None else error
        figure(f"request under way at SIGTERM: {what!r}; exit "
               f"{time.monotonic() - t_kill:.2f} s after SIGTERM (rc {rc})")
        self.assertEqual(rc, 0, d.log_tail())
        self.assertIsNone(error, "the connection was closed under a request being received")
        self.assertEqual(resp.headers.get("connection", "").lower(), "close")
        # The request deadline runs from the arrival of the head, and this test held the
        # body back for longer than that: a complete 503 DependencyTimeoutException is the
        # right answer then; a 200 must carry a ciphertext that decrypts.
        if resp.status == 503:
            self.assertEqual((resp.json or {}).get("errorName"), "DependencyTimeoutException")
        else:
            self.assertEqual(resp.status, 200, repr(resp))
            self.assertIn("ciphertext", resp.json or {})
            self.decrypt_elsewhere([(plaintext, Sealed(resp.json))])

    # -- (c) an HSM call that outlives the drain timeout --------------------------------
    # One run of the scenario, two verdicts: what the client sees (guaranteed by the
    # request deadline) and whether the process exits in time.
    _stuck = None

    def stuck_scenario(self):
        """C_Encrypt hangs "forever" (until the control file changes); one Encrypt is in it
        when SIGTERM arrives. Waits drain timeout + margin for the exit, then releases the
        HSM call and waits again. Runs once per module; returns a dict of observations."""
        if LifecycleTests._stuck is not None:
            return LifecycleTests._stuck
        d = self.start("stuck", faulty=True, sessions=2)
        client = Client(self.demo)
        self.assertEqual(client.encrypt("demo-aes-key", client.new_plaintext()).status, 200)
        conn = client.connection(timeout=30)
        conn.connect()
        _, path, body, headers = self.prepare(client)
        base = self.faults.count("C_Encrypt")
        self.faults.set("C_Encrypt hang")
        out = {"daemon": d, "client": client}

        def one():
            t = time.monotonic()
            try:
                conn.request("POST", path, body=body, headers=headers)
                r = conn.getresponse()
                out["response"] = harness.Response(r.status, r.read(),
                                                   {k.lower(): v for k, v in r.getheaders()})
            except Exception as e:
                out["error"] = e
            out["ms"] = (time.monotonic() - t) * 1000

        th = threading.Thread(target=one)
        th.start()
        in_hsm = self.faults.wait_count("C_Encrypt", base + 1, timeout=2)
        d.proc.send_signal(signal.SIGTERM)
        t_kill = time.monotonic()
        th.join(10)
        rc, waited = self.wait_exit(d, DRAIN_TIMEOUT_S + EXIT_MARGIN_S)
        threads_left = []
        if rc is None:
            # Still running with the HSM call stuck: which threads are left?
            task_dir = f"/proc/{d.proc.pid}/task"
            for tid in sorted(os.listdir(task_dir)):
                try:
                    with open(os.path.join(task_dir, tid, "comm")) as f:
                        threads_left.append(f.read().strip())
                except OSError:
                    pass
        self.faults.set()  # the HSM call returns
        rc_late, waited_late = (rc, 0.0) if rc is not None else self.wait_exit(d, 30)
        conn.close()
        if rc_late is None:
            d.proc.kill()
            d.proc.wait()
        d.log.close()
        out.update(in_hsm=in_hsm, rc=rc, waited=waited, threads_left=threads_left,
                   rc_late=rc_late, waited_late=waited_late)
        figure(f"stuck HSM call: client answered in {out.get('ms', float('nan')):.0f} ms with "
               f"{out.get('response', out.get('error'))!r}; "
               + (f"exit {waited:.2f} s after SIGTERM (rc {rc})" if rc is not None else
                  f"still running {time.monotonic() - t_kill:.1f} s after SIGTERM (threads "
                  f"{threads_left}); exit {waited_late:.2f} s after the HSM call was released "
                  f"(rc {rc_late})"))
        LifecycleTests._stuck = out
        return out

    def test_3_stuck_hsm_call_client_gets_503_at_the_deadline(self):
        """The request in the stuck call is answered 503 DependencyTimeoutException at
        server.request_deadline_ms (complete, Connection: close); the drain then has nothing
        in flight, so no drain_timeout; the process exits 0 once it exits."""
        out = self.stuck_scenario()
        self.assertTrue(out["in_hsm"], "the Encrypt did not reach the HSM")
        r = out.get("response")
        self.assertIsNotNone(r, f"no answer: {out.get('error')!r}")
        self.assertEqual((r.status, (r.json or {}).get("errorName")), (503, "DependencyTimeoutException"))
        self.assertEqual(r.headers.get("connection", "").lower(), "close")
        self.assertLess(out["ms"], DEADLINE_MS + 500, "the answer came long after the deadline")
        d = out["daemon"]
        self.assertEqual(out["rc_late"], 0, d.log_tail())
        stopping = self.events(d, "stopping")
        self.assertEqual([e.get("requestsInFlight") for e in stopping], [1], d.log_tail())
        # The call never returned: the process left without C_Finalize and said so.
        self.assertEqual(len(self.events(d, "hsm_calls_abandoned")), 1, d.log_tail())
        self.assertEqual(self.events(d, "stopped"), [], d.log_tail())
        self.assertEqual(self.events(d, "drain_timeout"), [], d.log_tail())
        self.assert_no_leaks(d, out["client"])

    # After the drain the HSM workers get a short grace (kHsmStopGrace, 2 s); a call
    # stuck beyond it is abandoned and the process exits without C_Finalize.
    def test_4_stuck_hsm_call_does_not_hold_the_exit(self):
        """The process exits within the drain timeout + 2 s although the HSM call never
        returns."""
        try:
            out = self.stuck_scenario()
        except Exception as e:  # not the failure this test expects
            self.skipTest(f"the scenario itself failed (see test_3): {e!r}")
        if not out["in_hsm"] or "response" not in out:
            self.skipTest("the scenario did not hold an Encrypt in the HSM (see test_3)")
        self.assertIsNotNone(out["rc"], f"xks-proxy still running {DRAIN_TIMEOUT_S + EXIT_MARGIN_S:.0f} s "
                                        f"after SIGTERM while an HSM call was stuck (threads "
                                        f"{out['threads_left']}); it exited {out['waited_late']:.2f} s "
                                        f"after the call returned (rc {out['rc_late']})")
        self.assertEqual(out["rc"], 0)

if __name__ == "__main__":
    unittest.main()
