# Install rules (`cmake --install`, `make install`) to FHS paths, and the Debian
# package (`cpack -G DEB`).
#
#   cmake -S . -B build/pkg -DCMAKE_BUILD_TYPE=Release -DXKS_BUILD_TESTS=OFF -DCMAKE_INSTALL_PREFIX=/usr
#   cmake --build build/pkg --target xks-proxy xksctl
#   (cd build/pkg && cpack -G DEB)          # -> build/pkg/xks-proxy_<version>_<arch>.deb
#
# What goes where (relative to CMAKE_INSTALL_PREFIX, /usr/local by default):
#   bin/xks-proxy, bin/xksctl
#   lib/systemd/system/xks-proxy.service   (ExecStart= rewritten to this prefix's bin/)
#   lib/sysusers.d/xks-proxy.conf           the xks-proxy system user
#   lib/tmpfiles.d/xks-proxy.conf           /etc/xks-proxy (root:xks-proxy 0750) and secrets/
#   share/doc/xks-proxy/                    README, LICENSE, docs/*.md
#   share/doc/xks-proxy/examples/           xks-proxy.example.yaml, examples/*.yaml, policies/*.yaml
# Nothing is installed into /etc: the configuration is the operator's, so an
# install or upgrade never overwrites it, and an unconfigured service cannot start.
#
# Include it from the top-level CMakeLists.txt, anywhere after project(): when
# the xks-proxy and xksctl targets do not exist yet, the rules are deferred to
# the end of the top-level directory.

get_property(_xks_install_state GLOBAL PROPERTY XKS_INSTALL_RULES)
if(_xks_install_state STREQUAL "done")
  return()
endif()
if(NOT TARGET xks-proxy OR NOT TARGET xksctl)
  if(NOT _xks_install_state STREQUAL "deferred")
    set_property(GLOBAL PROPERTY XKS_INSTALL_RULES deferred)
    # EVAL: DEFER would expand the path only when the call runs, where
    # CMAKE_CURRENT_LIST_FILE names the top-level CMakeLists.txt.
    cmake_language(EVAL CODE
      "cmake_language(DEFER DIRECTORY [[${CMAKE_SOURCE_DIR}]] CALL include [[${CMAKE_CURRENT_LIST_FILE}]])")
  endif()
  return()
endif()
set_property(GLOBAL PROPERTY XKS_INSTALL_RULES done)

include(GNUInstallDirs)

# Directories systemd reads below /usr and /usr/local (relative to the prefix).
set(XKS_SYSTEMD_UNIT_DIR "lib/systemd/system" CACHE STRING "systemd unit directory, relative to the prefix")
set(XKS_SYSUSERS_DIR "lib/sysusers.d" CACHE STRING "sysusers.d directory, relative to the prefix")
set(XKS_TMPFILES_DIR "lib/tmpfiles.d" CACHE STRING "tmpfiles.d directory, relative to the prefix")
set(XKS_PACKAGE_MAINTAINER "xks-proxy maintainers <xks-proxy@example.invalid>"
    CACHE STRING "Maintainer field of the Debian package")

set(_xks_root "${CMAKE_CURRENT_LIST_DIR}/..")
cmake_path(NORMAL_PATH _xks_root)
set(_xks_systemd "${_xks_root}/packaging/systemd")

install(TARGETS xks-proxy xksctl RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}" COMPONENT runtime)

# The unit names /usr/bin/xks-proxy and /usr/share/doc/xks-proxy. The prefix is
# only known at install time (cpack installs to CPACK_PACKAGING_INSTALL_PREFIX,
# `cmake --install --prefix` to another), so the paths are rewritten then.
install(CODE "set(XKS_UNIT_SOURCE \"${_xks_systemd}/xks-proxy.service\")
set(XKS_UNIT_WORK \"${CMAKE_CURRENT_BINARY_DIR}/xks-install\")
set(XKS_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
set(XKS_DOCDIR \"${CMAKE_INSTALL_DOCDIR}\")
set(XKS_UNITDIR \"${XKS_SYSTEMD_UNIT_DIR}\")" COMPONENT runtime)
install(CODE [[
  file(READ "${XKS_UNIT_SOURCE}" unit)
  foreach(var BINDIR DOCDIR UNITDIR)
    if(IS_ABSOLUTE "${XKS_${var}}")
      set(full_${var} "${XKS_${var}}")
    else()
      set(full_${var} "${CMAKE_INSTALL_PREFIX}/${XKS_${var}}")
    endif()
  endforeach()
  string(REPLACE "ExecStart=/usr/bin/xks-proxy " "ExecStart=${full_BINDIR}/xks-proxy " unit "${unit}")
  string(REPLACE "file:/usr/share/doc/xks-proxy/" "file:${full_DOCDIR}/" unit "${unit}")
  file(MAKE_DIRECTORY "${XKS_UNIT_WORK}")
  file(WRITE "${XKS_UNIT_WORK}/xks-proxy.service" "${unit}")
  file(INSTALL DESTINATION "${full_UNITDIR}" TYPE FILE
       PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ
       FILES "${XKS_UNIT_WORK}/xks-proxy.service")
]] COMPONENT runtime)
install(FILES "${_xks_systemd}/xks-proxy.sysusers" DESTINATION "${XKS_SYSUSERS_DIR}"
        RENAME xks-proxy.conf COMPONENT runtime)
install(FILES "${_xks_systemd}/xks-proxy.tmpfiles" DESTINATION "${XKS_TMPFILES_DIR}"
        RENAME xks-proxy.conf COMPONENT runtime)

# Documentation and example configurations (examples only: see above).
file(GLOB _xks_docs CONFIGURE_DEPENDS "${_xks_root}/docs/*.md")
install(FILES "${_xks_root}/README.md" "${_xks_root}/LICENSE" ${_xks_docs}
        DESTINATION "${CMAKE_INSTALL_DOCDIR}" COMPONENT runtime)
install(FILES "${_xks_root}/config/xks-proxy.example.yaml"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples" COMPONENT runtime)
install(DIRECTORY "${_xks_root}/config/examples/" "${_xks_root}/config/policies"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}/examples" COMPONENT runtime
        FILES_MATCHING PATTERN "*.yaml" PATTERN "*.yml" PATTERN "*.json")

# Man pages xks-proxy(8) and xksctl(1), made by help2man from the binaries' own
# --help and --version (plus packaging/man/*.h2m), when they are installed: the
# binaries exist then, whatever targets the build made. gzip -9n as Debian wants.
find_program(XKS_HELP2MAN help2man)
if(XKS_HELP2MAN)
  install(CODE "set(XKS_HELP2MAN \"${XKS_HELP2MAN}\")
set(XKS_MAN_WORK \"${CMAKE_CURRENT_BINARY_DIR}/xks-install/man\")
set(XKS_MAN_SRC \"${_xks_root}/packaging/man\")
set(XKS_MANDIR \"${CMAKE_INSTALL_MANDIR}\")
set(XKS_VERSION \"${PROJECT_VERSION}\")
set(XKS_PROXY_BIN \"$<TARGET_FILE:xks-proxy>\")
set(XKS_CTL_BIN \"$<TARGET_FILE:xksctl>\")" COMPONENT runtime)
  install(CODE [[
    file(MAKE_DIRECTORY "${XKS_MAN_WORK}")
    if(IS_ABSOLUTE "${XKS_MANDIR}")
      set(mandir "${XKS_MANDIR}")
    else()
      set(mandir "${CMAKE_INSTALL_PREFIX}/${XKS_MANDIR}")
    endif()
    foreach(page "xks-proxy;8;${XKS_PROXY_BIN};AWS KMS External Key Store (XKS) proxy for PKCS#11 HSMs"
                 "xksctl;1;${XKS_CTL_BIN};operator's tool for the AWS KMS XKS proxy")
      list(GET page 0 name)
      list(GET page 1 section)
      list(GET page 2 binary)
      list(GET page 3 summary)
      set(out "${XKS_MAN_WORK}/${name}.${section}")
      execute_process(
        COMMAND "${CMAKE_COMMAND}" -E env ASAN_OPTIONS=detect_leaks=0
                "${XKS_HELP2MAN}" --no-info "--section=${section}" "--name=${summary}"
                "--include=${XKS_MAN_SRC}/${name}.h2m" "--output=${out}" "${binary}"
        RESULT_VARIABLE rc)
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR "help2man failed for ${name} (${rc})")
      endif()
      execute_process(COMMAND gzip -9nf "${out}" RESULT_VARIABLE rc)
      if(NOT rc EQUAL 0)
        message(FATAL_ERROR "gzip failed for ${out}")
      endif()
      file(INSTALL DESTINATION "${mandir}/man${section}" TYPE FILE
           PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ FILES "${out}.gz")
    endforeach()
  ]] COMPONENT runtime)
else()
  message(WARNING "help2man not found: the man pages are not installed (scripts/install-deps.sh build)")
endif()

# bash completion; copyright and changelog where Debian looks for them.
install(FILES "${_xks_root}/packaging/bash-completion/xksctl"
        DESTINATION "${CMAKE_INSTALL_DATADIR}/bash-completion/completions" COMPONENT runtime)
install(FILES "${_xks_root}/packaging/debian/copyright"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}" COMPONENT runtime)
configure_file("${_xks_root}/packaging/debian/changelog.in"
               "${CMAKE_CURRENT_BINARY_DIR}/xks-install/changelog" @ONLY)
install(CODE "execute_process(COMMAND gzip -9nkf \"${CMAKE_CURRENT_BINARY_DIR}/xks-install/changelog\")"
        COMPONENT runtime)
install(FILES "${CMAKE_CURRENT_BINARY_DIR}/xks-install/changelog.gz"
        DESTINATION "${CMAKE_INSTALL_DOCDIR}" COMPONENT runtime)

# -- Debian package ------------------------------------------------------------
set(CPACK_GENERATOR "DEB")
set(CPACK_PACKAGE_NAME "xks-proxy")
set(CPACK_PACKAGE_VENDOR "xks-proxy")
set(CPACK_PACKAGE_CONTACT "${XKS_PACKAGE_MAINTAINER}")
set(CPACK_PACKAGE_VERSION "${PROJECT_VERSION}")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "AWS KMS External Key Store (XKS) proxy for PKCS#11 HSMs")
set(CPACK_PACKAGE_DESCRIPTION
    "xks-proxy answers AWS KMS's External Key Store Proxy API (v1) over HTTPS,\n\
verifies KMS's SigV4 signatures, applies optional secondary authorization\n\
rules and performs AES-256-GCM in an HSM through PKCS#11, so key material\n\
never leaves the HSM. Runs as a hardened systemd service (Type=notify).")
set(CPACK_RESOURCE_FILE_LICENSE "${_xks_root}/LICENSE")
# Always /usr, whatever CMAKE_INSTALL_PREFIX `make install` uses: the unit is
# rewritten for the prefix at install time, so both stay consistent.
set(CPACK_PACKAGING_INSTALL_PREFIX "/usr")
set(CPACK_STRIP_FILES ON)
set(CPACK_SOURCE_GENERATOR "")

set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION "net")
set(CPACK_DEBIAN_PACKAGE_PRIORITY "optional")
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://github.com/aws/aws-kms-xksproxy-api-spec")
# Debian 12 (bookworm) runtime libraries of the two binaries, one per NEEDED
# entry (tests/integration/test_package.py checks that every NEEDED library is
# covered). Boost (Asio, Beast) is header-only here and p11-kit is used for its
# header only: the HSM's PKCS#11 module is dlopen()ed from the configuration.
# init-system-helpers: deb-systemd-invoke in the maintainer scripts.
set(CPACK_DEBIAN_PACKAGE_DEPENDS
    "libc6 (>= 2.36), libstdc++6 (>= 12), libgcc-s1 (>= 3.0), libssl3 (>= 3.0.0), \
libspdlog1.10 (>= 1:1.10.0), libfmt9 (>= 9.1.0), libyaml-cpp0.7 (>= 0.7.0), libsystemd0, \
init-system-helpers (>= 1.52)")
# softhsm2 for the demo and tests; opensc's pkcs11-tool to inspect tokens; curl
# for the ping probe; systemd for systemd-sysusers/-tmpfiles in postinst.
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "systemd, softhsm2, opensc, curl")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    "${_xks_root}/packaging/debian/postinst;${_xks_root}/packaging/debian/prerm;${_xks_root}/packaging/debian/postrm")
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION ON)

include(CPack)
