# Included by tests/CMakeLists.txt: `make test` runs every fuzz target through
# standalone_main.cpp (no libFuzzer, so the g++ test build with ASan/UBSan builds
# it): the regression inputs and the seed corpus are replayed, then 3 s of random
# mutations. `make fuzz` (scripts/fuzz.sh, clang + libFuzzer) runs the long,
# coverage-guided runs.
set(xks_fuzz_smoke_targets
  "fuzz_base64\;xks_crypto"
  "fuzz_sigv4\;xks_auth"
  "fuzz_router\;xks_http"
  "fuzz_dto\;xks_api"
  "fuzz_config\;xks_config")
foreach(entry ${xks_fuzz_smoke_targets})
  list(GET entry 0 target)
  list(GET entry 1 lib)
  add_executable(${target}_smoke ${CMAKE_CURRENT_LIST_DIR}/${target}.cpp
                                 ${CMAKE_CURRENT_LIST_DIR}/standalone_main.cpp)
  target_link_libraries(${target}_smoke PRIVATE ${lib})
  target_compile_options(${target}_smoke PRIVATE ${XKS_WARNINGS})
  set(dirs)
  foreach(kind regressions corpus)
    if(EXISTS ${CMAKE_CURRENT_LIST_DIR}/${kind}/${target})
      list(APPEND dirs ${CMAKE_CURRENT_LIST_DIR}/${kind}/${target})
    endif()
  endforeach()
  add_test(NAME fuzz_smoke_${target}
           COMMAND ${target}_smoke --seconds 3 --artifacts ${CMAKE_BINARY_DIR} ${dirs})
  set_tests_properties(fuzz_smoke_${target} PROPERTIES LABELS fuzz TIMEOUT 120
    ENVIRONMENT "ASAN_OPTIONS=abort_on_error=1:detect_leaks=1:allocator_may_return_null=1;UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1")
endforeach()
