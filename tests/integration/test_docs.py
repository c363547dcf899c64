"""The docs test: every fenced shell block (```sh, ```bash, ```shell, ```console) of
README.md and docs/*.md runs verbatim with bash, from a checkout-like directory, against a
freshly provisioned demo served by the built daemon — as a reader runs them after
`make run`. So are the commands `make run` prints (scripts/demo-next-steps.sh).

A block that cannot run here is marked in the Markdown by the line right before its fence:
    <!-- not-run: why (e.g. needs your own HSM) -->
and is counted as skipped with that reason. Everything else must exit 0.

The checkout-like directory is a temporary tree of symlinks to this repository's top-level
entries, except run/ (the provisioned demo) and build/release/ (links to the binaries under
test), so `run/xks-proxy.yaml`, `run/tls/ca.pem` and `build/release/xksctl` resolve as in a
real checkout. The documented ports (8443, metrics 9464) are used as written: CTest runs
this module in its own network namespace (`unshare -n`), where they are always free.
Commands run without SOFTHSM2_CONF in their environment: the demo configuration has to
say where its token is (hsm.environment).
"""

import dataclasses
import glob
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from harness import HERE, REPO, Daemon, Demo, find_binary

SHELL_LANGS = {"sh", "bash", "shell", "console"}
NOT_RUN = re.compile(r"^\s*<!--\s*not-run:\s*(\S.*?)\s*-->\s*$")
FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
DEMO_PORT = 8443      # as README.md and scripts/run-demo.sh write it
METRICS_PORT = 9464
BLOCK_TIMEOUT = 60
# Printed by bash's ERR trap: the script line and the command that failed.
FAILED_MARK = "__docs_test_failed__"


@dataclasses.dataclass
class Block:
    file: str           # path relative to the repository
    line: int           # line of the first line of the block's body (1-based)
    lang: str
    body: list          # the block's lines
    skip: str = ""      # the not-run reason, if marked

    def script(self):
        """The bash script of the block; for console blocks the `$ ` lines (and their
        continuations), each at its own line so that failures map back to the file."""
        if self.lang != "console":
            return "\n".join(self.body)
        out, continued = [], False
        for text in self.body:
            if continued or text.startswith("$ "):
                out.append(text if continued else text[2:])
                continued = text.endswith("\\")
            else:
                out.append("")  # output line: keeps the line numbers aligned
        return "\n".join(out)

    def commands(self):
        """The non-empty, non-comment lines of the script, for the report."""
        return [l.strip() for l in self.script().splitlines() if l.strip() and not l.strip().startswith("#")]


def extract(path, root=REPO):
    """The fenced shell blocks of one Markdown file, with their not-run marks."""
    rel = os.path.relpath(path, root)
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, lang = m.group(1), m.group(2).lower()
        start = i + 1
        j = start
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if lang in SHELL_LANGS:
            mark = NOT_RUN.match(lines[i - 1]) if i > 0 else None
            body = [l[len(indent):] if l.startswith(indent) else l for l in lines[start:j]]
            blocks.append(Block(rel, start + 1, lang, body, mark.group(1) if mark else ""))
        i = j + 1
    return blocks


def doc_files(root=REPO):
    return [os.path.join(root, "README.md")] + sorted(glob.glob(os.path.join(root, "docs", "*.md")))


def run_script(script, cwd, env, timeout=BLOCK_TIMEOUT):
    """Runs `script` with bash -e -o pipefail. Returns (rc, output, failed_line, failed_command);
    failed_line is the 1-based line of the script whose command failed, if bash said."""
    trap = f"trap 'echo \"{FAILED_MARK} $LINENO $BASH_COMMAND\" >&2' ERR\n"
    try:
        res = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", trap + script], cwd=cwd, env=env,
                             stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             timeout=timeout)
    except subprocess.TimeoutExpired as e:
        out = (e.output or b"").decode("utf-8", "replace")
        return None, out + f"\n(timed out after {timeout} s)", None, None
    out = res.stdout.decode("utf-8", "replace")
    line = cmd = None
    kept = []
    for text in out.splitlines():
        m = re.match(FAILED_MARK + r" (\d+) (.*)$", text)
        if m:
            line, cmd = int(m.group(1)) - 1, m.group(2)  # the trap is line 1
        else:
            kept.append(text)
    return res.returncode, "\n".join(kept), line, cmd


def run_block(block, cwd, env):
    """None if the block succeeded, else a report naming the file, line and command."""
    rc, out, line, cmd = run_script(block.script(), cwd, env)
    if rc == 0:
        return None
    where = block.line + (line - 1 if line else 0)
    if not cmd:
        cmd = block.commands()[0] if block.commands() else "(empty block)"
    status = "timed out" if rc is None else f"exit {rc}"
    tail = "\n".join(out.splitlines()[-25:])
    return f"{block.file}:{where}: `{cmd}` failed ({status}):\n{tail}"


def next_steps_commands(text):
    """The commands scripts/demo-next-steps.sh prints: indented lines with their
    continuations."""
    cmds, current = [], None
    for line in text.splitlines():
        if current is not None:
            current.append(line.strip())
            if not line.endswith("\\"):
                cmds.append("\n".join(current))
                current = None
        elif line.startswith("  ") and not line.startswith("   "):
            current = [line.strip()]
            if not line.endswith("\\"):
                cmds.append(current[0])
                current = None
    return cmds


def command_env():
    env = {k: v for k, v in os.environ.items() if k != "SOFTHSM2_CONF"}
    supp = os.path.join(HERE, "lsan.supp")
    if os.path.exists(supp) and "LSAN_OPTIONS" not in env:
        env["LSAN_OPTIONS"] = f"suppressions={supp}:print_suppressions=0"
    return env


class ExtractionAndReporting(unittest.TestCase):
    """The test's own machinery, on Markdown written here: it must catch a broken block."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="xks-docs-unit-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def write(self, text):
        path = os.path.join(self.tmp, "doc.md")
        with open(path, "w") as f:
            f.write(text)
        return extract(path, self.tmp)

    def test_a_broken_command_is_reported_with_file_line_and_command(self):
        blocks = self.write("# t\n\n```sh\necho fine\nls /no/such/dir/xks-docs\necho never\n```\n")
        self.assertEqual(len(blocks), 1)
        report = run_block(blocks[0], self.tmp, command_env())
        self.assertIsNotNone(report, "a failing command must fail the block")
        self.assertIn("doc.md:5:", report)
        self.assertIn("`ls /no/such/dir/xks-docs`", report)
        self.assertNotIn("never", report)

    def test_a_failure_inside_a_pipeline_is_caught(self):
        blocks = self.write("```bash\nfalse | cat\n```\n")
        self.assertIn("doc.md:2:", run_block(blocks[0], self.tmp, command_env()) or "")

    def test_a_failing_command_before_echo_is_caught(self):
        # `cmd; echo` (as the README's curl line) must not hide cmd's failure.
        blocks = self.write("```sh\nfalse; echo\n```\n")
        self.assertIsNotNone(run_block(blocks[0], self.tmp, command_env()))

    def test_marks_languages_and_console_prompts(self):
        blocks = self.write("<!-- not-run: needs your own HSM -->\n```sh\nexit 1\n```\n"
                            "```yaml\na: 1\n```\n```\nuntyped\n```\n"
                            "```console\n$ echo one \\\n  two\none two\n$ true\n```\n")
        self.assertEqual([(b.lang, b.skip) for b in blocks], [("sh", "needs your own HSM"), ("console", "")])
        self.assertEqual(blocks[1].commands(), ["echo one \\", "two", "true"])
        self.assertIsNone(run_block(blocks[1], self.tmp, command_env()))

    def test_next_steps_parsing(self):
        text = "intro:\n\n  curl a \\\n    b; echo\n\n   not a command\n  xksctl doctor\n"
        self.assertEqual(next_steps_commands(text), ["curl a \\\nb; echo", "xksctl doctor"])


class DocsAgainstTheDemo(unittest.TestCase):
    """Every runnable shell block of the docs, verbatim, against a fresh demo."""

    @classmethod
    def setUpClass(cls):
        for port in (DEMO_PORT, METRICS_PORT):
            with socket.socket() as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    raise AssertionError(
                        f"port {port} is in use: run this test as CTest does, in its own network "
                        "namespace (unshare -n sh -c 'ip link set lo up && python3 -m unittest test_docs')")
        cls.proxy_bin = find_binary("xks-proxy", "XKS_PROXY_BIN")
        cls.xksctl_bin = find_binary("xksctl", "XKSCTL_BIN")
        cls.tmp = tempfile.mkdtemp(prefix="xks-docs-")
        cls.checkout = os.path.join(cls.tmp, "checkout")
        os.makedirs(os.path.join(cls.checkout, "build", "release"))
        for name in os.listdir(REPO):
            if name not in ("run", "build", ".git"):
                os.symlink(os.path.join(REPO, name), os.path.join(cls.checkout, name))
        os.symlink(cls.proxy_bin, os.path.join(cls.checkout, "build", "release", "xks-proxy"))
        os.symlink(cls.xksctl_bin, os.path.join(cls.checkout, "build", "release", "xksctl"))
        cls.demo = Demo(os.path.join(cls.checkout, "run"), DEMO_PORT, metrics_port=METRICS_PORT)
        cls.daemon = Daemon(cls.proxy_bin, cls.demo).start()
        try:
            cls.daemon.wait_ready()
        except BaseException:
            cls.daemon.stop()
            raise
        cls.env = command_env()

    @classmethod
    def tearDownClass(cls):
        rc = cls.daemon.stop()
        if rc == 0:
            shutil.rmtree(cls.tmp, ignore_errors=True)
        else:
            print(f"xks-proxy exited with {rc}; kept {cls.tmp}", file=sys.stderr)

    def test_every_runnable_block_succeeds(self):
        started = time.monotonic()
        ran, skipped, failures = [], [], []
        for path in doc_files():
            for block in extract(path):
                where = f"{block.file}:{block.line}"
                if block.skip:
                    skipped.append(f"{where}: {block.skip}: {' ; '.join(block.commands())}")
                    continue
                ran.append(f"{where}: {' ; '.join(block.commands())}")
                report = run_block(block, self.checkout, self.env)
                if report:
                    failures.append(report)
        took = time.monotonic() - started
        print(f"\ndocs test: ran {len(ran)} block(s), skipped {len(skipped)}, in {took:.1f} s", file=sys.stderr)
        for line in ran:
            print(f"  ran     {line}", file=sys.stderr)
        for line in skipped:
            print(f"  skipped {line}", file=sys.stderr)
        self.assertGreaterEqual(len(ran), 5, "the docs lost their runnable examples")
        self.assertEqual(failures, [], "documented commands that fail:\n\n" + "\n\n".join(failures))

    def test_what_make_run_prints_next_works(self):
        res = subprocess.run([os.path.join(self.checkout, "scripts", "demo-next-steps.sh"), self.checkout],
                             env=dict(self.env, XKS_LISTEN=f"127.0.0.1:{DEMO_PORT}",
                                      XKS_METRICS_LISTEN=f"127.0.0.1:{METRICS_PORT}"),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
        self.assertEqual(res.returncode, 0, res.stdout)
        cmds = next_steps_commands(res.stdout)
        # In the order a newcomer needs them: health, encrypt, doctor; then the import file.
        self.assertEqual(len(cmds), 3, res.stdout)
        self.assertIn("/health", cmds[0])
        self.assertIn("call encrypt", cmds[1])
        self.assertIn("doctor", cmds[2])
        import_file = os.path.join(self.checkout, "run", "kms-proxy-config.json")
        self.assertIn(import_file, res.stdout)
        self.assertLess(res.stdout.index("doctor"), res.stdout.rindex(import_file))  # last: where the import file is
        self.assertTrue(os.path.isfile(import_file))
        print("\nmake run prints:", file=sys.stderr)
        for cmd in cmds:
            # From anywhere: the printed paths are absolute.
            rc, out, _, failed = run_script(cmd, self.tmp, self.env)
            print(f"  ran     {cmd.splitlines()[0][:110]}", file=sys.stderr)
            self.assertEqual(rc, 0, f"scripts/demo-next-steps.sh prints `{failed or cmd}`, which fails:\n{out}")

    def test_doctor_on_the_stock_demo_has_no_fail(self):
        rc, out, _, _ = run_script("build/release/xksctl doctor --config run/xks-proxy.yaml", self.checkout, self.env)
        summary = [l for l in out.splitlines() if l.startswith("doctor:")]
        print(f"\n{summary[-1] if summary else '(no summary)'}", file=sys.stderr)
        self.assertEqual(rc, 0, out)
        self.assertRegex(summary[-1], r"^doctor: 0 FAIL, ")
        for key in ("demo-encrypt-only", "demo-decrypt-only", "demo-no-usage"):
            self.assertRegex(out, rf"PASS .*key {key}: .*as expect_usage says", out)


if __name__ == "__main__":
    unittest.main()
