// The example NIC driver unplugged mid-traffic: boots the test VM without an IOMMU and with
// --hotplug (Debian's kernel, QEMU's ACPI hotplug), an e1000e (QEMU id "nic") behind a
// second root port at 00:1d.0, so at 02:00.0, bound to uio_pci_generic, and runs
// guest_e1000e_test's E1000eHotplug cases there.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/e1000e_frames.h"
#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_e1000e_test");
  options.guest_command.insert(options.guest_command.end(),
                               {"--backend=uio", "--bdf=0000:02:00.0", "--gtest_filter=E1000eHotplug.*"});
  options.vm_arguments = {"--no-iommu", "--hotplug",
                          "--qemu", "-device", "--qemu", "pcie-root-port,id=nic-port,chassis=2,addr=1d.0",
                          "--qemu", "-device", "--qemu", std::string("e1000e,id=nic,bus=nic-port,mac=") + pcie::vm::kE1000eMac,
                          "--bind", "0000:02:00.0=uio_pci_generic"};
  return options;
}
