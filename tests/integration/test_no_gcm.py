"""A token without CKM_AES_GCM gets a clear answer: opencryptoki's soft token (Debian's
opencryptoki: the pkcsslotd daemon, its software token in slot 3, whose mechanism list has
no AES-GCM). The daemon refuses to start with a message that names the token, CKM_AES_GCM
and a fix, and `xksctl doctor` exits 1 with a FAIL line naming CKM_AES_GCM.

opencryptoki's paths are compiled in (/etc/opencryptoki, /var/lib/opencryptoki,
/run/pkcsslotd.socket, /run/lock/opencryptoki, SysV shared memory). So pkcsslotd, pkcsconf,
the daemon and xksctl run in a private mount and IPC namespace (unshare) in which those
paths are bind mounts of folders in a temporary directory: the system's opencryptoki
state is neither read nor written, and the token goes away with the directory. This needs
root (CAP_SYS_ADMIN), as CI has.
"""

import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

from harness import Daemon, Demo, find_binary, free_port

OCK_MODULE = "/usr/lib/x86_64-linux-gnu/pkcs11/libopencryptoki.so"
PKCSSLOTD = "/usr/sbin/pkcsslotd"
PKCSCONF = "/usr/sbin/pkcsconf"
SLOT = "3"  # the software token (libpkcs11_sw.so) in opencryptoki's default layout
TOKEN_LABEL = "xks-nogcm"
READY_TIMEOUT = 30
EXIT_TIMEOUT = 20  # a refusal takes well under a second; a daemon that started runs on

# Runs inside `unshare --mount --ipc`: $1 the private root, $2 the token label; the PINs
# come in the environment (pkcsconf itself only takes them as arguments or from a tty).
NAMESPACE_SCRIPT = r"""
set -euo pipefail
root=$1 label=$2
mkdir -p "$root/etc" "$root/lib/swtok/TOK_OBJ" "$root/run/lock/opencryptoki/swtok" "$root/shm"
printf 'version opencryptoki-3.8\nslot 3\n{\nstdll = libpkcs11_sw.so\n}\n' >"$root/etc/opencryptoki.conf"
chgrp -R pkcs11 "$root/etc" "$root/lib" "$root/run"
chmod -R u+rwX,g+rwX,o-rwx "$root/lib" "$root/run/lock"
mount --bind "$root/etc" /etc/opencryptoki
mount --bind "$root/lib" /var/lib/opencryptoki
mount --bind "$root/run" /run
mount --bind "$root/shm" /dev/shm

stop_slotd() {
  local pid
  pid=$(cat /run/pkcsslotd.pid 2>/dev/null) || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
}
trap stop_slotd EXIT

/usr/sbin/pkcsslotd
# A new soft token has the SO PIN 87654321; it is replaced before the user PIN is set.
printf '%s\n' "$label" | /usr/sbin/pkcsconf -I -c 3 -S 87654321 >/dev/null
/usr/sbin/pkcsconf -P -c 3 -S 87654321 -n "$OCK_SO_PIN" </dev/null
/usr/sbin/pkcsconf -u -c 3 -S "$OCK_SO_PIN" -n "$OCK_USER_PIN" </dev/null
# pkcsconf exits 0 after a refused call: the token's flags say whether it worked.
flags=$(/usr/sbin/pkcsconf -t -c 3 | grep 'Flags:')
case $flags in
  *TOKEN_INITIALIZED*USER_PIN_INITIALIZED*|*USER_PIN_INITIALIZED*TOKEN_INITIALIZED*) ;;
  *) echo "token setup failed: $flags" >&2; exit 1 ;;
esac
echo READY
read -r _ || true  # until the test closes stdin
"""


def without_leak_check(env):
    """opencryptoki's module leaves allocations that LeakSanitizer reports after the module
    is unloaded, as "<unknown module>", which no suppression by library name matches: the
    runs against it go without leak detection (ASan's other checks stay on)."""
    env = dict(env)
    env["ASAN_OPTIONS"] = ":".join(filter(None, [env.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    return env


class Opencryptoki:
    """pkcsslotd with a soft token of its own, in a private mount + IPC namespace."""

    def __init__(self, root):
        if os.geteuid() != 0:
            raise unittest.SkipTest("needs root: pkcsslotd runs in a private mount namespace")
        for path in (PKCSSLOTD, PKCSCONF, OCK_MODULE):
            if not os.path.exists(path):
                raise unittest.SkipTest(f"{path} missing: install opencryptoki")
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} (util-linux) not installed")
        self.root = root
        # opencryptoki's soft token takes PINs of 4 to 8 characters.
        self.so_pin = secrets.token_hex(4)
        self.user_pin = secrets.token_hex(4)
        self.output = []
        self.ready = threading.Event()
        env = dict(PATH=os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
                   OCK_SO_PIN=self.so_pin, OCK_USER_PIN=self.user_pin)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--ipc", "--propagation", "private",
             "bash", "-c", NAMESPACE_SCRIPT, "ock-namespace", root, TOKEN_LABEL],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, env=env)
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(READY_TIMEOUT) or self.proc.poll() is not None:
            out = self.text()
            self.stop()
            if "unshare failed" in out and "Operation not permitted" in out:
                raise unittest.SkipTest(f"no private mount namespace here: {out.strip()}")
            raise AssertionError(f"pkcsslotd and its token did not come up within "
                                 f"{READY_TIMEOUT}s:\n{out}")

    def _read(self):
        for line in self.proc.stdout:
            self.output.append(line)
            if line.strip() == "READY":
                self.ready.set()
        self.ready.set()  # EOF: the namespace script ended

    def text(self):
        return self.redact("".join(self.output))

    def redact(self, text):
        return text.replace(self.so_pin, "<so-pin>").replace(self.user_pin, "<pin>")

    def wrap(self, args):
        """`args` run inside the namespace."""
        return ["nsenter", f"--target={self.proc.pid}", "--mount", "--ipc", "--", *args]

    def run(self, *args, env=None, timeout=30):
        return subprocess.run(self.wrap(args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, text=True, env=env, timeout=timeout)


    def slotd_pid(self):
        try:
            with open(os.path.join(self.root, "run", "pkcsslotd.pid")) as f:
                pid = int(f.read().strip())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                return pid if b"pkcsslotd" in f.read() else None
        except (OSError, ValueError):
            return None

    def stop(self):
        """Closes the script's stdin (it stops pkcsslotd and exits); kills what is left."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(15)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        pid = self.slotd_pid()
        if pid is not None:
            os.kill(pid, 9)
        deadline = time.monotonic() + 5
        while self.slotd_pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.slotd_pid() is None


class NoGcmToken(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        # Absolute: nsenter does not keep a relative path's meaning.
        cls.binary = os.path.abspath(find_binary("xks-proxy", "XKS_PROXY_BIN"))
        cls.xksctl = os.path.abspath(find_binary("xksctl", "XKSCTL_BIN"))
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-nogcm-")
        cls.ock = None
        try:
            # The demo gives the TLS material and credential; its SoftHSM2 token is unused.
            cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port(), metrics_port=None)
            cls.ock = Opencryptoki(os.path.join(cls.tmp, "ock"))
            cls.demo.pins += [cls.ock.so_pin, cls.ock.user_pin]
            cls.config = cls.write_config()
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        stopped = cls.ock.stop() if cls.ock else True
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if not stopped:
            raise AssertionError("pkcsslotd is still running after the test")

    @classmethod
    def write_config(cls):
        pin = os.path.join(cls.demo.dir, "secrets", "ock.pin")
        fd = os.open(pin, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(cls.ock.user_pin + "\n")
        with open(cls.demo.config) as f:
            text = f.read()
        hsm = re.search(r"^hsm:\n(?:  .*\n)+", text, re.M)
        text = (text[:hsm.start()] +
                f"hsm:\n  vendor: generic\n  module: {OCK_MODULE}\n  token_label: {TOKEN_LABEL}\n"
                f"  pin: {{ file: secrets/ock.pin }}\n  sessions: 2\n"
                # Never looked up: the mechanism check comes first.
                f"  health_key: xks-health\n" + text[hsm.end():])
        path = os.path.join(cls.demo.dir, "nogcm.yaml")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return path

    def skip_if_predates_vendor(self, out):
        # hsm.vendor and the startup mechanism check came together.
        if re.search(r"hsm\.vendor: unknown setting", out):
            self.skipTest("this xks-proxy build has no hsm.vendor and so no CKM_AES_GCM check")

    def test_1_the_token_has_no_aes_gcm(self):
        """The premise: if opencryptoki's soft token ever offers AES-GCM, this case needs
        another token without it."""
        res = self.ock.run(PKCSCONF, "-m", "-c", SLOT)
        self.assertEqual(res.returncode, 0, res.stdout)
        self.assertIn("CKM_AES_KEY_GEN", res.stdout, "the mechanism list was not read")
        self.assertNotRegex(res.stdout, r"CKM_AES_GCM|0x1087\b",
                            "opencryptoki's soft token lists CKM_AES_GCM: this negative case "
                            "needs a token without it")

    def test_2_daemon_refuses_to_start(self):
        daemon = Daemon(self.binary, self.demo, config=self.config, log_name="nogcm-daemon.log",
                        extra_env=without_leak_check(os.environ))
        daemon.args = self.ock.wrap(daemon.args)
        t0 = time.monotonic()
        try:
            rc, out = daemon.run_to_exit(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired as e:
            out = (e.output or b"").decode("utf-8", "replace")
            self.fail(f"xks-proxy was still running {EXIT_TIMEOUT} s after it was started on a "
                      f"token without AES-GCM; output:\n{self.demo.redact(out)[-3000:]}")
        took = time.monotonic() - t0
        out = self.demo.redact(self.ock.redact(out))
        self.skip_if_predates_vendor(out)
        self.assertNotEqual(rc, 0, f"xks-proxy started on a token without AES-GCM:\n{out}")
        lines = [l for l in out.splitlines() if "CKM_AES_GCM" in l]
        self.assertTrue(lines, f"no startup message names CKM_AES_GCM:\n{out}")
        self.assertTrue(any(TOKEN_LABEL in l and re.search(r"\bfix\b", l, re.I) for l in lines),
                        f"the CKM_AES_GCM message does not name the token '{TOKEN_LABEL}' and "
                        f"a fix:\n" + "\n".join(lines))
        for s in self.demo.secrets():
            self.assertNotIn(s, out, "a PIN or secret reached the output")
        print(f"\nxks-proxy exited {rc} after {took:.2f} s: {lines[0].strip()[:400]}", flush=True)

    def test_3_doctor_fails_naming_ckm_aes_gcm(self):
        env = without_leak_check(Daemon(self.binary, self.demo).env())
        res = self.ock.run(self.xksctl, "doctor", "--config", self.config, "--cacert",
                           self.demo.ca, env=env, timeout=60)
        out = self.demo.redact(self.ock.redact(res.stdout))
        self.skip_if_predates_vendor(out)
        self.assertEqual(res.returncode, 1, out)
        fails = [l for l in out.splitlines() if l.startswith("FAIL") and "CKM_AES_GCM" in l]
        self.assertTrue(fails, f"no FAIL line names CKM_AES_GCM:\n{out}")
        self.assertTrue(any("fix" in l.lower() for l in fails), "\n".join(fails))
        for s in self.demo.secrets():
            self.assertNotIn(s, res.stdout, "a PIN or secret reached doctor's output")
        print(f"\ndoctor: {fails[0][:400]}", flush=True)


if __name__ == "__main__":
    unittest.main()
