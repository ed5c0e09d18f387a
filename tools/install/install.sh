#!/usr/bin/env bash
# Lays the built library out under a prefix, for CMake, pkg-config and make users:
#
#   PREFIX/include/pcie/...                 public headers (and pcie/testing/)
#   PREFIX/LIBDIR/libpcie.so.X.Y.Z          shared library, soname libpcie.so.X.Y, with the
#   PREFIX/LIBDIR/libpcie.so.X.Y               links libpcie.so.X.Y and libpcie.so
#   PREFIX/LIBDIR/libpcie.so
#   PREFIX/LIBDIR/libpcie.a                 static library (link with -lpci -lfmt)
#   PREFIX/LIBDIR/libpcie_testing.a         pcie::testing (FakeSysfs), static only
#   PREFIX/LIBDIR/pkgconfig/pcie.pc, pcie-testing.pc
#   PREFIX/LIBDIR/cmake/pcie/pcieConfig.cmake, pcieConfigVersion.cmake
#   PREFIX/bin/pciectl, PREFIX/share/man/man1/pciectl.1
#   PREFIX/share/doc/pcie/LICENSE           Apache-2.0
#   PREFIX/share/doc/pcie/html/index.html   the API reference (with --api-reference)
#   PREFIX/lib/python3/dist-packages/pcie.so   the Python module (with --python-module)
#
# Called by scripts/install (which builds the inputs with Bazel first) and by
# tests/install_test (with the inputs from its runfiles). Inputs are named, not guessed:
#   install.sh --prefix DIR --shared F --static F --testing-static F --headers DIR
#              --pciectl F --license F [--libdir lib] [--keep-debug] [--python-module F]
#              [--api-reference TAR]   (TAR: docs/api's api-reference.tar, html/...)
# The files are relocatable: the .pc files and the CMake config compute everything from
# where they lie, so the tree can be moved or packaged (DESTDIR-style) after installing.
set -euo pipefail

prefix="" libdir="lib" shared="" static="" testing_static="" headers="" pciectl="" license=""
keep_debug=0 python_module="" api_reference=""
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=$2; shift 2 ;;
    --libdir) libdir=$2; shift 2 ;;
    --shared) shared=$2; shift 2 ;;
    --static) static=$2; shift 2 ;;
    --testing-static) testing_static=$2; shift 2 ;;
    --headers) headers=$2; shift 2 ;;
    --pciectl) pciectl=$2; shift 2 ;;
    --license) license=$2; shift 2 ;;
    --keep-debug) keep_debug=1; shift ;;
    --python-module) python_module=$2; shift 2 ;;
    --api-reference) api_reference=$2; shift 2 ;;
    *) echo "install.sh: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
for required in prefix shared static testing_static headers pciectl license; do
  if [ -z "${!required}" ]; then echo "install.sh: --${required//_/-} is required" >&2; exit 2; fi
done
case "$libdir" in /* | *..*) echo "install.sh: --libdir must be relative to the prefix, e.g. lib or lib/x86_64-linux-gnu" >&2; exit 2 ;; esac

version_header="$headers/pcie/version.h"
[ -f "$version_header" ] || { echo "install.sh: $version_header is missing" >&2; exit 1; }
major=$(awk '/^#define PCIE_VERSION_MAJOR/ { print $3 }' "$version_header")
minor=$(awk '/^#define PCIE_VERSION_MINOR/ { print $3 }' "$version_header")
patch=$(awk '/^#define PCIE_VERSION_PATCH/ { print $3 }' "$version_header")
version="$major.$minor.$patch"
soname="libpcie.so.$major.$minor"
actual_soname=$(readelf -d "$shared" | sed -n 's/.*Library soname: \[\(.*\)\].*/\1/p')
if [ "$actual_soname" != "$soname" ]; then
  echo "install.sh: $shared has soname '$actual_soname', but pcie/version.h says $version (soname $soname)" >&2
  exit 1
fi

mkdir -p "$prefix"
prefix=$(cd "$prefix" && pwd)
lib="$prefix/$libdir"
mkdir -p "$lib/pkgconfig" "$lib/cmake/pcie" "$prefix/include" "$prefix/bin" "$prefix/share/man/man1" "$prefix/share/doc/pcie"

# Debug information makes the archives ~50 MB; installed copies drop it unless asked.
install_library() {  # source target mode
  install -m "$3" "$1" "$2"
  [ "$keep_debug" = 1 ] || strip --strip-debug "$2"
}
install_library "$shared" "$lib/libpcie.so.$version" 0755
ln -sf "libpcie.so.$version" "$lib/$soname"
ln -sf "$soname" "$lib/libpcie.so"
install_library "$static" "$lib/libpcie.a" 0644
install_library "$testing_static" "$lib/libpcie_testing.a" 0644

rm -rf "$prefix/include/pcie"
cp -RL "$headers/pcie" "$prefix/include/pcie"  # -L: Bazel runfiles are symlinks
chmod -R u+w,go-w,a+rX "$prefix/include/pcie"

install -m 0755 "$pciectl" "$prefix/bin/pciectl"
if [ -n "$python_module" ]; then
  mkdir -p "$prefix/lib/python3/dist-packages"
  install_library "$python_module" "$prefix/lib/python3/dist-packages/pcie.so" 0644
fi
install -m 0644 "$license" "$prefix/share/doc/pcie/LICENSE"
if [ -n "$api_reference" ]; then
  rm -rf "$prefix/share/doc/pcie/html"
  tar --no-same-owner -C "$prefix/share/doc/pcie" -xf "$api_reference" html
  chmod -R u+w,go-w,a+rX "$prefix/share/doc/pcie/html"
fi

# pkg-config: ${pcfiledir} keeps the files relocatable. The headers need C++23, which the
# consumer chooses (-std=c++23): a flag here could override a newer standard it asked for.
includedir_from_pc=$(realpath --relative-to="$lib/pkgconfig" "$prefix/include")
libdir_from_pc=$(realpath --relative-to="$lib/pkgconfig" "$lib")
cat >"$lib/pkgconfig/pcie.pc" <<EOF
# pcie $version, Apache-2.0 (see share/doc/pcie/LICENSE). Needs -std=c++23.
libdir=\${pcfiledir}/$libdir_from_pc
includedir=\${pcfiledir}/$includedir_from_pc

Name: pcie
Description: PCIe devices from user space: discovery, BARs, VFIO/UIO, DMA buffers, interrupts
Version: $version
Requires.private: libpci fmt
Cflags: -I\${includedir}
Libs: -L\${libdir} -lpcie
EOF
cat >"$lib/pkgconfig/pcie-testing.pc" <<EOF
# pcie $version test helpers (pcie::testing: FakeSysfs), static only. Apache-2.0.
libdir=\${pcfiledir}/$libdir_from_pc
includedir=\${pcfiledir}/$includedir_from_pc

Name: pcie-testing
Description: Fake sysfs PCI trees for testing drivers built on pcie without hardware
Version: $version
Requires: pcie = $version
Requires.private: fmt
Cflags: -I\${includedir}
Libs: -L\${libdir} -lpcie_testing -lfmt
EOF

# CMake: imported targets pcie::pcie (shared), pcie::pcie_static and pcie::testing.
prefix_from_cmake=$(realpath --relative-to="$lib/cmake/pcie" "$prefix")
cat >"$lib/cmake/pcie/pcieConfig.cmake" <<EOF
# pcie $version (Apache-2.0): find_package(pcie) gives
#   pcie::pcie         the shared library (libpcie.so.$major.$minor)
#   pcie::pcie_static  the static library (links libpci and fmt)
#   pcie::testing      pcie::testing::FakeSysfs and friends, for driver unit tests
# Each carries the include directory and requires C++23 (cxx_std_23).
cmake_minimum_required(VERSION 3.20)
get_filename_component(_pcie_prefix "\${CMAKE_CURRENT_LIST_DIR}/$prefix_from_cmake" ABSOLUTE)
set(pcie_VERSION $version)
set(pcie_INCLUDE_DIR "\${_pcie_prefix}/include")

if(NOT TARGET pcie::pcie)
  add_library(pcie::pcie SHARED IMPORTED)
  set_target_properties(pcie::pcie PROPERTIES
    IMPORTED_LOCATION "\${_pcie_prefix}/$libdir/libpcie.so.$version"
    IMPORTED_SONAME "$soname"
    INTERFACE_INCLUDE_DIRECTORIES "\${_pcie_prefix}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_23)

  add_library(pcie::pcie_static STATIC IMPORTED)
  set_target_properties(pcie::pcie_static PROPERTIES
    IMPORTED_LOCATION "\${_pcie_prefix}/$libdir/libpcie.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_pcie_prefix}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_23
    INTERFACE_LINK_LIBRARIES "pci;fmt")

  add_library(pcie::testing STATIC IMPORTED)
  set_target_properties(pcie::testing PROPERTIES
    IMPORTED_LOCATION "\${_pcie_prefix}/$libdir/libpcie_testing.a"
    INTERFACE_INCLUDE_DIRECTORIES "\${_pcie_prefix}/include"
    INTERFACE_COMPILE_FEATURES cxx_std_23
    INTERFACE_LINK_LIBRARIES "pcie::pcie;fmt")
endif()
unset(_pcie_prefix)
EOF
# Before 1.0 only the same minor version is compatible (semantic versioning).
cat >"$lib/cmake/pcie/pcieConfigVersion.cmake" <<EOF
set(PACKAGE_VERSION "$version")
if(PACKAGE_FIND_VERSION_MAJOR EQUAL $major AND PACKAGE_FIND_VERSION_MINOR EQUAL $minor
   AND NOT PACKAGE_FIND_VERSION VERSION_GREATER PACKAGE_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
  if(PACKAGE_FIND_VERSION VERSION_EQUAL PACKAGE_VERSION)
    set(PACKAGE_VERSION_EXACT TRUE)
  endif()
elseif(NOT PACKAGE_FIND_VERSION)
  set(PACKAGE_VERSION_COMPATIBLE TRUE)
else()
  set(PACKAGE_VERSION_COMPATIBLE FALSE)
endif()
if(NOT CMAKE_SIZEOF_VOID_P EQUAL 8)
  set(PACKAGE_VERSION_UNSUITABLE TRUE)  # built for x86-64
endif()
EOF

# The man page: pciectl's own --help for the tool and each command.
{
  echo ".TH PCIECTL 1 \"\" \"pcie $version\" \"User Commands\""
  echo ".SH NAME"
  echo "pciectl \\- list, inspect, read, write, bind and benchmark PCI devices"
  echo ".SH SYNOPSIS"
  echo ".B pciectl"
  echo "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]"
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$pciectl" --help | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./'
  echo ".fi"
  for command in $("$pciectl" --help | awk '/^Subcommands:/ { on = 1; next } on && NF { print $1 }'); do
    echo ".SS pciectl $command"
    echo ".nf"
    "$pciectl" "$command" --help | sed -e 's/\\/\\e/g' -e 's/^\./\\\&./'
    echo ".fi"
  done
  echo ".SH LICENSE"
  echo "Apache License 2.0; see $prefix/share/doc/pcie/LICENSE."
} >"$prefix/share/man/man1/pciectl.1"

echo "installed pcie $version under $prefix"
