"""Secondary authorization against the real daemon: a signed request is
denied with 403 AccessDeniedException and the access log names the deciding
statement; health is never subject to the policy; dry-run logs and lets the
request through; a reload swaps the policy under continuous traffic."""

import json
import os
import shutil
import signal
import tempfile
import threading
import time
import unittest

from harness import PRINCIPAL, Client, Daemon, Demo, find_binary, free_port

OTHER_PRINCIPAL = "arn:aws:iam::999999999999:role/intruder"

POLICY = """\
enforce: {enforce}
statements:
  - sid: allow-alice
    effect: allow
    apis: [Encrypt, Decrypt, GetKeyMetadata]
    principals: ["{principal}"]
  - sid: deny-encrypt-only-key
    effect: deny
    keys: [demo-encrypt-only]
"""


class PolicyTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-policy-")
        cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        cls.policy_path = os.path.join(cls.demo.dir, "policy.yaml")
        cls.write_policy(enforce=True)
        with open(cls.demo.config) as f:
            text = f.read()
        marker = "  - uri_path: /demo/kms/xks/v1\n"
        assert marker in text, "the demo config layout changed"
        cls.config = os.path.join(cls.demo.dir, "policy-config.yaml")
        with open(cls.config, "w") as f:
            f.write(text.replace(marker, marker + "    policy: policy.yaml\n"))
        os.chmod(cls.config, 0o600)
        cls.daemon = Daemon(find_binary("xks-proxy", "XKS_PROXY_BIN"), cls.demo,
                            config=cls.config).start()
        cls.daemon.wait_ready()
        cls.client = Client(cls.demo)

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        if rc == 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def write_policy(cls, enforce, principal=PRINCIPAL):
        with open(cls.policy_path + ".new", "w") as f:
            f.write(POLICY.format(enforce="true" if enforce else "false", principal=principal))
        os.replace(cls.policy_path + ".new", cls.policy_path)

    def reload(self):
        before = self.daemon.read_log().count('"event":"reloaded"')
        self.daemon.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 20
        while time.time() < deadline:
            if self.daemon.read_log().count('"event":"reloaded"') > before:
                return
            time.sleep(0.05)
        self.fail("no 'reloaded' log line after SIGHUP:\n" + self.daemon.log_tail())

    def access_line(self, request_id):
        for line in self.daemon.read_log().splitlines():
            if '"event":"access"' in line and request_id in line:
                return json.loads(line)
        self.fail(f"no access log line for {request_id}")

    def metadata_call(self, key="demo-aes-key", principal=PRINCIPAL):
        body = {"requestMetadata": self.client.metadata("DescribeKey", principal=principal)}
        return body["requestMetadata"]["kmsRequestId"], self.client.post(
            f"/keys/{key}/metadata", body)

    def test_1_allowed_principal_passes(self):
        _, r = self.metadata_call()
        self.assertEqual(r.status, 200, r)
        plaintext = self.client.new_plaintext()
        self.assertEqual(self.client.encrypt("demo-aes-key", plaintext).status, 200)

    def test_2_other_principal_denied_by_default(self):
        rid, r = self.metadata_call(principal=OTHER_PRINCIPAL)
        self.assertEqual((r.status, r.json.get("errorName")), (403, "AccessDeniedException"), r)
        line = self.access_line(rid)
        self.assertEqual(line["outcome"], "AccessDeniedException")
        self.assertIn("default-deny", line.get("detail", ""), line)
        self.assertIn(OTHER_PRINCIPAL, line.get("detail", ""), "the log shows what was looked at")

    def test_3_deny_statement_named_in_log(self):
        rid, r = self.metadata_call(key="demo-encrypt-only")
        self.assertEqual((r.status, r.json.get("errorName")), (403, "AccessDeniedException"), r)
        self.assertIn("deny-encrypt-only-key", self.access_line(rid).get("detail", ""))

    def test_4_health_is_never_subject_to_the_policy(self):
        # No statement allows health and no principal is sent: still 200 (spec MUST).
        self.assertEqual(self.client.health().status, 200)

    def test_5_dry_run_logs_and_lets_through(self):
        self.write_policy(enforce=False)
        self.reload()
        try:
            rid, r = self.metadata_call(principal=OTHER_PRINCIPAL)
            self.assertEqual(r.status, 200, r)
            log = self.daemon.read_log()
            dry = [l for l in log.splitlines() if "policy_dry_run_deny" in l and rid in l]
            self.assertTrue(dry, "no policy_dry_run_deny line for the request")
            self.assertIn("default-deny", dry[0])
        finally:
            self.write_policy(enforce=True)
            self.reload()

    def test_6_reload_changes_policy_under_traffic(self):
        stop = threading.Event()
        failures, statuses = [], []

        def traffic():
            while not stop.is_set():
                _, r = self.metadata_call()
                statuses.append(r.status)
                if r.status != 200:
                    failures.append(r)

        worker = threading.Thread(target=traffic)
        worker.start()
        try:
            time.sleep(0.3)
            # Alice stays allowed through every swap; the intruder's fate flips.
            for allowed_other in (True, False, True, False):
                principal = OTHER_PRINCIPAL if allowed_other else PRINCIPAL
                with open(self.policy_path + ".new", "w") as f:
                    f.write(POLICY.format(enforce="true", principal=PRINCIPAL) + (
                        f"  - sid: allow-other\n    effect: allow\n"
                        f"    principals: [\"{principal}\"]\n"))
                os.replace(self.policy_path + ".new", self.policy_path)
                self.reload()
                _, r = self.metadata_call(principal=OTHER_PRINCIPAL)
                self.assertEqual(r.status, 200 if allowed_other else 403, r)
                time.sleep(0.2)
        finally:
            stop.set()
            worker.join()
            self.write_policy(enforce=True)
            self.reload()
        self.assertGreater(len(statuses), 10, "the traffic thread barely ran")
        self.assertEqual(failures, [], "an allowed request failed during a policy reload")

    def test_7_invalid_policy_reload_keeps_old_policy(self):
        with open(self.policy_path, "w") as f:
            f.write("statements:\n  - sid: broken\n    effect: maybe\n")
        try:
            self.daemon.proc.send_signal(signal.SIGHUP)
            deadline = time.time() + 20
            while time.time() < deadline and "reload_refused" not in self.daemon.read_log():
                time.sleep(0.05)
            self.assertIn("reload_refused", self.daemon.read_log())
            rid, r = self.metadata_call(principal=OTHER_PRINCIPAL)
            self.assertEqual(r.status, 403, "the previous policy keeps deciding")
        finally:
            self.write_policy(enforce=True)
            self.reload()


if __name__ == "__main__":
    unittest.main()
