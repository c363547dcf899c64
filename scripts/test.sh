#!/usr/bin/env bash
# make test: install what is missing, build with sanitizers and -Werror, run every test
# (unit + integration against the real daemon, TLS and SoftHSM2).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh test
scripts/build.sh test
set +e
# Twice the cores: most integration modules wait on their daemon or peers; the ones
# that measure latency are RUN_SERIAL and still run alone.
ctest --test-dir build/test --output-on-failure -j"$(( $(nproc) * 2 ))" 2>&1 | tee build/test/ctest.log
rc=${PIPESTATUS[0]}
set -e
echo
grep -E '^[0-9]+% tests passed' build/test/ctest.log || echo "ctest: no summary line (rc=$rc)"
exit "$rc"
