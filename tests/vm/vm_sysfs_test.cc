// The sysfs path on a real kernel: boots the test VM with edu, ivshmem-plain (backed by a
// file here), pci-testdev with an 8 GiB membar, a second edu bound to vfio-pci (or
// uio_pci_generic without the IOMMU) and an nvme behind a root port, with its driver; runs guest_sysfs_test in it; then checks, on the host, every byte the
// guest wrote through ivshmem's write-combined BAR.
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH (Bazel passes them), --iommu=1|0,
// --nopat=1 (boot with PAT off: the write-combining refusal and discovery only).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <iterator>
#include <vector>

#include "tests/vm/ivshmem_host_check.h"
#include "tests/vm/vm_harness.h"

namespace {

constexpr std::uint64_t kIvshmemSize = 1 << 20;
constexpr std::uint64_t kMembar = 8ull << 30;
std::filesystem::path g_ivshmem_file;
bool pcie_vm_nopat = false;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  const bool iommu = !flags.contains("iommu") || flags.at("iommu") != "0";
  const bool nopat = flags.contains("nopat") && flags.at("nopat") == "1";
  pcie_vm_nopat = nopat;
  // Without an IOMMU vfio-pci cannot bind (Debian's kernel has no VFIO no-IOMMU mode), so
  // that variant binds uio_pci_generic, the driver UIO-based user-space drivers use.
  const std::string bound_driver = iommu ? "vfio-pci" : "uio_pci_generic";
  g_ivshmem_file = work_dir / "ivshmem";

  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "pciectl"}, "guest_sysfs_test");
  if (!iommu) options.vm_arguments.push_back("--no-iommu");
  options.vm_arguments.insert(options.vm_arguments.end(),
                              {"--nvme-driver", "--bind", "0000:00:06.0=" + bound_driver, "--ivshmem-file", g_ivshmem_file.string(),
                               "--ivshmem-size", std::to_string(kIvshmemSize), "--membar", "8G"});
  options.guest_command.insert(options.guest_command.end(),
                               {iommu ? "--iommu=1" : "--iommu=0", "--bound-driver=" + bound_driver,
                                "--ivshmem-size=" + std::to_string(kIvshmemSize),
                                "--membar=" + std::to_string(kMembar)});
  if (nopat) {
    // PAT off: only what it changes (write-combining) and discovery, which it must not.
    options.vm_arguments.insert(options.vm_arguments.end(), {"--append", "nopat"});
    options.guest_command.push_back("--gtest_filter=GuestNopat.*:GuestDiscovery.*");
  } else {
    options.guest_command.push_back(iommu ? "--gtest_filter=-GuestVfioNoIommu.*:GuestNopat.*:GuestSriov.*"
                                          : "--gtest_filter=-GuestVfio.*:GuestNopat.*:GuestSriov.*");
  }
  return options;
}

namespace {

TEST(HostIvshmem, BackingFileHoldsTheGuestsPatterns) {
  if (!pcie_vm_nopat) {
    pcie::vm::expect_file_holds_ivshmem_pattern(g_ivshmem_file, kIvshmemSize);
    return;
  }
  // The nopat run only reads ivshmem (its write-combined mapping is refused): untouched.
  std::ifstream file(g_ivshmem_file, std::ios::binary);
  ASSERT_TRUE(file) << g_ivshmem_file;
  const std::vector<char> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), kIvshmemSize);
  EXPECT_TRUE(std::all_of(bytes.begin(), bytes.end(), [](char b) { return b == 0; })) << "something wrote to it";
}

}  // namespace
