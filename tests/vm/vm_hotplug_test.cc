// Hot unplug under a running driver: boots the test VM with --hotplug (QEMU's QMP reached
// from the guest through hotplug-relay), the nvme behind the root port at 00:1c.0 and the
// edu at 00:03.0 bound to vfio-pci, and runs guest_hotplug_test, which unplugs and re-adds
// nvme devices in that slot (see its header).
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH (Bazel passes them); --own-kernel=1: our 7.3 kernel
// (iommufd, and the root port's native hotplug through pciehp) instead of Debian's 6.1
// (type1, QEMU's ACPI hotplug).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "pciectl"}, "guest_hotplug_test");
  options.vm_arguments = {"--hotplug", "--storage", "--bind", "0000:01:00.0=vfio-pci",
                          "--bind", "0000:00:03.0=vfio-pci"};
  if (flags.contains("own-kernel") && flags.at("own-kernel") == "1") options.vm_arguments.push_back("--own-kernel");
  return options;
}
