#!/usr/bin/env bash
# The style check `make test` runs (ctest: style_check): clang-format (.clang-format
# at the root) must leave every C++ file of the tree unchanged, and clang-tidy
# (.clang-tidy) must report nothing on the source files a change touches.
#
# Usage: scripts/check-style.sh [--fix] [--all] [BASE]
#   BASE   the change is everything since BASE, committed or not (env
#          XKS_STYLE_BASE). Default: where the branch left its upstream, or left
#          the local `main` when on another branch; on main itself, what is
#          uncommitted.
#   --all  clang-tidy on every source file instead of the touched ones (slow)
#   --fix  apply clang-format in place instead of checking
# Env: XKS_TIDY_BUILD  build tree whose compile_commands.json clang-tidy reads
#                      (default: build/test)
set -euo pipefail
cd "$(dirname "$0")/.."

fix=0 all=0 base=${XKS_STYLE_BASE:-}
while [ $# -gt 0 ]; do
  case $1 in
    --fix) fix=1 ;;
    --all) all=1 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "check-style.sh: unknown option '$1'" >&2; exit 2 ;;
    *) base=$1 ;;
  esac
  shift
done

for tool in clang-format clang-tidy git; do
  command -v "$tool" >/dev/null || {
    echo "check-style.sh: '$tool' not found (scripts/install-deps.sh test installs it)" >&2; exit 1; }
done

mapfile -t cxx < <(git ls-files -co --exclude-standard -- '*.cpp' '*.hpp' '*.h')
if [ "$fix" = 1 ]; then
  clang-format -i "${cxx[@]}"
  exit 0
fi

status=0
# 1. Formatting: the whole tree (fast), so that no file drifts.
if ! clang-format --dry-run --Werror "${cxx[@]}" 2>/tmp/check-style.$$.fmt; then
  echo "check-style.sh: clang-format would change these files (fix: scripts/check-style.sh --fix):" >&2
  grep -oE '^[^:]+\.(cpp|hpp|h)' /tmp/check-style.$$.fmt | sort -u | sed 's/^/  /' >&2
  status=1
fi
rm -f /tmp/check-style.$$.fmt

# 2. clang-tidy: the translation units the change touches. A touched header
# brings in every source file that includes it directly.
build=${XKS_TIDY_BUILD:-build/test}
if [ ! -f "$build/compile_commands.json" ]; then
  echo "check-style.sh: $build/compile_commands.json is missing (scripts/build.sh test writes it)" >&2
  exit 1
fi
if [ "$all" = 1 ]; then
  mapfile -t tidy < <(git ls-files -- 'src/*.cpp')
else
  if [ -z "$base" ]; then
    branch=$(git symbolic-ref -q --short HEAD || true)
    if git rev-parse -q --verify '@{upstream}' >/dev/null 2>&1; then
      base=$(git merge-base HEAD '@{upstream}')
    elif [ -n "$branch" ] && [ "$branch" != main ] && git rev-parse -q --verify main >/dev/null; then
      base=$(git merge-base HEAD main)
    else
      base=HEAD
    fi
  fi
  mapfile -t touched < <({ git diff --name-only --diff-filter=ACMR "$base" -- 'src/*' 'include/*'
                          git ls-files -o --exclude-standard -- 'src/*' 'include/*'; } | sort -u)
  tidy=()
  for f in "${touched[@]}"; do
    case $f in
      src/*.cpp) tidy+=("$f") ;;
      include/*.hpp)
        mapfile -t users < <(git grep -l --fixed-strings "#include \"${f#include/}\"" -- 'src/*.cpp')
        tidy+=("${users[@]}") ;;
    esac
  done
  [ ${#tidy[@]} -eq 0 ] || mapfile -t tidy < <(printf '%s\n' "${tidy[@]}" | sort -u)
fi
if [ ${#tidy[@]} -eq 0 ]; then
  echo "check-style.sh: clang-format clean; no source file touched since ${base:-HEAD}: clang-tidy not run"
  exit "$status"
fi
echo "check-style.sh: clang-tidy on ${#tidy[@]} file(s) touched since ${base:-the start}"
# -Wno-unknown-warning-option: the compile commands are g++'s.
if ! printf '%s\n' "${tidy[@]}" |
    xargs -P "$(nproc)" -n 2 clang-tidy -p "$build" --quiet \
      --extra-arg=-Wno-unknown-warning-option 2>/dev/null; then
  echo "check-style.sh: clang-tidy found the problems above (.clang-tidy lists the checks)" >&2
  status=1
fi
exit "$status"
