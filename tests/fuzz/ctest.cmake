# Included by tests/CMakeLists.txt: `make test` runs every libFuzzer target for a
# short bounded time (scripts/fuzz.sh --short: regression inputs replayed, then
# 10 s each). The fuzzers are built with clang in their own build dir
# (build/fuzz), since this build uses g++; the script exits 77 (skipped) only
# when clang is not installed.
add_test(NAME fuzz_short COMMAND ${CMAKE_SOURCE_DIR}/scripts/fuzz.sh --short)
set_tests_properties(fuzz_short PROPERTIES
  LABELS fuzz
  TIMEOUT 900
  PROCESSORS 2
  SKIP_RETURN_CODE 77
  ENVIRONMENT "XKS_FUZZ_JOBS=2")
