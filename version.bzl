"""The version for Bazel rules; it must equal include/pcie/version.h (tests/install_test checks)."""

PCIE_VERSION = "0.1.0"

# ABI changes with every 0.x minor version (semantic versioning before 1.0).
PCIE_SONAME = "libpcie.so.0.1"
