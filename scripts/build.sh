#!/usr/bin/env bash
# Configures and builds xks-proxy the way `make run`, `make test` and the
# container image do, so all three build the same thing.
#
# Usage: scripts/build.sh release|test [TARGET...]
#   release  build/release: Release, no tests; default targets xks-proxy xksctl
#            (make run, docker/Dockerfile)
#   test     build/test: Debug with ASan/UBSan and -Werror, everything (make test)
# Env: XKS_BUILD_JOBS  parallelism (default: nproc)
set -euo pipefail
cd "$(dirname "$0")/.."

kind=${1:-}
[ $# -gt 0 ] && shift
jobs=${XKS_BUILD_JOBS:-$(nproc)}
case "$kind" in
  release)
    cmake -S . -B build/release -DCMAKE_BUILD_TYPE=Release -DXKS_BUILD_TESTS=OFF
    [ $# -gt 0 ] || set -- xks-proxy xksctl
    cmake --build build/release --target "$@" -j"$jobs"
    ;;
  test)
    cmake -S . -B build/test -DCMAKE_BUILD_TYPE=Debug -DXKS_SANITIZE=ON -DXKS_WERROR=ON
    if [ $# -gt 0 ]; then
      cmake --build build/test --target "$@" -j"$jobs"
    else
      cmake --build build/test -j"$jobs"
    fi
    ;;
  *) echo "build.sh: usage: scripts/build.sh release|test [TARGET...]" >&2; exit 2 ;;
esac
