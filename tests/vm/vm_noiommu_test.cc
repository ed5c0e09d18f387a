// Without an IOMMU: boots the test VM with no intel-iommu, more memory than 2 GiB for the
// 1 GiB page (2.25 GiB on the stock kernel, where the page lands at 1 GiB and the 2 MiB
// pages stay low; 3.5 GiB on ours, which cannot place it there beside the initramfs, so
// q35 puts 1.5 GiB above 4 GiB and the page goes there), 2 MiB and
// 1 GiB huge pages reserved, edu 00:03.0 (64-bit DMA mask) bound to the backend's driver,
// edu 00:06.0 (QEMU's 28-bit mask) free, and nvme with its driver; runs guest_noiommu_test.
//
// Flags: --pcie-vm=PATH --guest=PATH --edu-driver=PATH --pciectl=PATH (Bazel passes them), --backend=uio (Debian's stock
// kernel, uio_pci_generic) or --backend=vfio-noiommu (the kernel of our own, built by
// tests/vm/build-kernel, with vfio's enable_unsafe_noiommu_mode).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "tests/vm/ivshmem_pattern.h"
#include "tests/vm/vm_harness.h"

namespace {

constexpr std::uint64_t kIvshmemSize = 1 << 20;
std::filesystem::path g_ivshmem_file;
bool g_peer_dma = false;  // VFIO's no-IOMMU mode: ivshmem is on vfio-pci, edu DMAs into its BAR2

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  const std::string backend = flags.contains("backend") ? flags.at("backend") : "uio";
  g_ivshmem_file = work_dir / "ivshmem";
  // vfio-noiommu: VFIO's group no-IOMMU model; iommufd-noiommu: the devices' noiommu cdevs
  // and /dev/iommu. Both on the kernel of our own (7.3), the only one with no-IOMMU mode.
  const bool vfio = backend != "uio";
  g_peer_dma = vfio;
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "edu-driver", "pciectl"}, "guest_noiommu_test");
  options.guest_command.push_back("--backend=" + backend);
  // Each backend's own suite runs on it only.
  options.guest_command.push_back(backend == "uio" ? "--gtest_filter=-VfioNoiommu.*" : "--gtest_filter=-Uio.*");
  std::string append = "hugepagesz=1G hugepages=1 hugepagesz=2M hugepages=8";
  if (vfio) {
    options.vm_arguments.push_back("--own-kernel");
    append += " vfio.enable_unsafe_noiommu_mode=1";
    options.vm_arguments.insert(options.vm_arguments.end(), {"--bind", "0000:00:04.0=vfio-pci"});
  } else {
    options.vm_arguments.push_back("--nvme-driver");
  }
  options.vm_arguments.insert(options.vm_arguments.end(),
                              {"--ivshmem-file", g_ivshmem_file.string(), "--ivshmem-size", std::to_string(kIvshmemSize),
                               "--no-iommu", "--memory", backend == "uio" ? "2304M" : "3584M", "--cpu", "max", "--edu-dma-mask", "64",
                               "--append", append, "--bind",
                               "0000:00:03.0=" + std::string(vfio ? "vfio-pci" : "uio_pci_generic")});
  return options;
}

namespace {

// What edu wrote into ivshmem's BAR2 at its bus address (VfioNoiommu.EduWritesIntoIvshmemsBar-
// AtItsBusAddress), byte for byte, and nothing else; on UIO nothing at all.
TEST(HostIvshmem, BackingFileHoldsWhatEduWroteByPeerDma) {
  std::ifstream in(g_ivshmem_file, std::ios::binary);
  ASSERT_TRUE(in) << "cannot open " << g_ivshmem_file;
  const std::vector<std::uint8_t> actual{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  ASSERT_EQ(actual.size(), kIvshmemSize);
  const pcie::vm::PatternSpan span = pcie::vm::kPeerDmaSpan;
  std::size_t mismatches = 0;
  for (std::uint64_t offset = 0; offset < actual.size(); ++offset) {
    const bool written = g_peer_dma && offset >= span.offset && offset < span.offset + span.length;
    const std::uint8_t expected = written ? pcie::vm::pattern_byte(offset) : 0;
    if (actual[offset] != expected && ++mismatches <= 5) {
      ADD_FAILURE() << "offset 0x" << std::hex << offset << ": 0x" << int{actual[offset]} << ", expected 0x"
                    << int{expected};
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

}  // namespace
