"""Runs one integration module, or a part of it, as `python3 -m unittest -v MODULE` would.

Usage: run_module.py MODULE
Env: XKS_IT_ONLY  space-separated fnmatch patterns: run only the tests whose id
                  (module.Class.test_name) matches one of them
     XKS_IT_SKIP  the same, for the tests to leave out

CMake registers a module that measures latency as two tests: its timed cases
alone (RUN_SERIAL, XKS_IT_ONLY) and the rest in parallel with other modules
(XKS_IT_SKIP). A pattern of XKS_IT_ONLY that matches no test is an error, so that
a renamed test cannot silently drop out of both halves.
"""
import fnmatch
import os
import sys
import unittest


def flatten(suite):
    for item in suite:
        if isinstance(item, unittest.TestSuite):
            yield from flatten(item)
        else:
            yield item


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    module = sys.argv[1]
    only = os.environ.get("XKS_IT_ONLY", "").split()
    skip = os.environ.get("XKS_IT_SKIP", "").split()
    tests = list(flatten(unittest.defaultTestLoader.loadTestsFromName(module)))
    for pattern in only + skip:
        if not any(fnmatch.fnmatchcase(t.id(), pattern) for t in tests):
            print(f"run_module.py: no test of {module} matches '{pattern}'", file=sys.stderr)
            return 2
    chosen = [t for t in tests
              if (not only or any(fnmatch.fnmatchcase(t.id(), p) for p in only))
              and not any(fnmatch.fnmatchcase(t.id(), p) for p in skip)]
    result = unittest.TextTestRunner(verbosity=2).run(unittest.TestSuite(chosen))
    return 0 if result.wasSuccessful() else 1


if __name__ == "__main__":
    sys.exit(main())
