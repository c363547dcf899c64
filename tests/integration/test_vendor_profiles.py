"""Every file in config/examples/ runs end to end: the real daemon over real TLS, with the
example's behavioural HSM settings (vendor, iv, auth_failure_codes, pin_format, sessions,
environment, init_args) kept, and only what belongs to a site replaced by the provisioned
demo's (module, token, PIN, TLS, listen port, credential, key labels).

How each family is run:
  softhsm2  the real module (SoftHSM2)
  luna, cloudhsm, nshield
            the fault module (tests/fault_pkcs11, $XKS_FAULT_MODULE) with the matching
            XKS_FAULT_PROFILE in front of SoftHSM2: an emulation of the family's documented
            behaviour (GCM IV handling, PIN form, bad-tag code), not the vendor's library
  vault, utimaco, generic
            no emulation (no documented behaviour to reproduce): the fault module's
            standard profile forwards to SoftHSM2 and changes only SoftHSM2's own bad-tag
            code (CKR_GENERAL_ERROR) to the default CKR_ENCRYPTED_DATA_INVALID, which tests
            only the proxy's side of the example

For each example: Encrypt, Decrypt, Encrypt with a CDIV, a tampered tag (400
InvalidCiphertextException), and a storm of wrong-AAD Decrypts after which the health
status is still ACTIVE, with no device error, no failover and no re-initialisation (the
daemon's log events and metrics, and the fault module's C_Initialize/C_Finalize counts).
Negative cases show that the emulation can fail: CloudHSM with a caller-drawn IV, CloudHSM
with a plain PIN, nShield read as a generic HSM (its bad-tag code then is a device error).

Measured figures are printed (prefix "FIGURE") so that they can be quoted.
"""

import concurrent.futures
import copy
import glob
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.request

import yaml

import harness
from harness import REGION, fault_module, figure, write_private
from harness import Client, Daemon, DaemonTestCase, Demo, Faults, Sealed, find_binary, free_port

SOFTHSM = "/usr/lib/softhsm/libsofthsm2.so"
EXAMPLES = sorted(glob.glob(os.path.join(harness.REPO, "config", "examples", "*.yaml")))
DEMO_KEY = "demo-aes-key"
STORM = int(os.environ.get("XKS_IT_STORM", "1000"))
STORM_THREADS = 4

# vendor -> fault-module profile, or None = the real SoftHSM2 module.
PROFILE_OF = {"softhsm2": None, "luna": "luna", "cloudhsm": "cloudhsm", "nshield": "nshield",
              "vault": "standard", "utimaco": "standard", "generic": "standard"}
# Vendor defaults this test needs to prepare a site (the daemon applies them itself).
USER_PASSWORD_VENDORS = {"cloudhsm"}
# Log events (app: "hsm_" + HsmEvent kind) that mean the HSM was treated as failing.
FAULT_EVENTS = ("hsm_device_error", "hsm_marked_failed", "hsm_reinit_attempt", "hsm_reinit_failed")


class Run:
    """One daemon started on one example file (possibly with overrides)."""

    def __init__(self, env, name, example, profile=None, hsm_override=None, hsm_drop=()):
        self.env = env
        self.name = name
        with open(example) as f:
            ex = yaml.safe_load(f)
        self.example = os.path.basename(example)
        hsm = copy.deepcopy(ex["hsm"])
        if isinstance(hsm, list):
            raise AssertionError(f"{self.example}: an HSM list; this test runs one HSM per example")
        for key in hsm_drop:
            hsm.pop(key, None)
        hsm.update(hsm_override or {})
        self.vendor = hsm.get("vendor", "generic")
        if self.vendor not in PROFILE_OF:
            raise AssertionError(f"{self.example}: vendor {self.vendor!r} has no way to run here; "
                                 f"add it to PROFILE_OF in {os.path.basename(__file__)}")
        self.profile = PROFILE_OF[self.vendor] if profile is None else profile
        base = env.base
        extra_env = {}
        # The site: this demo's token, PIN, module.
        for key in ("slot_id", "token_label", "token_serial"):
            hsm.pop(key, None)
        hsm["token_label"] = base["hsm"]["token_label"]
        hsm["health_key"] = base["hsm"]["health_key"]
        pin_format = hsm.get("pin_format",
                             "user_password" if self.vendor in USER_PASSWORD_VENDORS else "plain")
        pin = env.demo.pins[0]
        if pin_format == "user_password":
            pin = "xks_proxy:" + pin  # a CloudHSM crypto user name, then the password
        pin_src = hsm.get("pin") or {}
        if "env" in pin_src:  # the example's form is kept: the PIN comes from that variable
            extra_env[pin_src["env"]] = pin
        else:
            hsm["pin"] = {"file": write_private(os.path.join(env.dir, f"{name}.pin"), pin + "\n")}
        self.faults = None
        if self.profile is None:
            hsm["module"] = SOFTHSM
        else:
            hsm["module"] = env.module
            fdir = os.path.join(env.dir, name)
            os.makedirs(fdir, exist_ok=True)
            self.faults = Faults(fdir)
            extra_env.update(XKS_FAULT_TARGET=SOFTHSM, XKS_FAULT_PROFILE=self.profile,
                             XKS_FAULT_CONTROL=self.faults.control, XKS_FAULT_STATS=self.faults.stats)
        cfg = {
            "server": {**ex.get("server", {}), **base["server"]},  # listen: the demo's free port
            "tls": base["tls"],
            "hsm": hsm,
            "keystores": [],
            "logging": base["logging"],
        }
        if "metrics" in base:
            cfg["metrics"] = base["metrics"]
        cred = base["keystores"][0]["credentials"]
        for ks in ex["keystores"]:
            keys = [{"id": k["id"], "label": DEMO_KEY, **({"enabled": k["enabled"]} if "enabled" in k else {})}
                    for k in ks["keys"]]
            entry = {**{k: v for k, v in ks.items() if k not in ("credentials", "keys")},
                     "credentials": cred, "keys": keys}
            # The region is the deployment's, not the HSM family's: the test's
            # signer and ARNs are in REGION.
            if "region" in entry:
                entry["region"] = REGION
            cfg["keystores"].append(entry)
        first = cfg["keystores"][0]
        self.uri_path = first["uri_path"]
        self.key_id = next(k["id"] for k in first["keys"] if k.get("enabled", True))
        self.config = write_private(os.path.join(env.demo.dir, f"{name}.json"), json.dumps(cfg, indent=1))
        self.daemon = Daemon(env.binary, env.demo, config=self.config, log_name=f"{name}.log",
                             extra_env=extra_env)
        demo = copy.copy(env.demo)
        demo.uri_path = self.uri_path
        self.client = Client(demo)

    def label(self):
        how = ("the real SoftHSM2 module" if self.profile is None else
               f"emulation profile {self.profile}" if self.profile != "standard" else
               "no emulation: standard profile (SoftHSM2's bad-tag code made CKR_ENCRYPTED_DATA_INVALID)")
        return f"{self.example} (vendor {self.vendor}, iv {self.daemon_iv()}, {how})"

    def daemon_iv(self):
        with open(self.config) as f:
            return json.load(f)["hsm"].get("iv", "(vendor default)")

    def start(self):
        self.daemon.start()
        try:
            self.daemon.wait_ready()
        except BaseException:
            self.daemon.stop()
            raise
        return self

    def stop(self):
        rc = self.daemon.stop()
        leaks = harness.find_leaks(self.daemon.read_log(), self.client.plaintexts, self.env.demo.secrets())
        if leaks:
            raise AssertionError(f"{self.name}: daemon log leaks: {leaks}")
        return rc

    # -- observations -------------------------------------------------------------------
    def events(self):
        counts = dict.fromkeys(FAULT_EVENTS, 0)
        for e in self.daemon.log_lines():
            if e.get("event") in counts:
                counts[e["event"]] += 1
        return counts

    def fault_counts(self):
        return self.faults.counts() if self.faults else {}

    def metrics(self):
        """{(name, labels)}: value from GET /metrics, or {} without a metrics listener."""
        if "metrics" not in self.env.base:
            return {}
        with urllib.request.urlopen(self.env.demo.metrics_url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s+(\S+)$", line)
            if m:
                out[(m.group(1), m.group(2) or "")] = float(m.group(3))
        return out


class VendorEnv:
    """One provisioned demo shared by every run; runs are sequential on its port."""

    def __init__(self):
        self.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        self.module = fault_module()
        self.tmp = tempfile.mkdtemp(prefix="xks-it-vendors-")
        self.demo = Demo(os.path.join(self.tmp, "demo"), free_port())
        self.dir = os.path.join(self.demo.dir, "vendors")
        os.makedirs(self.dir, mode=0o700)
        with open(self.demo.config) as f:
            self.base = yaml.safe_load(f)
        self.started = time.monotonic()

    def check_daemon_knows_vendors(self):
        """Skip (not fail) only when the daemon predates hsm.vendor; any other refusal of
        an example fails the test that runs it."""
        run = Run(self, "probe", os.path.join(harness.REPO, "config", "examples", "softhsm2.yaml"))
        res = subprocess.run([self.binary, "--config", run.config, "--check-config"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=run.daemon.env(), cwd=self.demo.dir, timeout=60)
        if res.returncode != 0 and re.search(r"unknown setting.*vendor|vendor.*unknown setting", res.stdout):
            raise unittest.SkipTest("this daemon has no hsm.vendor setting (the vendor profiles of the "
                                    "HSM layer are not in this build), so the updated example configs "
                                    "cannot load: " + self.demo.redact(res.stdout.strip().splitlines()[-1]))

    def finish(self):
        figure(f"vendor profiles: module ran {time.monotonic() - self.started:.1f} s")
        if os.environ.get("XKS_IT_KEEP"):
            print(f"\nkept {self.tmp}")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)


_env = None


def setUpModule():
    global _env
    _env = VendorEnv()
    try:
        _env.check_daemon_knows_vendors()
    except BaseException:
        _env.finish()
        _env = None
        raise


def tearDownModule():
    global _env
    env, _env = _env, None
    if env is not None:
        env.finish()


class VendorCase(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        if _env is None:
            raise unittest.SkipTest("no environment")
        cls.env = _env

    # -- the round trip -----------------------------------------------------------------
    def round_trip(self, run, iv_bytes=12):
        c = run.client
        key = run.key_id
        aad = secrets.token_bytes(24)
        pt = c.new_plaintext(48)
        js = self.assert_ok(c.encrypt(key, pt, aad=aad))
        sealed = Sealed(js, aad)
        self.assertEqual(len(sealed.iv), iv_bytes, f"{run.name}: IV length")
        self.assertEqual(len(sealed.tag), 16)
        self.assertEqual(len(sealed.ciphertext), len(pt))
        back = self.assert_ok(c.decrypt(key, **sealed.decrypt_args()))
        self.assertEqual(harness.unb64(back["plaintext"]), pt, f"{run.name}: Decrypt")

        # Two Encrypts never share an IV (the HSM's or the proxy's).
        again = Sealed(self.assert_ok(c.encrypt(key, pt, aad=aad)), aad)
        self.assertNotEqual(again.iv, sealed.iv, f"{run.name}: IV repeated")

        js = self.assert_ok(c.encrypt(key, pt, aad=aad, cdiv_alg="SHA_256"))
        with_cdiv = Sealed(js, aad)
        self.assertEqual(with_cdiv.cdiv, harness.cdiv(aad, with_cdiv.metadata, with_cdiv.iv,
                                                      with_cdiv.ciphertext, with_cdiv.tag),
                         f"{run.name}: CDIV")
        back = self.assert_ok(c.decrypt(key, **with_cdiv.decrypt_args()))
        self.assertEqual(harness.unb64(back["plaintext"]), pt)

        r = c.decrypt(key, **sealed.decrypt_args(tag=harness.flip(sealed.tag, 5)))
        self.assert_error(r, 400, "InvalidCiphertextException")
        return sealed

    def storm(self, run, sealed, n):
        """n Decrypts with a wrong AAD over STORM_THREADS keep-alive connections:
        (InvalidCiphertext answers, other answers {(status, errorName): count}, seconds)."""
        c = run.client
        path = c.path(f"/keys/{run.key_id}/decrypt")
        lock = threading.Lock()
        invalid = [0]
        other = {}
        todo = iter(range(n))

        def worker():
            conn = c.connection()
            try:
                while True:
                    with lock:
                        if next(todo, None) is None:
                            return
                    body = json.dumps(c.decrypt_body(sealed.ciphertext, sealed.iv, sealed.tag,
                                                     aad=secrets.token_bytes(24),
                                                     metadata=sealed.metadata)).encode()
                    r = c.send("POST", path, body, c.sign(path, body), conn=conn)
                    name = (r.json or {}).get("errorName") if isinstance(r.json, dict) else None
                    with lock:
                        if (r.status, name) == (400, "InvalidCiphertextException"):
                            invalid[0] += 1
                        else:
                            other[(r.status, name)] = other.get((r.status, name), 0) + 1
            finally:
                conn.close()

        t0 = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(STORM_THREADS) as pool:
            for f in [pool.submit(worker) for _ in range(STORM_THREADS)]:
                f.result()
        return invalid[0], other, time.monotonic() - t0

    def health(self, run):
        js = self.assert_ok(run.client.health())
        return [e["healthStatus"] for e in js["ekmFleetDetails"]]

    def metric_sum(self, metrics, pattern, **labels):
        total = 0.0
        for (name, lab), v in metrics.items():
            if re.search(pattern, name) and all(f'{k}="{val}"' in lab for k, val in labels.items()):
                total += v
        return total

    # -- one example, end to end --------------------------------------------------------
    def run_example(self, example):
        stem = os.path.splitext(os.path.basename(example))[0]
        with open(example) as f:
            if (yaml.safe_load(f).get("hsm") or {}).get("vendor") == "nss":
                self.skipTest("NSS softoken runs as the real module in the suite parametrised on NSS")
        run = Run(self.env, stem.replace("-", "_"), example)
        run.start()
        try:
            sealed = self.round_trip(run)
            invalid, other, secs = self.storm(run, sealed, STORM)
            statuses = self.health(run)
            events = run.events()
            stats = run.fault_counts()
            metrics = run.metrics()
        finally:
            rc = run.stop()
        device_errors = events["hsm_device_error"]
        reinits = events["hsm_reinit_attempt"] + events["hsm_reinit_failed"]
        # Any counter the daemon exports for device errors, re-initialisation or failover.
        fault_metrics = {n: v for (n, _), v in metrics.items()
                         if re.search(r"device_error|reinit|failover|marked_failed", n) and n.endswith("_total")}
        figure(f"{run.label()}: storm decrypts sent {STORM}, InvalidCiphertext answers {invalid}, "
               f"other answers {sum(other.values())} {dict(other) or ''}, device errors {device_errors}, "
               f"reinits {reinits}, health {statuses}; {STORM / secs:.0f} decrypts/s over "
               f"{STORM_THREADS} keep-alive connections ({secs:.1f} s)"
               + (f"; fault module: C_Initialize {stats.get('C_Initialize', 0)}, C_Finalize "
                  f"{stats.get('C_Finalize', 0)}, IVs generated {stats.get('profile_ivs_generated', 0)}, "
                  f"tag failures mapped {stats.get('profile_tag_failures_mapped', 0)}, logins split "
                  f"{stats.get('profile_logins_split', 0)}" if run.faults else ""))
        self.assertEqual(rc, 0, f"{run.name}: exit code after SIGTERM; log:\n{run.daemon.log_tail()}")
        self.assertEqual((invalid, other), (STORM, {}), f"{run.name}: storm answers")
        self.assertEqual(statuses, ["ACTIVE"], f"{run.name}: health after the storm")
        self.assertEqual(events, dict.fromkeys(FAULT_EVENTS, 0), f"{run.name}: HSM fault events")
        self.assertEqual({n: v for n, v in fault_metrics.items() if v}, {}, f"{run.name}: fault metrics")
        if metrics:
            answered = self.metric_sum(metrics, r"^xks_proxy_requests_total$", api="Decrypt",
                                       outcome="InvalidCiphertextException")
            self.assertGreaterEqual(answered, STORM + 1, f"{run.name}: requests_total")
        if run.faults:
            # One C_Initialize, no C_Finalize: the module was never re-initialised.
            self.assertEqual((stats.get("C_Initialize", 0), stats.get("C_Finalize", 0)), (1, 0),
                             f"{run.name}: module (re)initialisations")
        # The emulation was in the path, not bypassed.
        if run.profile in ("luna", "luna_fips16", "cloudhsm", "nshield"):
            self.assertGreaterEqual(stats.get("profile_ivs_generated", 0), 3, f"{run.name}: HSM-made IVs")
        if run.profile is not None:
            self.assertGreaterEqual(stats.get("profile_tag_failures_mapped", 0), STORM + 1)
        if run.profile == "cloudhsm":
            self.assertGreaterEqual(stats.get("profile_logins_split", 0), 1)
        if run.profile == "nshield":
            self.assertGreaterEqual(stats.get("profile_tag_failures_mapped", 0), STORM + 1)


def _example_test(path):
    def test(self):
        self.run_example(path)
    test.__doc__ = f"config/examples/{os.path.basename(path)} end to end through its profile"
    return test


class Examples(VendorCase):
    """One test per file in config/examples/: a new example is run without a change here."""


for _path in EXAMPLES:
    setattr(Examples, "test_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(_path))[0]),
            _example_test(_path))


def example(name):
    return os.path.join(harness.REPO, "config", "examples", name)


class EmulationDetails(VendorCase):
    """What the emulation does beyond the example files, and that it can fail."""

    def test_luna_fips16_sixteen_byte_ivs(self):
        """Luna before firmware 7.9.3 in FIPS mode: 16-byte IVs come back after the tag and
        decrypt (the spec allows 16-byte IVs on Decrypt)."""
        run = Run(self.env, "luna_fips16", example("thales-luna.yaml"), profile="luna_fips16").start()
        try:
            self.round_trip(run, iv_bytes=16)
            invalid, other, _ = self.storm(run, Sealed(self.assert_ok(run.client.encrypt(
                run.key_id, run.client.new_plaintext(), aad=b"a")), b"a"), 50)
            statuses = self.health(run)
            stats = run.fault_counts()
        finally:
            rc = run.stop()
        figure(f"{run.label()}: 16-byte IVs generated {stats.get('profile_ivs_generated', 0)}, "
               f"50 wrong-AAD decrypts -> {invalid} InvalidCiphertext, health {statuses}")
        self.assertEqual(rc, 0)
        self.assertEqual((invalid, other, statuses), (50, {}, ["ACTIVE"]))

    def caller_drawn_iv_on_cloudhsm(self, name, hsm_override):
        """Runs aws-cloudhsm.yaml with a caller-drawn IV on the cloudhsm emulation: (how it
        failed, fault counts). It must never encrypt."""
        run = Run(self.env, name, example("aws-cloudhsm.yaml"), profile="cloudhsm",
                  hsm_override=hsm_override)
        run.daemon.start()
        how = None
        try:
            deadline = time.monotonic() + 30
            while how is None and time.monotonic() < deadline:
                if run.daemon.proc.poll() is not None:
                    how = f"startup refused (exit {run.daemon.proc.returncode})"
                elif run.fault_counts().get("profile_iv_refused", 0) >= 1:
                    r = run.client.encrypt(run.key_id, run.client.new_plaintext())
                    self.assertNotEqual(r.status, 200, "an Encrypt succeeded with a caller-drawn IV")
                    how = f"per call: Encrypt answered {r!r}"
                else:
                    time.sleep(0.05)
            stats = run.fault_counts()
        finally:
            run.stop()
        self.assertIsNotNone(how, "neither refused at startup nor refused by the emulation")
        figure(f"negative: aws-cloudhsm.yaml with {hsm_override} on the cloudhsm emulation: {how}; "
               f"IV parameters refused by the emulation {stats.get('profile_iv_refused', 0)}, IVs "
               f"generated {stats.get('profile_ivs_generated', 0)}; log: {self.first_error(run)}")
        self.assertEqual(stats.get("profile_ivs_generated", 0), 0)
        return how, stats

    def test_cloudhsm_with_a_caller_drawn_iv_is_refused_at_startup(self):
        """vendor cloudhsm knows that CloudHSM refuses a caller's IV: iv caller_random
        stops startup."""
        how, _ = self.caller_drawn_iv_on_cloudhsm("cloudhsm_caller_random", {"iv": "caller_random"})
        self.assertTrue(how.startswith("startup refused"), how)

    def test_cloudhsm_emulation_refuses_a_caller_drawn_iv(self):
        """Read as a generic HSM (no vendor check), the emulated CloudHSM itself refuses the
        caller's IV with CKR_MECHANISM_PARAM_INVALID, call after call."""
        _, stats = self.caller_drawn_iv_on_cloudhsm(
            "cloudhsm_generic", {"vendor": "generic", "iv": "caller_random", "pin_format": "user_password"})
        self.assertGreaterEqual(stats.get("profile_iv_refused", 0), 1)

    def test_cloudhsm_with_a_plain_pin_fails(self):
        """The emulated CloudHSM wants `user:password`: a PIN without ':' stops startup."""
        run = Run(self.env, "cloudhsm_plain_pin", example("aws-cloudhsm.yaml"),
                  hsm_override={"pin_format": "plain"})
        rc, out = run.daemon.run_to_exit(timeout=60)
        stats = run.fault_counts()
        figure(f"negative: aws-cloudhsm.yaml with pin_format plain on the cloudhsm emulation: exit {rc}; "
               f"logins refused by the emulation {stats.get('profile_login_refused', 0)}; "
               f"log: {self.first_error(run)}")
        self.assertNotEqual(rc, 0)
        self.assertGreaterEqual(stats.get("profile_login_refused", 0), 1)

    def test_nshield_read_as_generic_shows_device_errors(self):
        """The bug being fixed: without nShield's bad-tag code, wrong-AAD decrypts (which any
        KMS caller can send) count as device errors and take the HSM out."""
        run = Run(self.env, "nshield_generic", example("entrust-nshield.yaml"), profile="nshield",
                  hsm_override={"vendor": "generic"}, hsm_drop=("auth_failure_codes",))
        run.start()
        try:
            js = self.assert_ok(run.client.encrypt(run.key_id, run.client.new_plaintext(), aad=b"x"))
            invalid, other, _ = self.storm(run, Sealed(js, b"x"), 20)
            time.sleep(0.1)
            statuses = self.health(run)
            events = run.events()
        finally:
            run.stop()
        figure(f"negative: entrust-nshield.yaml with vendor generic on the nshield emulation: 20 "
               f"wrong-AAD decrypts -> InvalidCiphertext {invalid}, other {dict(other)}, device errors "
               f"{events['hsm_device_error']}, marked failed {events['hsm_marked_failed']}, reinits "
               f"{events['hsm_reinit_attempt'] + events['hsm_reinit_failed']}, health {statuses}")
        self.assertGreater(events["hsm_device_error"], 0)
        self.assertLess(invalid, 20)

    def first_error(self, run):
        for e in run.daemon.log_lines():
            if e.get("level") in ("error", "critical", "warn", "warning"):
                return self.env.demo.redact(json.dumps(e)[:300])
        tail = run.daemon.log_tail(3)
        return tail[-300:] if tail else "(empty)"


if __name__ == "__main__":
    unittest.main()
