// SR-IOV on a real kernel: boots the test VM with only an nvme device that has SR-IOV
// (QEMU's nvme with sriov_max_vfs=2, in an NVMe subsystem, behind a root port) and the nvme
// driver, and runs guest_sysfs_test's GuestSriov cases: enabling two VFs through
// sriov_numvfs, whose config-space IDs then read 0xffff, and discovering them.
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "pciectl"}, "guest_sysfs_test");
  options.vm_arguments = {
      "--no-devices", "--nvme-driver",
      "--qemu", "-device", "--qemu", "pcie-root-port,id=root-port,chassis=1,addr=1c.0",
      "--qemu", "-device", "--qemu", "nvme-subsys,id=nvme-subsystem",
      // QEMU 7.2's limits: two I/O queue pairs left to the PF, flexible ones for the VFs.
      "--qemu", "-device", "--qemu",
      "nvme,serial=pcie-vm-sriov,bus=root-port,subsys=nvme-subsystem,sriov_max_vfs=2,sriov_vq_flexible=4,"
      "sriov_vi_flexible=2,max_ioqpairs=6,msix_qsize=5"};
  options.guest_command.push_back("--gtest_filter=GuestSriov.*");
  return options;
}
