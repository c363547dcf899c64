"""The container build, checked without a Docker engine: docker/Dockerfile may only
RUN scripts that `make run` / `make test` also run (so the image is built the way
the tests build), every file it COPYs exists, the scripts parse, and the entrypoint
really provisions and serves the SoftHSM2 demo when no configuration is mounted.
"""

import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import unittest

from harness import REPO, Demo, find_binary, find_leaks, free_port
import http.client
import ssl
import time

DOCKERFILE = os.path.join(REPO, "docker", "Dockerfile")
ENTRYPOINT = os.path.join(REPO, "docker", "entrypoint.sh")


def dockerfile_instructions(path):
    """[(INSTRUCTION, arguments)] with line continuations joined, comments dropped."""
    out, current = [], ""
    with open(path) as f:
        for raw in f:
            line = raw.rstrip("\n")
            if not current and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.endswith("\\"):
                current += line[:-1] + " "
                continue
            current += line
            word, _, rest = current.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            current = ""
    return out


def script_refs(text):
    """Repository scripts named in shell text, as repo-relative paths (scripts/x.sh)."""
    return sorted(set("scripts/" + m for m in re.findall(r"scripts/([\w.-]+\.sh)\b", text)))


def make_closure():
    """Scripts reached from the Makefile's run and test targets, transitively."""
    with open(os.path.join(REPO, "Makefile")) as f:
        makefile = f.read()
    recipes = re.findall(r"^(?:run|test):.*\n((?:\t.*\n?)*)", makefile, re.M)
    todo = [s for r in recipes for s in script_refs(r)]
    seen = set()
    while todo:
        s = todo.pop()
        if s in seen:
            continue
        seen.add(s)
        path = os.path.join(REPO, s)
        if os.path.exists(path):
            with open(path) as f:
                todo.extend(script_refs(f.read()))
    return seen


class DockerfileTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.instructions = dockerfile_instructions(DOCKERFILE)
        cls.closure = make_closure()

    def runs(self):
        return [args for word, args in self.instructions if word == "RUN"]

    def test_make_targets_reach_the_scripts(self):
        for s in ("scripts/run-demo.sh", "scripts/test.sh", "scripts/install-deps.sh",
                  "scripts/build.sh", "scripts/provision-demo.sh"):
            self.assertIn(s, self.closure)

    def test_runs_only_scripts_that_make_uses(self):
        used = [s for r in self.runs() for s in script_refs(r)]
        self.assertIn("scripts/install-deps.sh", used)
        self.assertIn("scripts/build.sh", used)
        for s in used:
            with self.subTest(script=s):
                self.assertTrue(os.access(os.path.join(REPO, s), os.X_OK), f"{s} missing or not executable")
                self.assertIn(s, self.closure, f"{s} is RUN by the Dockerfile but not by make run/test")
        # The build stage builds exactly as `make run` does.
        self.assertTrue(any(re.search(r"scripts/build\.sh release\b", r) for r in self.runs()))
        with open(os.path.join(REPO, "scripts", "run-demo.sh")) as f:
            self.assertRegex(f.read(), r"scripts/build\.sh release\b")
        with open(os.path.join(REPO, "scripts", "test.sh")) as f:
            self.assertRegex(f.read(), r"scripts/build\.sh test\b")

    def test_run_commands_are_only_scripts_and_plain_tools(self):
        """Apart from the repository's scripts, RUN lines use only coreutils-level
        tools: the build logic lives in scripts/, not in the Dockerfile."""
        allowed = {"rm", "strip", "groupadd", "useradd", "install", "if", "then", "else", "fi",
                   "profile=demo;", "profile=runtime;", "[", "&&"}
        for r in self.runs():
            for cmd in re.split(r"&&|;|\bthen\b|\belse\b", r):
                words = shlex.split(cmd)
                if not words:
                    continue
                head = words[0]
                with self.subTest(command=cmd.strip()[:60]):
                    self.assertTrue(head in allowed or head.endswith(".sh") or head.startswith("profile="),
                                    f"unexpected command {head!r} in RUN")

    def test_install_deps_profiles_exist(self):
        profiles = set()
        for r in self.runs() + [ENTRYPOINT]:
            profiles.update(re.findall(r"install-deps\.sh\s+\"?\$?(\w+)", r))
        profiles.discard("profile")
        profiles.update({"demo", "runtime"})  # chosen through $profile
        for p in sorted(profiles):
            with self.subTest(profile=p):
                res = subprocess.run(["bash", "-c", f'grep -qE "^  {p}\\)" scripts/install-deps.sh'], cwd=REPO)
                self.assertEqual(res.returncode, 0, f"install-deps.sh has no profile {p}")

    def test_copied_files_exist(self):
        for word, args in self.instructions:
            if word != "COPY" or "--from=" in args:
                continue
            srcs = shlex.split(args)[:-1]
            for s in srcs:
                with self.subTest(src=s):
                    self.assertTrue(os.path.exists(os.path.join(REPO, s)), f"COPY {s}: not in the repository")

    def test_scripts_parse(self):
        for s in sorted(self.closure) + ["docker/entrypoint.sh"]:
            with self.subTest(script=s):
                res = subprocess.run(["bash", "-n", os.path.join(REPO, s)], stderr=subprocess.PIPE, text=True)
                self.assertEqual(res.returncode, 0, res.stderr)

    def test_healthcheck_and_port(self):
        text = " ".join(f"{w} {a}" for w, a in self.instructions)
        self.assertRegex(text, r"HEALTHCHECK .*curl -fsk https://127\.0\.0\.1:8443/ping")
        self.assertRegex(text, r"EXPOSE 8443\b")
        self.assertRegex(text, r"XKS_LISTEN=0\.0\.0\.0:8443\b")
        self.assertRegex(text, r"USER 10001")
        self.assertEqual(len(re.findall(r"^FROM debian:bookworm|^FROM \$\{DEBIAN_IMAGE\}",
                                        "\n".join(f"{w} {a}" for w, a in self.instructions), re.M)), 2)
        with open(os.path.join(REPO, "scripts", "provision-demo.sh")) as f:
            self.assertIn("ping_path: /ping", f.read(), "the demo's ping path is what HEALTHCHECK probes")


class EntrypointTests(unittest.TestCase):
    """docker/entrypoint.sh outside a container: no config -> demo provisioned and served."""

    def test_demo_at_first_start_then_reused(self):
        binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        if shutil.which("cc") is None:
            self.skipTest("no C compiler: provision-demo.sh cannot build its key helper")
        tmp = tempfile.mkdtemp(prefix="xks-it-entrypoint-")
        bindir = os.path.join(tmp, "bin")
        os.makedirs(bindir)
        os.symlink(os.path.abspath(binary), os.path.join(bindir, "xks-proxy"))
        port = free_port()
        demo_dir = os.path.join(tmp, "volume", "demo")
        env = dict(os.environ, PATH=bindir + os.pathsep + os.environ["PATH"],
                   XKS_CONFIG=os.path.join(tmp, "absent.yaml"), XKS_DEMO_DIR=demo_dir,
                   XKS_LISTEN=f"127.0.0.1:{port}", XKS_METRICS_LISTEN=f"127.0.0.1:{free_port()}",
                   XKS_SCRIPTS_DIR=os.path.join(REPO, "scripts"))
        supp = os.path.join(os.path.dirname(__file__), "lsan.supp")
        env.setdefault("LSAN_OPTIONS", f"suppressions={supp}:print_suppressions=0")
        try:
            for round_ in (1, 2):
                log_path = os.path.join(tmp, f"entrypoint-{round_}.log")
                with open(log_path, "wb") as log:
                    proc = subprocess.Popen([ENTRYPOINT], env=env, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=tmp)
                    try:
                        self.wait_ping(proc, port, os.path.join(demo_dir, "tls", "ca.pem"), log_path)
                    finally:
                        if proc.poll() is None:
                            proc.send_signal(signal.SIGTERM)
                        rc = proc.wait(30)
                with open(log_path, errors="replace") as f:
                    out = f.read()
                self.assertEqual(rc, 0, out[-2000:])
                if round_ == 1:
                    secrets_ = []
                    for n in os.listdir(os.path.join(demo_dir, "secrets")):
                        with open(os.path.join(demo_dir, "secrets", n)) as f:
                            secrets_.append(f.read().strip())
                else:
                    self.assertNotIn("created", out.split("xks-proxy-entrypoint: key store")[0],
                                     "second start re-provisioned the demo")
                self.assertEqual(find_leaks(out, [], secrets_), [])
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def wait_ping(self, proc, port, ca, log_path, timeout=120):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                with open(log_path, errors="replace") as f:
                    self.fail(f"entrypoint exited with {proc.returncode}:\n{f.read()[-2000:]}")
            if os.path.exists(ca):
                try:
                    ctx = ssl.create_default_context(cafile=ca)
                    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=2)
                    conn.request("GET", "/ping")
                    if conn.getresponse().status == 200:
                        conn.close()
                        return
                    conn.close()
                except (OSError, http.client.HTTPException, ssl.SSLError):
                    pass
            time.sleep(0.2)
        self.fail("the demo did not answer GET /ping")


if __name__ == "__main__":
    unittest.main()
