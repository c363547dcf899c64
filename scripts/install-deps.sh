#!/usr/bin/env bash
# Installs the Debian packages xks-proxy needs, only those that are missing.
# Usage: scripts/install-deps.sh [build|test|run|bench|fuzz|runtime|demo]   (default: test)
#   runtime  what the built binaries need to run, without compilers or headers
#            (the container image's final stage; the Debian package's Depends)
#   demo     on top of runtime: what scripts/provision-demo.sh needs to compile its
#            small PKCS#11 key helper (the container's SoftHSM2 demo)
# Runs 'apt-get update' only when a package is missing; needs root for that.
set -euo pipefail

profile=${1:-test}
build=(build-essential cmake pkg-config help2man libboost1.81-dev libssl-dev nlohmann-json3-dev
       libspdlog-dev libfmt-dev libyaml-cpp-dev libp11-kit-dev libsystemd-dev)
runtime=(softhsm2 opensc openssl curl)
libs=(libssl3 libspdlog1.10 libfmt9 libyaml-cpp0.7 libsystemd0 ca-certificates)
demo=(gcc libc6-dev pkg-config libp11-kit-dev)
# systemd: systemd-analyze, -sysusers and -tmpfiles check the unit (tests/integration/test_systemd.py).
# haproxy: the load balancer of the fleet test; prometheus: promtool and the server the
# alert rules and the scrape test run on; lintian: checks the Debian package.
# libnss3 + libnss3-tools: NSS softoken (libsoftokn3.so) and certutil, the second real
# PKCS#11 implementation; opencryptoki: a soft token without CKM_AES_GCM (test_no_gcm.py);
# iproute2: the docs test brings up loopback in its own network namespace.
# python3-yaml: the Kubernetes manifests' structural test (test_kubernetes.py).
# python3-cryptography: AES-GCM test vectors of other proxies' layouts (test_key_versions.py).
# clang-format, clang-tidy: the style check (scripts/check-style.sh).
testing=(libgtest-dev googletest python3 python3-botocore systemd haproxy prometheus lintian
         libnss3 libnss3-tools opencryptoki iproute2 python3-yaml python3-cryptography
         clang-format clang-tidy)
fuzz=(clang libclang-rt-14-dev)  # libFuzzer (make fuzz)
bench=(nginx wrk linux-perf valgrind)  # perf/valgrind: BENCH_PERF=1 profiles

case "$profile" in
  build)   want=("${build[@]}") ;;
  run)     want=("${build[@]}" "${runtime[@]}") ;;
  test)    want=("${build[@]}" "${runtime[@]}" "${testing[@]}") ;;
  bench)   want=("${build[@]}" "${runtime[@]}" "${testing[@]}" "${bench[@]}") ;;
  fuzz)    want=("${build[@]}" "${fuzz[@]}") ;;
  runtime) want=("${libs[@]}" "${runtime[@]}") ;;
  demo)    want=("${libs[@]}" "${runtime[@]}" "${demo[@]}") ;;
  *) echo "install-deps.sh: unknown profile '$profile' (build|run|test|bench|fuzz|runtime|demo)" >&2; exit 2 ;;
esac

missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
  command -v sudo >/dev/null || { echo "install-deps: missing packages and not root: ${missing[*]}" >&2; exit 1; }
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
