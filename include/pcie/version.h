// The library's version (semantic versioning, https://semver.org). While the major version
// is 0, a new minor version may change the API and the ABI; the shared library's soname
// therefore carries major.minor (libpcie.so.0.1), so a program built against 0.1 never
// loads 0.2 by accident.
#pragma once

#if __cplusplus < 202100L
#error "pcie needs C++23: compile with -std=c++23 (g++ 12 or later, clang 17 or later)"
#endif

#define PCIE_VERSION_MAJOR 0  // the major version: 0 while the API and ABI may still change
#define PCIE_VERSION_MINOR 1  // the minor version: below 1.0, a new one may break the API and ABI
#define PCIE_VERSION_PATCH 0  // the patch version: fixes that keep the API and ABI
// "0.1.0"
#define PCIE_VERSION "0.1.0"
// One number that compares: major * 10000 + minor * 100 + patch (0.1.0 is 100).
#define PCIE_VERSION_NUMBER (PCIE_VERSION_MAJOR * 10000 + PCIE_VERSION_MINOR * 100 + PCIE_VERSION_PATCH)

namespace pcie {

// The version of the library the program runs with ("0.1.0"), which may differ from the
// PCIE_VERSION it was compiled against when the shared library was replaced. Never fails.
const char* library_version() noexcept;

}  // namespace pcie
