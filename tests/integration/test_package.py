"""The Debian package: `cpack -G DEB` on the build tree under test (cmake/install.cmake),
then dpkg-deb shows what an operator would get: the binaries, the systemd unit
(verified), sysusers/tmpfiles, docs and examples, nothing in /etc, Depends that
cover every library the binaries need, and maintainer scripts that never start
the service.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

from harness import REPO

SANITIZER_LIBS = re.compile(r"^lib(asan|ubsan|lsan|tsan)\.so")


def run(cmd, timeout=300, **kw):
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         timeout=timeout, **kw)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({res.returncode}):\n{res.stdout[-3000:]}")
    return res.stdout


def depends_names(field):
    """Package names of a Depends/Recommends field (alternatives flattened)."""
    return {re.split(r"[\s(:]", alt.strip())[0] for part in field.split(",") for alt in part.split("|")
            if alt.strip()}


class DebPackageTests(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        build = os.environ.get("XKS_BUILD_DIR")
        if not build:
            raise unittest.SkipTest("XKS_BUILD_DIR not set (CTest sets it)")
        config = os.path.join(build, "CPackConfig.cmake")
        if not os.path.exists(config):
            raise unittest.SkipTest("no CPackConfig.cmake: CMakeLists.txt does not include cmake/install.cmake yet")
        for tool in ("cpack", "dpkg-deb", "objdump"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} not installed")
        cls.tmp = tempfile.mkdtemp(prefix="xks-it-package-")
        out = os.path.join(cls.tmp, "out")
        run(["cpack", "-G", "DEB", "--config", config, "-B", out])
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        if len(debs) != 1:
            raise AssertionError(f"expected one .deb in {out}, got {debs}")
        cls.deb = os.path.join(out, debs[0])
        cls.info = run(["dpkg-deb", "-I", cls.deb])
        cls.listing = run(["dpkg-deb", "-c", cls.deb])
        cls.root = os.path.join(cls.tmp, "root")
        run(["dpkg-deb", "-x", cls.deb, cls.root])
        cls.control = os.path.join(cls.tmp, "control")
        run(["dpkg-deb", "-e", cls.deb, cls.control])

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def field(self, name):
        m = re.search(rf"^ {name}: (.*)$", self.info, re.M)
        return m.group(1) if m else None

    def paths(self):
        """Paths in the data archive, without the leading '.'."""
        out = {}
        for line in self.listing.splitlines():
            parts = line.split()
            if len(parts) >= 6:
                out[parts[5].lstrip(".").rstrip("/") or "/"] = (parts[0], parts[1])
        return out

    def test_control_fields(self):
        self.assertEqual(self.field("Package"), "xks-proxy")
        self.assertTrue(self.deb.endswith(".deb") and os.path.basename(self.deb).startswith("xks-proxy_"))
        depends = depends_names(self.field("Depends") or "")
        for pkg in ("libssl3", "libspdlog1.10", "libfmt9", "libyaml-cpp0.7", "libsystemd0"):
            self.assertIn(pkg, depends)
        self.assertIn("softhsm2", depends_names(self.field("Recommends") or ""))

    def test_files(self):
        paths = self.paths()
        for p in ("/usr/bin/xks-proxy", "/usr/bin/xksctl",
                  "/usr/lib/systemd/system/xks-proxy.service",
                  "/usr/lib/sysusers.d/xks-proxy.conf", "/usr/lib/tmpfiles.d/xks-proxy.conf",
                  "/usr/share/doc/xks-proxy/README.md", "/usr/share/doc/xks-proxy/LICENSE",
                  "/usr/share/doc/xks-proxy/operations.md", "/usr/share/doc/xks-proxy/troubleshooting.md",
                  "/usr/share/doc/xks-proxy/examples/xks-proxy.example.yaml",
                  "/usr/share/doc/xks-proxy/examples/softhsm2.yaml",
                  "/usr/share/doc/xks-proxy/examples/policies/deny-all.yaml"):
            with self.subTest(path=p):
                self.assertIn(p, paths)
                self.assertEqual(paths[p][1], "root/root")
        self.assertEqual(paths["/usr/bin/xks-proxy"][0], "-rwxr-xr-x")
        self.assertEqual(paths["/usr/lib/systemd/system/xks-proxy.service"][0], "-rw-r--r--")
        # The configuration is the operator's: nothing that an upgrade could overwrite.
        self.assertEqual([p for p in paths if p.startswith("/etc")], [])

    def test_unit_verifies(self):
        unit_path = os.path.join(self.root, "usr/lib/systemd/system/xks-proxy.service")
        with open(unit_path) as f:
            unit = f.read()
        self.assertIn("ExecStart=/usr/bin/xks-proxy --config /etc/xks-proxy/xks-proxy.yaml", unit)
        self.assertIn("Documentation=file:/usr/share/doc/xks-proxy/operations.md", unit)
        if shutil.which("systemd-analyze") is None:
            self.skipTest("systemd-analyze not installed")
        copy = os.path.join(self.tmp, "xks-proxy.service")
        with open(copy, "w") as f:
            f.write(unit.replace("/usr/bin/xks-proxy ", os.path.join(self.root, "usr/bin/xks-proxy") + " "))
        out = run(["systemd-analyze", "verify", copy], timeout=60)
        self.assertEqual(out.strip(), "")

    def test_depends_cover_needed_libraries(self):
        depends = depends_names(self.field("Depends") or "")
        for name in ("xks-proxy", "xksctl"):
            binary = os.path.join(self.root, "usr/bin", name)
            needed = re.findall(r"^\s*NEEDED\s+(\S+)$", run(["objdump", "-p", binary]), re.M)
            self.assertTrue(needed)
            for lib in needed:
                if SANITIZER_LIBS.match(lib):
                    continue  # the sanitizer build under test; a release package has none
                with self.subTest(binary=name, lib=lib):
                    owners = subprocess.run(["dpkg", "-S", lib], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True).stdout
                    pkgs = {line.split(":")[0] for line in owners.splitlines()
                            if re.search(rf"/{re.escape(lib)}$", line)}
                    self.assertTrue(pkgs, f"no installed package provides {lib}")
                    self.assertTrue(pkgs & depends, f"{lib} comes from {sorted(pkgs)}, none in Depends")

    def test_maintainer_scripts(self):
        for name in ("postinst", "prerm", "postrm"):
            path = os.path.join(self.control, name)
            with self.subTest(script=name):
                self.assertTrue(os.access(path, os.X_OK), f"{name} missing or not executable")
                run(["sh", "-n", path])
        with open(os.path.join(self.control, "postinst")) as f:
            postinst = f.read()
        self.assertIn("systemd-sysusers xks-proxy.conf", postinst)
        self.assertIn("systemd-tmpfiles --create xks-proxy.conf", postinst)
        # Never started or enabled by the package: it has no configuration yet.
        # (Comments and quoted messages to the operator may name the commands.)
        code = "\n".join(line for line in postinst.splitlines() if not line.lstrip().startswith("#"))
        code = re.sub(r'"[^"]*"', '""', code)
        self.assertNotRegex(code, r"systemctl\s+(start|enable|restart)\b|deb-systemd-invoke\s+start")
        # Through deb-systemd-invoke, which honours policy-rc.d (Debian Policy 9.3.3).
        self.assertRegex(code, r"deb-systemd-invoke try-restart xks-proxy")

    def test_man_pages_completion_and_debian_docs(self):
        paths = self.paths()
        for p in ("/usr/share/man/man8/xks-proxy.8.gz", "/usr/share/man/man1/xksctl.1.gz",
                  "/usr/share/bash-completion/completions/xksctl",
                  "/usr/share/doc/xks-proxy/copyright", "/usr/share/doc/xks-proxy/changelog.gz"):
            with self.subTest(path=p):
                self.assertIn(p, paths)
        # The man pages are the binaries' own --help: every option is in them.
        def man_text(page):
            out = run(["man", "-l", "-Tutf8", os.path.join(self.root, page)],
                      env=dict(os.environ, MANWIDTH="100"))
            return re.sub(r".\x08", "", out)  # bold and underline by overstriking

        man = man_text("usr/share/man/man8/xks-proxy.8.gz")
        for option in ("--config", "--check-config", "--version", "SIGHUP"):
            self.assertIn(option, man)
        man = man_text("usr/share/man/man1/xksctl.1.gz")
        for command in ("kms-config", "doctor", "credentials new"):
            self.assertIn(command, man)
        run(["bash", "-n", os.path.join(self.root, "usr/share/bash-completion/completions/xksctl")])

    def test_lintian(self):
        """Debian's package checker: no error, no warning; each override has a reason."""
        if shutil.which("lintian") is None:
            self.skipTest("lintian not installed (scripts/install-deps.sh test)")
        res = subprocess.run(["lintian", "--fail-on", "error,warning", "--show-overrides",
                              "--tag-display-limit", "0", self.deb],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
        print(f"\nlintian {os.path.basename(self.deb)}:\n{res.stdout}", flush=True)
        problems = [l for l in res.stdout.splitlines() if re.match(r"^[EW]: ", l)]
        self.assertEqual(problems, [])
        self.assertEqual(res.returncode, 0, res.stdout)
        # Overrides, if any, live in the package and each says why.
        overrides = os.path.join(self.root, "usr/share/lintian/overrides/xks-proxy")
        if not os.path.exists(overrides):
            return
        with open(overrides) as f:
            lines = f.read().splitlines()
        for i, line in enumerate(lines):
            if line.strip() and not line.startswith("#"):
                with self.subTest(override=line):
                    self.assertTrue(i > 0 and lines[i - 1].startswith("#"),
                                    "an override without a comment giving its reason")


if __name__ == "__main__":
    unittest.main()
