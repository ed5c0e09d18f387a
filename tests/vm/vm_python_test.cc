// The Python module on a real kernel: boots the test VM (IOMMU on, edu 00:06.0 bound to
// vfio-pci) with Debian's python3 and numpy (pcie-vm --python), and runs
// tests/python/guest_python_test.py there through run_tests.py, whose GoogleTest-style
// JSON report gives one test case per Python test.
//
// Flags: --pcie-vm=PATH --module=PATH --runner=PATH --script=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"module", "runner", "script"}, "");
  options.vm_arguments = {"--python", "--memory", "1024M", "--bind", "0000:00:06.0=vfio-pci"};
  options.guest_command = {"python3", "/vm/bin/run_tests.py", "/vm/bin", "/vm/bin/guest_python_test.py",
                           "--gtest-json", pcie::vm::kGuestResults};
  return options;
}
