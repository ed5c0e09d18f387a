// iommufd on a real kernel: boots the test VM on the kernel of our own (IOMMUFD,
// VFIO_DEVICE_CDEV) with the IOMMU on and edu 00:06.0 bound to vfio-pci, and runs
// guest_iommufd_test there.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include "tests/vm/vm_harness.h"

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_iommufd_test");
  options.vm_arguments = {"--own-kernel", "--bind", "0000:00:06.0=vfio-pci"};
  return options;
}
