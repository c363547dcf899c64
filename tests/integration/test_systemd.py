"""systemd integration: the unit, sysusers and tmpfiles files pass systemd's own
checkers, and the real daemon speaks the sd_notify protocol the unit relies on
(Type=notify, ExecReload=kill -HUP, WatchdogSec=, RestartPreventExitStatus=78).

The notify tests own the NOTIFY_SOCKET: an AF_UNIX datagram socket in a temporary
directory, exactly what systemd gives a Type=notify service.
"""

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import http.client
import unittest

from harness import REPO, Daemon, Demo, find_binary, find_leaks, free_port

UNIT_DIR = os.path.join(REPO, "packaging", "systemd")
UNIT = os.path.join(UNIT_DIR, "xks-proxy.service")
SYSUSERS = os.path.join(UNIT_DIR, "xks-proxy.sysusers")
TMPFILES = os.path.join(UNIT_DIR, "xks-proxy.tmpfiles")
EXIT_CONFIG = 78


def need(tool):
    path = shutil.which(tool)
    if path is None:
        raise unittest.SkipTest(f"{tool} not installed (scripts/install-deps.sh test installs systemd)")
    return path


def unit_settings(text):
    """[(section, key, value)] of a unit file, in order."""
    out, section = [], None
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


class UnitFileTests(unittest.TestCase):
    """Static checks with systemd's tools; no systemd needs to be running."""

    @classmethod
    def setUpClass(cls):
        with open(UNIT) as f:
            cls.text = f.read()
        cls.settings = unit_settings(cls.text)
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-systemd-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def values(self, key, section="Service"):
        return [v for s, k, v in self.settings if s == section and k == key]

    def test_systemd_analyze_verify(self):
        """The unit as shipped, but with ExecStart at the built binary (verify checks
        that the executable exists, and /usr/bin/xks-proxy is not installed here)."""
        analyze = need("systemd-analyze")
        binary = os.path.abspath(find_binary("xks-proxy", "XKS_PROXY_BIN"))
        self.assertIn("ExecStart=/usr/bin/xks-proxy ", self.text)
        unit = os.path.join(self.tmp, "xks-proxy.service")
        with open(unit, "w") as f:
            f.write(self.text.replace("ExecStart=/usr/bin/xks-proxy ", f"ExecStart={binary} ", 1))
        res = subprocess.run([analyze, "verify", unit], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60)
        # Clean means no output at all: verify prints warnings but still exits 0.
        self.assertEqual((res.returncode, res.stdout.strip()), (0, ""), "systemd-analyze verify")

    def test_required_settings(self):
        expected = {
            "Type": "notify", "NotifyAccess": "main",
            "ExecStart": "/usr/bin/xks-proxy --config /etc/xks-proxy/xks-proxy.yaml",
            "ExecReload": "/bin/kill -HUP $MAINPID", "WatchdogSec": "30",
            "Restart": "on-failure", "RestartPreventExitStatus": str(EXIT_CONFIG),
            "User": "xks-proxy", "DynamicUser": "no",
            "AmbientCapabilities": "CAP_NET_BIND_SERVICE",
            "CapabilityBoundingSet": "CAP_NET_BIND_SERVICE",
            "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
            "PrivateTmp": "yes", "PrivateDevices": "yes",
            "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
            "SystemCallArchitectures": "native", "LockPersonality": "yes",
            "MemoryDenyWriteExecute": "yes", "LimitCORE": "0", "LimitNOFILE": "65536",
            "ConfigurationDirectory": "xks-proxy",
            "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
            "ProtectKernelLogs": "yes",
        }
        for key, value in expected.items():
            with self.subTest(key=key):
                self.assertIn(value, self.values(key))
        self.assertIn("@system-service", self.values("SystemCallFilter"))
        self.assertIn("-/var/lib/softhsm", self.values("ReadWritePaths"))
        # The drain (10 s) must fit in the stop timeout.
        self.assertGreaterEqual(int(self.values("TimeoutStopSec")[0]), 15)

    def test_sysusers_and_tmpfiles_apply(self):
        """systemd-sysusers creates the user in a scratch root, and systemd-tmpfiles
        then creates /etc/xks-proxy (root:xks-proxy 0750) and its secrets directory."""
        sysusers, tmpfiles = need("systemd-sysusers"), need("systemd-tmpfiles")
        root = os.path.join(self.tmp, "root")
        for sub, src in (("usr/lib/sysusers.d", SYSUSERS), ("usr/lib/tmpfiles.d", TMPFILES)):
            os.makedirs(os.path.join(root, sub))
            shutil.copy(src, os.path.join(root, sub, "xks-proxy.conf"))
        os.makedirs(os.path.join(root, "etc"))
        for cmd in ([sysusers, f"--root={root}"], [tmpfiles, "--create", f"--root={root}"]):
            res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                 timeout=60)
            self.assertEqual(res.returncode, 0, f"{' '.join(cmd)}:\n{res.stdout}")
        with open(os.path.join(root, "etc", "passwd")) as f:
            entry = [line.split(":") for line in f if line.startswith("xks-proxy:")]
        self.assertEqual(len(entry), 1)
        uid, gid, shell = int(entry[0][2]), int(entry[0][3]), entry[0][6].strip()
        self.assertLess(uid, 1000, "not a system user")
        self.assertTrue(shell.endswith("nologin"), shell)
        st = os.stat(os.path.join(root, "etc", "xks-proxy"))
        self.assertEqual((oct(st.st_mode & 0o7777), st.st_uid, st.st_gid), (oct(0o750), 0, gid))
        st = os.stat(os.path.join(root, "etc", "xks-proxy", "secrets"))
        self.assertEqual((oct(st.st_mode & 0o7777), st.st_uid, st.st_gid), (oct(0o700), uid, gid))


class NotifySocket:
    """The service manager's end of NOTIFY_SOCKET: collects every datagram."""

    def __init__(self, directory):
        self.path = os.path.join(directory, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []  # (monotonic time, {key: value})
        self.cond = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.closed:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self.cond:
                self.messages.append((time.monotonic(), fields))
                self.cond.notify_all()

    def wait_for(self, key, value="1", after=0, timeout=60, daemon=None):
        """Index of the first message at or after `after` that sets key=value; fails
        early if `daemon` exits first."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(after, len(self.messages)):
                    if self.messages[i][1].get(key) == value:
                        return i
                if daemon is not None and daemon.proc.poll() is not None:
                    raise AssertionError(f"xks-proxy exited ({daemon.proc.returncode}) before "
                                         f"{key}={value}; log:\n{daemon.log_tail()}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no {key}={value} within {timeout}s; got {self.states()}"
                                         + (f"; log:\n{daemon.log_tail()}" if daemon else ""))
                self.cond.wait(min(left, 0.2))

    def states(self):
        """The lifecycle messages in order, e.g. ['READY=1', 'RELOADING=1', ...]."""
        with self.cond:
            return [f"{k}={v}" for _, m in self.messages for k, v in m.items()
                    if k in ("READY", "RELOADING", "STOPPING")]

    def close(self):
        self.closed = True
        self.thread.join(5)
        self.sock.close()


class NotifyTests(unittest.TestCase):
    """The real daemon under a NOTIFY_SOCKET the test owns."""

    @classmethod
    def setUpClass(cls):
        cls.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-notify-")
        cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        with open(cls.demo.config) as f:
            cls.good_config = f.read()

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        self.notify = NotifySocket(tempfile.mkdtemp(dir=self.tmp))
        self.daemon = None

    def tearDown(self):
        if self.daemon is not None and self.daemon.proc is not None and self.daemon.proc.poll() is None:
            self.daemon.proc.kill()
            self.daemon.proc.wait()
        self.notify.close()
        with open(self.demo.config, "w") as f:
            f.write(self.good_config)

    def start(self, log_name, **env):
        env["NOTIFY_SOCKET"] = self.notify.path
        self.daemon = Daemon(self.binary, self.demo, log_name=log_name, extra_env=env).start()
        return self.daemon

    def ping(self):
        """One GET of the ping path, no retry: the listener must already be up."""
        ctx = ssl.create_default_context(cafile=self.demo.ca)
        conn = http.client.HTTPSConnection("127.0.0.1", self.demo.port, context=ctx, timeout=5)
        try:
            conn.request("GET", "/ping")
            return conn.getresponse().status
        finally:
            conn.close()

    def stop(self):
        """SIGTERM: STOPPING=1, then exit 0, and a clean log."""
        d = self.daemon
        mark = len(self.notify.messages)
        d.proc.send_signal(signal.SIGTERM)
        self.notify.wait_for("STOPPING", after=mark, timeout=30)
        rc = d.stop()
        self.assertEqual(rc, 0, f"exit status after SIGTERM; log:\n{d.log_tail()}")
        self.assertEqual(find_leaks(d.read_log(), [], self.demo.secrets()), [])

    def test_ready_reload_stopping(self):
        d = self.start("notify.log")
        ready = self.notify.wait_for("READY", daemon=d)
        # READY=1 is sent only once the listener accepts.
        self.assertEqual(self.ping(), 200, "READY=1 before the listener was up")

        # SIGHUP: RELOADING=1, then READY=1 again, still serving.
        d.proc.send_signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING", after=ready + 1, timeout=30, daemon=d)
        self.notify.wait_for("READY", after=reloading + 1, timeout=30, daemon=d)
        self.assertEqual(self.ping(), 200)

        # A broken file is refused; the daemon still reports READY=1 and serves.
        with open(self.demo.config, "w") as f:
            f.write("server: [this is not a valid configuration\n")
        mark = len(self.notify.messages)
        d.proc.send_signal(signal.SIGHUP)
        reloading = self.notify.wait_for("RELOADING", after=mark, timeout=30, daemon=d)
        self.notify.wait_for("READY", after=reloading + 1, timeout=30, daemon=d)
        self.assertEqual(self.ping(), 200)
        self.assertIn("reload_refused", d.read_log())

        self.stop()
        self.assertEqual(self.notify.states(),
                         ["READY=1", "RELOADING=1", "READY=1", "RELOADING=1", "READY=1", "STOPPING=1"])

    def test_watchdog_pings(self):
        """With WATCHDOG_USEC set (WatchdogSec=), WATCHDOG=1 arrives at least every
        WATCHDOG_USEC/2 as sd_watchdog_enabled(3) recommends."""
        sources = subprocess.run(["grep", "-rlE", "sd_watchdog_enabled|WATCHDOG=1",
                                  os.path.join(REPO, "src")], stdout=subprocess.PIPE, text=True)
        if not sources.stdout.strip():
            self.skipTest("the daemon does not send watchdog pings yet (no sd_watchdog_enabled in src/)")
        period = 2.0
        d = self.start("watchdog.log", WATCHDOG_USEC=str(int(period * 1e6)))
        ready = self.notify.wait_for("READY", daemon=d)
        first = self.notify.wait_for("WATCHDOG", after=0, timeout=period)
        second = self.notify.wait_for("WATCHDOG", after=first + 1, timeout=period)
        gap = self.notify.messages[second][0] - self.notify.messages[first][0]
        self.assertLess(gap, period, "watchdog pings further apart than WATCHDOG_USEC")
        self.assertGreaterEqual(second, ready)
        self.stop()

    def test_config_error_exits_78_without_ready(self):
        """A wrong HSM PIN is a configuration error: exit 78, which the unit's
        RestartPreventExitStatus= keeps from being retried into an HSM lockout."""
        wrong = os.path.join(self.demo.dir, "secrets", "wrong.pin")
        fd = os.open(wrong, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("not-the-pin-0000\n")
        self.assertIn("secrets/hsm.pin", self.good_config)
        config = os.path.join(self.demo.dir, "wrong-pin.yaml")
        with open(config, "w") as f:
            f.write(self.good_config.replace("secrets/hsm.pin", "secrets/wrong.pin"))
        d = Daemon(self.binary, self.demo, config=config, log_name="wrong-pin.log",
                   extra_env={"NOTIFY_SOCKET": self.notify.path})
        rc, out = d.run_to_exit(timeout=60)
        self.assertEqual(rc, EXIT_CONFIG, self.demo.redact(out[-1500:]))
        time.sleep(0.2)  # let the reader thread drain the socket
        self.assertNotIn("READY=1", self.notify.states())
        self.assertEqual(find_leaks(out, [], self.demo.secrets() + ["not-the-pin-0000"]), [])


if __name__ == "__main__":
    unittest.main()
