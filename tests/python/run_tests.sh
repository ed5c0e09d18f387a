#!/usr/bin/env bash
# Bazel's entry for the Python tests: Debian's python3 (with numpy), the built module's
# directory, pciectl (whose JSON the module's dicts must match), and the test files. See run_tests.py.
set -euo pipefail
module=$1
shift
export PCIE_FAKE_TREE=$(realpath "$1")
export PCIE_VERSION_HEADER=$(realpath "$2")
export PCIE_PCIECTL=$(realpath "$3")
shift 3
exec /usr/bin/python3 tests/python/run_tests.py "$(dirname "$(realpath "$module")")" "$@"
