"""Log output to a file with rotation, on the real daemon: `logging.file` with
size rotation writes every access line to the file (not stdout), rotates at max_size_mb,
keeps max_files rotated files of whole JSON lines with nothing lost at a rotation, creates
them mode 0640; a reload (SIGHUP) moves the log to another file; a log path that cannot be
opened stops the start with the setting named."""

import json
import os
import re
import shutil
import signal
import stat
import tempfile
import time
import unittest

from harness import Client, Daemon, Demo, find_binary, free_port

MIB = 1024 * 1024


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def json_lines(path):
    """Every line of `path`, parsed (a torn or non-JSON line fails the test)."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


class LogFileTests(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-logging-")
        cls.demo = Demo(os.path.join(cls.tmp, "demo"), free_port())
        cls.binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        cls.logs = os.path.join(cls.demo.dir, "logs")
        os.makedirs(cls.logs)
        with open(cls.demo.config) as f:
            cls.good_config = f.read()
        cls.assert_logging_line(cls.good_config)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @staticmethod
    def assert_logging_line(text):
        if not re.search(r"^logging: \{.*\}$", text, re.M):
            raise AssertionError("the demo config has no one-line logging section to replace")

    def config_with_logging(self, name, logging):
        text = re.sub(r"^logging: \{.*\}$", "logging: " + logging, self.good_config, flags=re.M)
        path = os.path.join(self.demo.dir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def health_burst(self, client, prefix, count):
        """`count` signed GetHealthStatus calls on one keep-alive connection, kmsRequestId
        = prefix-<seq>; returns the ids in order."""
        conn = client.connection()
        ids = []
        try:
            for seq in range(count):
                rid = f"{prefix}-{seq:06d}"
                body = {"requestMetadata": {"kmsRequestId": rid, "kmsOperation": "KmsHealthCheck"}}
                r = client.post("/health", body, conn=conn)
                self.assertEqual(r.status, 200, r.body)
                ids.append(rid)
        finally:
            conn.close()
        return ids

    def test_size_rotation_keeps_whole_lines_and_loses_none(self):
        cfg = self.config_with_logging(
            "rotate.yaml",
            "{ level: info, format: json, file: { path: logs/xks-proxy.log, rotate: size, "
            "max_size_mb: 1, max_files: 2 } }")
        daemon = Daemon(self.binary, self.demo, config=cfg, log_name="rotate-stdout.log").start()
        try:
            daemon.wait_ready()
            client = Client(self.demo)
            current = os.path.join(self.logs, "xks-proxy.log")
            first, second, third = (os.path.join(self.logs, f"xks-proxy.{i}.log") for i in (1, 2, 3))
            sent = []
            # Until the log has rotated three times (.2 has been pushed out once), in bursts.
            deadline = time.monotonic() + 240
            while time.monotonic() < deadline:
                sent += self.health_burst(Client(self.demo), f"rot{len(sent):06d}", 500)
                lines = sum(len(json_lines(p)) for p in (current, first, second) if os.path.exists(p))
                if os.path.exists(second) and lines < len(sent):
                    break  # something was deleted: at least three rotations
            else:
                self.fail(f"no third rotation after {len(sent)} requests")
        finally:
            self.assertEqual(daemon.stop(), 0, daemon.log_tail())

        self.assertFalse(os.path.exists(third), "more rotated files than max_files")
        access = []
        for path in (second, first, current):  # oldest first
            self.assertLessEqual(os.path.getsize(path), MIB, path)
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o640, path)
            access += [j["kmsRequestId"] for j in json_lines(path) if j.get("event") == "access"]
        # The kept lines are exactly the newest requests, in order: none lost at a rotation.
        self.assertGreater(len(access), 2 * MIB // 1000)
        self.assertEqual(access, sent[-len(access):])
        # Nothing of it on stdout.
        with open(daemon.log_path) as f:
            self.assertNotIn('"event":"access"', f.read())

    def test_reload_moves_the_log_and_refuses_an_unopenable_path(self):
        first = self.config_with_logging(
            "reload.yaml", "{ level: info, format: json, file: { path: logs/before.log } }")
        daemon = Daemon(self.binary, self.demo, config=first, log_name="reload-stdout.log").start()
        try:
            daemon.wait_ready()
            client = Client(self.demo)
            self.health_burst(client, "before", 3)
            # Same file name for the daemon: rewrite the config it was started with.
            with open(first, "w") as f:
                f.write(re.sub(r"^logging: \{.*\}$",
                               "logging: { level: info, format: text, file: { path: logs/after.log, "
                               "rotate: daily, daily_at: \"03:00\" } }",
                               self.good_config, flags=re.M))
            daemon.proc.send_signal(signal.SIGHUP)
            after = self.wait_for_file(lambda: [p for p in os.listdir(self.logs)
                                                if p.startswith("after_")])
            self.assertRegex(after[0], r"^after_\d{4}-\d{2}-\d{2}\.log$")
            self.health_burst(client, "after", 3)
            self.assertRegex(read(os.path.join(self.logs, after[0])), r"info access kmsRequestId=after-000002 ")
            before = [j.get("kmsRequestId") for j in json_lines(os.path.join(self.logs, "before.log"))]
            self.assertIn("before-000002", before)
            self.assertNotIn("after-000000", before)

            # A file name the kernel refuses (ENAMETOOLONG; even for root) refuses the
            # reload; the log stays where it was.
            with open(first, "w") as f:
                f.write(re.sub(r"^logging: \{.*\}$",
                               "logging: { level: info, format: text, file: { path: logs/"
                               + "n" * 300 + ".log } }", self.good_config, flags=re.M))
            daemon.proc.send_signal(signal.SIGHUP)
            current = os.path.join(self.logs, after[0])
            self.wait_for_file(lambda: "reload_refused" in read(current))
            refused = [l for l in read(current).splitlines() if "reload_refused" in l][0]
            self.assertIn("logging.file.path: cannot open", refused)
            self.health_burst(client, "still", 1)
            self.assertIn("kmsRequestId=still-000000", read(current))
        finally:
            self.assertEqual(daemon.stop(), 0, daemon.log_tail())

    def test_missing_log_folder_stops_the_start(self):
        cfg = self.config_with_logging(
            "nofolder.yaml", "{ level: info, format: json, file: { path: no-such-folder/x.log } }")
        rc, out = Daemon(self.binary, self.demo, config=cfg, log_name="refused.log").run_to_exit()
        self.assertEqual(rc, 78, out)
        self.assertIn("nofolder.yaml", out)
        self.assertIn("logging.file.path", out)
        self.assertIn("does not exist", out)

    @staticmethod
    def wait_for_file(probe, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            time.sleep(0.05)
        raise AssertionError("timed out waiting for the log")


if __name__ == "__main__":
    unittest.main()
