// The Python module on a real kernel: boots the test VM (IOMMU on, edu 00:06.0 and ivshmem
// 00:04.0 bound to vfio-pci) with Debian's python3 and numpy (pcie-vm --python), and runs
// tests/python/guest_python_test.py there through run_tests.py, whose GoogleTest-style
// JSON report gives one test case per Python test.
//
// With --backend=uio or --backend=vfio-noiommu it boots without an IOMMU instead and runs
// guest_python_noiommu_test.py (edu 00:03.0 through UIO or VFIO's no-IOMMU mode); with
// --backend=hotplug it boots with --hotplug and runs guest_python_hotplug_test.py.
//
// Flags: --pcie-vm=PATH --module=PATH --runner=PATH --script=PATH --helper=PATH (edu_dma.py, which
// the scripts import) [--backend=vfio|uio|vfio-noiommu|hotplug]
// (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  const std::string backend = flags.contains("backend") ? flags.at("backend") : "vfio";
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"module", "runner", "script", "helper"}, "");
  if (backend == "vfio") {
    options.vm_arguments = {"--python", "--memory", "1024M", "--bind", "0000:00:06.0=vfio-pci", "--bind",
                            "0000:00:04.0=vfio-pci"};
  } else if (backend == "hotplug") {
    // The slot behind the root port starts empty; the script adds and removes nvme devices
    // there (edu bound to vfio-pci loads the module the script binds them to).
    options.vm_arguments = {"--python", "--hotplug", "--memory", "1024M", "--bind", "0000:00:06.0=vfio-pci"};
  } else {
    // No IOMMU: edu 00:03.0 (64-bit DMA mask) bound to uio_pci_generic (Debian's kernel) or
    // to vfio-pci in no-IOMMU mode (the kernel of our own, tests/vm/build-kernel).
    options.vm_arguments = {"--python", "--no-iommu", "--memory", "1536M", "--edu-dma-mask", "64", "--bind",
                            std::string("0000:00:03.0=") + (backend == "uio" ? "uio_pci_generic" : "vfio-pci")};
    if (backend == "vfio-noiommu") {
      options.vm_arguments.insert(options.vm_arguments.end(),
                                  {"--own-kernel", "--append", "vfio.enable_unsafe_noiommu_mode=1"});
    }
  }
  const std::string script = std::filesystem::path(flags.at("script")).filename().string();
  options.guest_command = {"python3", "/vm/bin/run_tests.py", "/vm/bin", "/vm/bin/" + script, "--gtest-json",
                           pcie::vm::kGuestResults};
  return options;
}
