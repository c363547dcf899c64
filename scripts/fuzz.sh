#!/usr/bin/env bash
# make fuzz: build the libFuzzer targets with clang in build/fuzz and run each
# for a bounded time.
#
# Usage: scripts/fuzz.sh [--short] [--time SECONDS] [TARGET...]
#   default      60 s per target (make fuzz)
#   --short      10 s per target
#   --time N     N seconds per target
#   TARGET       fuzz_base64 fuzz_sigv4 fuzz_router fuzz_dto fuzz_config (default: all)
# Env: XKS_FUZZ_JOBS  build parallelism (default: nproc)
#
# Before fuzzing, every input under tests/fuzz/regressions/<target>/ is replayed
# (each once) and must pass. Seeds are read from tests/fuzz/corpus/<target>/
# (committed); new inputs go to build/fuzz/corpus/<target>/ (not committed). A
# crash leaves build/fuzz/artifacts/<target>/crash-*: copy it into
# tests/fuzz/regressions/<target>/ once fixed, so the short run replays it.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=60
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --short) seconds=10 ;;
    --time) seconds=${2:?--time needs seconds}; shift ;;
    -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
    fuzz_*) targets+=("$1") ;;
    *) echo "fuzz.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done
all=(fuzz_base64 fuzz_sigv4 fuzz_router fuzz_dto fuzz_config)
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

scripts/install-deps.sh fuzz

build=$root/build/fuzz
# A separate build: libFuzzer needs clang, the main build uses g++. Only the
# fuzz targets and the libraries they link are built (no daemon, no tests).
CC=clang CXX=clang++ cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DXKS_FUZZ=ON -DXKS_BUILD_TESTS=OFF -DBUILD_TESTING=OFF >"$build.configure.log" 2>&1 || {
  cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" --target "${targets[@]}" -j"${XKS_FUZZ_JOBS:-$(nproc)}"

export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:allocator_may_return_null=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}

failed=()
summary=()
for t in "${targets[@]}"; do
  bin=$build/tests/fuzz/$t
  seeds=$root/tests/fuzz/corpus/$t
  regressions=$root/tests/fuzz/regressions/$t
  work=$build/corpus/$t
  artifacts=$build/artifacts/$t
  mkdir -p "$work" "$artifacts" "$seeds"
  log=$build/$t.log

  # 1. Regression inputs: each must run clean.
  shopt -s nullglob
  reg=("$regressions"/*)
  shopt -u nullglob
  if [ ${#reg[@]} -gt 0 ]; then
    if ! "$bin" -runs=1 "${reg[@]}" >"$build/$t.regressions.log" 2>&1; then
      echo "fuzz.sh: $t: a regression input fails again; see $build/$t.regressions.log" >&2
      tail -30 "$build/$t.regressions.log" >&2
      failed+=("$t (regression)")
      continue
    fi
  fi

  # 2. Fuzz for the time budget. -timeout: one input taking over 10 s is a hang.
  echo "fuzz.sh: $t for ${seconds}s (seeds: tests/fuzz/corpus/$t, ${#reg[@]} regression inputs)"
  set +e
  "$bin" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -max_len=65536 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "$seeds" >"$log" 2>&1
  rc=$?
  set -e
  execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+)/\1/p' "$log" | tail -1)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)
  if [ $rc -ne 0 ]; then
    echo "fuzz.sh: $t FAILED (exit $rc); log $log; artifacts in $artifacts/" >&2
    grep -E 'ERROR|SUMMARY|runtime error|Test unit written|abort|deadly signal' "$log" | head -20 >&2 || true
    failed+=("$t")
    summary+=("$t: FAILED after ${execs:-?} execs")
  else
    summary+=("$t: ok, ${execs:-?} execs in ${seconds}s, coverage ${cov:-?} edges")
  fi
done

echo
printf 'fuzz.sh: %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: failing: ${failed[*]}" >&2
  exit 1
fi
