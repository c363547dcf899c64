"""Integration-test harness: a provisioned demo token, the real xks-proxy daemon over
real TLS, and two SigV4 signers nobody here wrote (python3-botocore and curl
--aws-sigv4).

$XKS_IT_HSM picks the PKCS#11 implementation behind the demo (scripts/provision-demo.sh,
XKS_DEMO_HSM): softhsm2 (default) or nss (NSS softoken). Tests that only make sense on
one of them are marked with `only_on`.

Run with Debian's /usr/bin/python3 (it has python3-botocore). The daemon binary comes
from $XKS_PROXY_BIN (set by CTest), else the first of build/{test,h-it,release}/xks-proxy.

Secrets never reach the test output: the SigV4 secret is given to curl in a temporary
-K file, and any daemon log excerpt shown on failure is redacted first.
"""

import base64
import contextlib
import datetime
import hashlib
import http.client
import json
import os
import re
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import types
import unittest
import uuid
from unittest import mock

import botocore.auth
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
REGION = "us-east-1"
SERVICE = "kms-xks-proxy"
URI_PATH = "/demo/kms/xks/v1"
PRINCIPAL = "arn:aws:iam::123456789012:user/Alice"
KEY_ARN = "arn:aws:kms:us-east-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
START_TIMEOUT = float(os.environ.get("XKS_IT_START_TIMEOUT", "60"))
STOP_TIMEOUT = 30
HSMS = ("softhsm2", "nss")
HSM = os.environ.get("XKS_IT_HSM", "softhsm2")
if HSM not in HSMS:
    raise RuntimeError(f"XKS_IT_HSM={HSM!r}: use one of {', '.join(HSMS)}")


def only_on(hsm, reason):
    """Skips a test or class unless the suite runs on `hsm`; `reason` says why it cannot
    run on the others."""
    return unittest.skipUnless(HSM == hsm, f"{hsm} only: {reason}")


def lsan_env():
    """LSAN_OPTIONS with the suppressions for third-party PKCS#11 modules (ASan builds).
    NSS softoken leaves allocations behind after C_Finalize that LeakSanitizer reports once
    the module is unloaded, as "<unknown module>", which no suppression by library name
    matches: on NSS the daemon and xksctl run without leak detection (ASan's other checks
    stay on; the SoftHSM2 runs keep it)."""
    out = {}
    supp = os.path.join(HERE, "lsan.supp")
    if os.path.exists(supp) and "LSAN_OPTIONS" not in os.environ:
        out["LSAN_OPTIONS"] = f"suppressions={supp}:print_suppressions=0"
    if HSM == "nss":
        out["ASAN_OPTIONS"] = ":".join(filter(None, [os.environ.get("ASAN_OPTIONS"), "detect_leaks=0"]))
    return out


def find_binary(name, env_var):
    path = os.environ.get(env_var)
    if path:
        return path
    for sub in ("test", "h-it", "release"):
        cand = os.path.join(REPO, "build", sub, name)
        if os.access(cand, os.X_OK):
            return cand
    raise unittest.SkipTest(f"{name} not built; set {env_var}")


def figure(text):
    """A measured figure, on its own line so that it stands out in the test log."""
    print(f"\nFIGURE {text}", flush=True)


def write_private(path, text):
    """Writes `text` to `path` readable by its owner only (configs hold secret paths)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def fault_module():
    """The fault-injecting PKCS#11 module (tests/fault_pkcs11): $XKS_FAULT_MODULE (set by
    CTest), else the first one built under build/."""
    path = os.environ.get("XKS_FAULT_MODULE")
    if path and os.path.exists(path):
        return path
    for sub in ("test", "h-it", "h-res"):
        cand = os.path.join(REPO, "build", sub, "tests", "fault_pkcs11", "libxks_fault_pkcs11.so")
        if os.path.exists(cand):
            return cand
    raise unittest.SkipTest("xks_fault_pkcs11 not built; set XKS_FAULT_MODULE")

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    """Strict standard Base64 (RFC 4648 section 4, padded): raises on anything else."""
    if not isinstance(text, str) or len(text) % 4 != 0 or not re.fullmatch(r"[A-Za-z0-9+/]*={0,2}", text):
        raise ValueError(f"not standard padded Base64: {text[:40]!r}")
    return base64.b64decode(text, validate=True)


def cdiv(aad, metadata, iv, ciphertext, tag):
    """Appendix C: Base64(SHA-256(aad || metadata || iv || ciphertext || tag))."""
    h = hashlib.sha256()
    for part in (aad, metadata, iv, ciphertext, tag):
        h.update(part or b"")
    return b64(h.digest())


def flip(data, index=0, bit=0x01):
    b = bytearray(data)
    b[index] ^= bit
    return bytes(b)


# ---------------------------------------------------------------------------------------
# Demo directory (scripts/provision-demo.sh)

class Demo:
    """A provisioned demo directory: config, token, TLS material and credential."""

    def __init__(self, directory, port, metrics_port=None):
        """`metrics_port`: where the demo config serves Prometheus /metrics. Default: the
        port already in DIR's config when DIR is provisioned again (so that re-provisioning
        changes nothing), else a free port — never the fixed default 9464, which parallel
        test daemons would fight over."""
        self.dir = directory
        self.port = port
        self.config = os.path.join(directory, "xks-proxy.yaml")
        if metrics_port is None:
            metrics_port = self.configured_metrics_port()
        while metrics_port is None or metrics_port == port:
            metrics_port = free_port()
        self.metrics_port = metrics_port
        self.hsm = HSM
        env = dict(os.environ, XKS_LISTEN=f"127.0.0.1:{port}",
                   XKS_METRICS_LISTEN=f"127.0.0.1:{metrics_port}", XKS_DEMO_HSM=HSM, **lsan_env())
        if HSM == "nss" and "XKSCTL_BIN" not in env:
            env["XKSCTL_BIN"] = find_binary("xksctl", "XKSCTL_BIN")
        res = subprocess.run([os.path.join(REPO, "scripts", "provision-demo.sh"), directory],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, timeout=120)
        if res.returncode != 0:
            if HSM == "nss" and re.search(r"unknown setting [\"'](vendor|init_args)", res.stdout):
                raise unittest.SkipTest("this xks-proxy build has no hsm.vendor / hsm.init_args, "
                                        "which NSS softoken needs")
            raise RuntimeError(f"provision-demo.sh failed ({res.returncode}):\n{res.stdout}")
        self.provision_output = res.stdout
        self.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        self.ca = os.path.join(directory, "tls", "ca.pem")
        with open(os.path.join(directory, "kms-proxy-config.json")) as f:
            kms = json.load(f)
        self.uri_path = kms["XksProxyUriPath"]
        self.akid = kms["XksProxyAuthenticationCredential"]["AccessKeyId"]
        self.secret = kms["XksProxyAuthenticationCredential"]["RawSecretAccessKey"]
        self.pins = []
        for name in ("hsm.pin", "hsm-so.pin"):  # NSS softoken has no SO PIN
            with contextlib.suppress(FileNotFoundError):
                with open(os.path.join(directory, "secrets", name)) as f:
                    self.pins.append(f.read().strip())
        with open(self.config) as f:
            self.module = re.search(r"^  module: (\S+)$", f.read(), re.M).group(1)
        self.env = dict(os.environ)
        with open(os.path.join(directory, "env")) as f:
            for line in f:
                m = re.match(r"export (\w+)='(.*)'$", line.strip())
                if m:
                    self.env[m.group(1)] = m.group(2)

    def configured_metrics_port(self):
        """The metrics port of an existing demo config in this directory, else None."""
        try:
            with open(self.config) as f:
                text = f.read()
        except FileNotFoundError:
            return None
        m = re.search(r'^metrics: \{ listen: "127\.0\.0\.1:(\d+)" \}$', text, re.M)
        return int(m.group(1)) if m else None

    def secrets(self):
        return [self.secret] + self.pins

    def redact(self, text):
        for s in self.secrets():
            text = text.replace(s, "<redacted>")
        return text


# ---------------------------------------------------------------------------------------
# The daemon

class Daemon:
    def __init__(self, binary, demo, config=None, log_name="daemon.log", extra_args=(),
                 extra_env=None):
        """`extra_env`: variables added to the daemon's environment (e.g. NOTIFY_SOCKET)."""
        self.binary = binary
        self.demo = demo
        self.config = config or demo.config
        self.log_path = os.path.join(demo.dir, log_name)
        self.port = demo.port  # where readiness is probed
        self.args = [binary, "--config", self.config, *extra_args]
        self.extra_env = dict(extra_env or {})
        self.proc = None

    def env(self):
        env = dict(self.demo.env)
        env.update(self.extra_env)
        env.update(lsan_env())
        return env

    def start(self):
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env(), cwd=self.demo.dir)
        return self

    def context(self):
        """The TLS context readiness is probed with (subclasses add a client cert)."""
        return ssl.create_default_context(cafile=self.demo.ca)

    def wait_ready(self, timeout=START_TIMEOUT):
        ctx = self.context()
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"xks-proxy exited with {self.proc.returncode} during startup; "
                                     f"log:\n{self.log_tail()}")
            try:
                conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=2)
                conn.request("GET", "/ping")
                status = conn.getresponse().status
                conn.close()
                if status == 200:
                    return self
                last = f"status {status}"
            except (OSError, http.client.HTTPException) as e:
                last = repr(e)
            time.sleep(0.1)
        self.proc.kill()
        raise AssertionError(f"GET /ping did not answer 200 within {timeout}s (last: {last}); "
                             f"log:\n{self.log_tail()}")

    def stop(self):
        """SIGTERM, wait; returns the exit code (None if it had to be killed)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                rc = self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                rc = None
        self.log.close()
        return rc

    def run_to_exit(self, timeout=60):
        """For configs expected to be refused: runs the daemon, returns (rc, output)."""
        res = subprocess.run(self.args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=self.env(), cwd=self.demo.dir,
                             timeout=timeout)
        out = res.stdout.decode("utf-8", "replace")
        with open(self.log_path, "a") as f:
            f.write(out)
        return res.returncode, out

    def read_log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def log_tail(self, lines=40):
        return self.demo.redact("\n".join(self.read_log().splitlines()[-lines:]))

    def log_lines(self):
        """The daemon's JSON log lines, parsed; other lines are skipped."""
        out = []
        for line in self.read_log().splitlines():
            line = line.strip()
            if line.startswith("{"):
                with contextlib.suppress(ValueError):
                    out.append(json.loads(line))
        return out


# ---------------------------------------------------------------------------------------
# Signers and the HTTP client

class Response:
    def __init__(self, status, body, headers=None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def __repr__(self):
        # Bodies may hold plaintext: show only the error fields.
        if isinstance(self.json, dict) and "errorName" in self.json:
            return f"<Response {self.status} {self.json.get('errorName')}: {self.json.get('errorMessage')!r}>"
        return f"<Response {self.status} {len(self.body)} bytes>"


_clock_lock = threading.Lock()


def botocore_headers(url, body, akid, secret, skew=None, extra_headers=None, service=SERVICE,
                     region=REGION, method="POST"):
    """Headers that botocore's SigV4Auth produces for a POST of `body` to `url`.
    `skew` (timedelta) signs as if the clock were that far off, by patching the
    datetime botocore reads."""
    headers = {"Content-Type": "application/json"}
    headers.update(extra_headers or {})
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    auth = SigV4Auth(Credentials(akid, secret), service, region)
    if skew is None:
        auth.add_auth(req)
    else:
        class Shifted(datetime.datetime):
            @classmethod
            def utcnow(cls):
                return datetime.datetime.utcnow() + skew
        fake = types.SimpleNamespace(datetime=Shifted, timedelta=datetime.timedelta)
        with _clock_lock, mock.patch.object(botocore.auth, "datetime", fake):
            auth.add_auth(req)
    out = dict(req.headers.items())
    out["Host"] = botocore.auth._host_from_url(url)
    return out


class Client:
    """Talks to one key store of a running daemon."""

    def __init__(self, demo):
        self.demo = demo
        self.host = "127.0.0.1"
        self.port = demo.port
        self.ctx = ssl.create_default_context(cafile=demo.ca)
        self.base = f"https://{self.host}:{self.port}"
        self.plaintexts = []  # every plaintext sent or received, for the log scan
        self._lock = threading.Lock()

    # -- request bodies -----------------------------------------------------------------
    @staticmethod
    def metadata(operation, principal=PRINCIPAL, **extra):
        rm = {"awsPrincipalArn": principal, "kmsKeyArn": KEY_ARN, "kmsOperation": operation,
              "kmsRequestId": str(uuid.uuid4())}
        rm.update(extra)
        return rm

    def new_plaintext(self, size=32):
        """Random plaintext starting with a unique marker, remembered for the log scan."""
        marker = f"PTMARK-{secrets.token_hex(8)}-".encode()
        if size < len(marker):
            data = secrets.token_bytes(size)
        else:
            data = marker + secrets.token_bytes(size - len(marker))
        self.remember(data)
        return data

    def remember(self, plaintext):
        with self._lock:
            self.plaintexts.append(plaintext)

    # -- transport ----------------------------------------------------------------------
    def connection(self, timeout=30):
        return http.client.HTTPSConnection(self.host, self.port, context=self.ctx, timeout=timeout)

    def path(self, suffix, uri_path=None):
        return (uri_path or self.demo.uri_path) + suffix

    def send(self, method, path, body=b"", headers=None, conn=None):
        own = conn is None
        conn = conn or self.connection()
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            data = r.read()
            return Response(r.status, data, {k.lower(): v for k, v in r.getheaders()})
        finally:
            if own:
                conn.close()

    def encode(self, body):
        return body if isinstance(body, (bytes, bytearray)) else json.dumps(body).encode()

    # -- botocore signer ----------------------------------------------------------------
    def sign(self, path, body, akid=None, secret=None, **kw):
        return botocore_headers(self.base + path, self.encode(body), akid or self.demo.akid,
                                secret or self.demo.secret, **kw)

    def post(self, suffix, body, conn=None, uri_path=None, **kw):
        """POST signed by botocore to <uri_path><suffix>."""
        path = self.path(suffix, uri_path)
        data = self.encode(body)
        return self.send("POST", path, data, self.sign(path, data, **kw), conn=conn)

    # -- curl signer --------------------------------------------------------------------
    def curl(self, suffix, body, akid=None, secret=None, method="POST", uri_path=None):
        """The same request signed and sent by curl --aws-sigv4; the credential travels in a
        temporary -K file (mode 0600), never on the command line."""
        url = self.base + self.path(suffix, uri_path)
        with tempfile.TemporaryDirectory() as tmp:
            cfg = os.path.join(tmp, "curl.cfg")
            fd = os.open(cfg, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f'user = "{akid or self.demo.akid}:{secret or self.demo.secret}"\n')
            out = os.path.join(tmp, "body")
            cmd = ["curl", "-sS", "--cacert", self.demo.ca, "--aws-sigv4",
                   f"aws:amz:{REGION}:{SERVICE}", "-K", cfg, "-X", method,
                   "-H", "Content-Type: application/json", "--data-binary", "@-",
                   "-o", out, "-w", "%{http_code}", url]
            res = subprocess.run(cmd, input=self.encode(body), stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=60)
            if res.returncode != 0:
                raise AssertionError(f"curl failed ({res.returncode}): "
                                     f"{self.demo.redact(res.stderr.decode(errors='replace'))}")
            with open(out, "rb") as f:
                data = f.read()
        return Response(int(res.stdout.decode()), data)

    # -- the four APIs ------------------------------------------------------------------
    def call(self, signer, suffix, body, **kw):
        if signer == "botocore":
            return self.post(suffix, body, **kw)
        if signer == "curl":
            return self.curl(suffix, body, **kw)
        raise ValueError(signer)

    def health_body(self, operation="KmsHealthCheck"):
        return {"requestMetadata": {"kmsRequestId": str(uuid.uuid4()), "kmsOperation": operation}}

    def health(self, signer="botocore", **kw):
        return self.call(signer, "/health", self.health_body(), **kw)

    def key_metadata(self, key, signer="botocore", **kw):
        return self.call(signer, f"/keys/{key}/metadata",
                         {"requestMetadata": self.metadata("DescribeKey")}, **kw)

    def encrypt_body(self, plaintext, aad=None, cdiv_alg=None, algorithm="AES_GCM", **meta):
        body = {"requestMetadata": self.metadata("Encrypt", **meta),
                "plaintext": b64(plaintext), "encryptionAlgorithm": algorithm}
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        if cdiv_alg is not None:
            body["ciphertextDataIntegrityValueAlgorithm"] = cdiv_alg
        return body

    def encrypt(self, key, plaintext, aad=None, cdiv_alg=None, signer="botocore", **kw):
        self.remember(plaintext)
        return self.call(signer, f"/keys/{key}/encrypt",
                         self.encrypt_body(plaintext, aad, cdiv_alg), **kw)

    def decrypt_body(self, ciphertext, iv, tag, aad=None, metadata=None, algorithm="AES_GCM"):
        body = {"requestMetadata": self.metadata("Decrypt"),
                "ciphertext": b64(ciphertext), "initializationVector": b64(iv),
                "authenticationTag": b64(tag), "encryptionAlgorithm": algorithm}
        if aad is not None:
            body["additionalAuthenticatedData"] = b64(aad)
        if metadata is not None:
            body["ciphertextMetadata"] = b64(metadata)
        return body

    def decrypt(self, key, ciphertext, iv, tag, aad=None, metadata=None, signer="botocore", **kw):
        r = self.call(signer, f"/keys/{key}/decrypt",
                      self.decrypt_body(ciphertext, iv, tag, aad, metadata), **kw)
        if r.status == 200 and isinstance(r.json, dict) and "plaintext" in r.json:
            with contextlib.suppress(ValueError):
                self.remember(unb64(r.json["plaintext"]))
        return r


class Sealed:
    """An Encrypt response, decoded."""

    def __init__(self, js, aad=None):
        self.ciphertext = unb64(js["ciphertext"])
        self.iv = unb64(js["initializationVector"])
        self.tag = unb64(js["authenticationTag"])
        self.metadata = unb64(js["ciphertextMetadata"]) if "ciphertextMetadata" in js else None
        self.cdiv = js.get("ciphertextDataIntegrityValue")
        self.aad = aad

    def decrypt_args(self, **override):
        args = dict(ciphertext=self.ciphertext, iv=self.iv, tag=self.tag, aad=self.aad,
                    metadata=self.metadata)
        args.update(override)
        return args


# ---------------------------------------------------------------------------------------
# Test base class: one demo + one daemon per test class

class Fixture:
    """One provisioned demo + one running daemon, shared by the tests of a module."""

    def __init__(self, name):
        binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        self.tmp = tempfile.mkdtemp(prefix=f"xks-it-{name}-")
        try:
            self.demo = Demo(os.path.join(self.tmp, "demo"), free_port())
        except BaseException:  # a skip included: nothing to inspect
            shutil.rmtree(self.tmp, ignore_errors=True)
            raise
        self.daemon = Daemon(binary, self.demo).start()
        try:
            self.daemon.wait_ready()
        except BaseException:
            self.daemon.stop()
            raise
        self.client = Client(self.demo)

    def finish(self):
        """SIGTERM; requires exit 0 and a log without plaintext or secrets."""
        rc = self.daemon.stop()
        problems = []
        if rc != 0:
            problems.append(f"xks-proxy exited with {rc} after SIGTERM (expected 0); log:\n"
                            f"{self.daemon.log_tail()}")
        leaks = find_leaks(self.daemon.read_log(), self.client.plaintexts, self.demo.secrets())
        if leaks:
            problems.append(f"daemon log {self.daemon.log_path} leaks: " + ", ".join(leaks))
        if problems:
            raise AssertionError("\n".join(problems))  # keep tmp for inspection
        shutil.rmtree(self.tmp, ignore_errors=True)


class Faults:
    """The fault module's control file (directives: tests/fault_pkcs11/fault_pkcs11.cpp)
    and its call counts, counted on entry and written by the module every 5 ms."""

    SETTLE_S = 0.03  # longer than the module's write interval

    def __init__(self, directory):
        self.control = os.path.join(directory, "fault.control")
        self.stats = os.path.join(directory, "fault.stats")
        self.set()

    def set(self, *lines):
        # Written to a temporary file and renamed: the module never reads half a file,
        # and the new inode is a change even within one mtime tick.
        tmp = self.control + ".tmp"
        with open(tmp, "w") as f:
            f.write("\n".join(lines) + "\n")
        os.replace(tmp, self.control)

    def _read(self):
        out = {}
        try:
            with open(self.stats) as f:
                for line in f:
                    name, _, n = line.strip().partition(" ")
                    if n:
                        out[name] = int(n)
        except FileNotFoundError:
            pass
        return out

    def counts(self):
        """Every call made so far, including those of the last few ms."""
        time.sleep(self.SETTLE_S)
        return self._read()

    def count(self, function):
        return self.counts().get(function, 0)

    def wait_count(self, function, wanted, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._read().get(function, 0) >= wanted:
                return True
            time.sleep(0.002)
        return self.count(function) >= wanted


_fixture = None


def setUpModule():
    """Import into a test module (`from harness import setUpModule, tearDownModule`) to
    share one daemon among all its test classes."""
    global _fixture
    _fixture = Fixture(os.path.basename(os.environ.get("XKS_IT_NAME", "it")))


def tearDownModule():
    global _fixture
    fixture, _fixture = _fixture, None
    if fixture is not None:
        fixture.finish()


class DaemonTestCase(unittest.TestCase):
    """Tests against the module's shared daemon (see setUpModule)."""

    maxDiff = 2000
    demo = daemon = client = None

    @classmethod
    def setUpClass(cls):
        if _fixture is None:
            raise unittest.SkipTest("no daemon: the test module must import setUpModule/tearDownModule")
        cls.demo, cls.daemon, cls.client = _fixture.demo, _fixture.daemon, _fixture.client

    # -- assertions ---------------------------------------------------------------------
    def assert_ok(self, r):
        self.assertEqual(r.status, 200, f"expected 200, got {r!r}")
        self.assertIsInstance(r.json, dict, "response body is not a JSON object")
        return r.json

    def assert_error(self, r, status, name, *message_patterns):
        """Status, errorName, and each regex (case-insensitive) found in errorMessage,
        which must be printable ASCII and shorter than 512 characters (spec, Error codes)."""
        self.assertEqual((r.status, (r.json or {}).get("errorName") if isinstance(r.json, dict) else None),
                         (status, name), f"got {r!r}")
        msg = r.json.get("errorMessage")
        if message_patterns:
            self.assertIsInstance(msg, str, f"{name} without errorMessage")
        if msg is not None:
            self.assertLess(len(msg), 512)
            self.assertTrue(all(0x20 <= ord(c) <= 0x7E for c in msg), f"non-printable errorMessage {msg!r}")
            for p in message_patterns:
                self.assertRegex(msg, re.compile(p, re.I), f"errorMessage of {name}")
        return msg

    def seal(self, key="demo-aes-key", plaintext=None, aad=None, cdiv_alg=None, signer="botocore"):
        plaintext = self.client.new_plaintext() if plaintext is None else plaintext
        js = self.assert_ok(self.client.encrypt(key, plaintext, aad=aad, cdiv_alg=cdiv_alg, signer=signer))
        return plaintext, Sealed(js, aad)


def b64_variants(data):
    """Base64 forms under which `data` can appear inside a longer Base64 string."""
    out = []
    for shift in range(3):
        enc = base64.b64encode(b"\0" * shift + data).decode()
        # Drop the characters that depend on the neighbouring bytes.
        start = (shift * 8 + 5) // 6 + 1 if shift else 0
        out.append(enc[start:len(enc) - 4])
    return [v for v in out if len(v) >= 12]


def find_leaks(log, plaintexts, secret_values):
    leaks = []
    for s in secret_values:
        if s and s in log:
            leaks.append("a secret (SigV4 secret or HSM PIN)")
    for pt in plaintexts:
        m = re.match(rb"PTMARK-[0-9a-f]{16}-", pt)
        needles = [pt[:m.end()].decode()] if m else []
        needles += b64_variants(pt[:48])
        if len(pt) >= 16:
            needles.append(pt.hex()[:32])
        for n in needles:
            if n and n in log:
                leaks.append(f"plaintext (as {n[:8]}...)")
                break
    return sorted(set(leaks))
