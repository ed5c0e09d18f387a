// VFIO on a real kernel: boots the test VM with the IOMMU, edu 00:06.0 and ivshmem 00:04.0
// bound to vfio-pci, and two edus behind a conventional PCI bridge (one IOMMU group) bound
// to vfio-pci and uio_pci_generic; runs guest_vfio_test; then checks on the host what the
// guest wrote into ivshmem's BAR2 through its VFIO mapping.
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH --edu-driver=PATH (Bazel passes them),
// --backend=type1 (Debian's kernel, the default) or --backend=iommufd (the kernel of our
// own, 7.3, which has IOMMUFD, device cdevs and BARs as dma-bufs; its module options
// become kernel parameters).
#include <gtest/gtest.h>

#include "tests/vm/ivshmem_host_check.h"
#include "tests/vm/vm_harness.h"

namespace {

constexpr std::uint64_t kIvshmemSize = 1 << 20;
std::filesystem::path g_ivshmem_file;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  g_ivshmem_file = work_dir / "ivshmem";
  pcie::vm::Options options =
      pcie::vm::options_from_flags(flags, {"guest", "pciectl", "edu-driver"}, "guest_vfio_test");
  const std::string backend = flags.contains("backend") ? flags.at("backend") : "type1";
  options.guest_command.push_back("--backend=" + backend);
  options.vm_arguments = {
      // 1 GiB: the ASan build's guest programs and the 28-bit DMA test's pinned memory
      // together outgrew the default 512 MiB (the guest OOM-killed the test).
      "--memory", "1024M",
      "--ivshmem-file", g_ivshmem_file.string(), "--ivshmem-size", std::to_string(kIvshmemSize),
      // A conventional PCI bridge after the root port (00:1c.0, bus 1), so it gets bus 2:
      // devices behind it share the bridge's requester ID and so one IOMMU group.
      "--qemu", "-device", "--qemu", "pci-bridge,id=bridge,chassis_nr=2,addr=1d.0",
      "--qemu", "-device", "--qemu", "edu,bus=bridge,addr=01.0",
      "--qemu", "-device", "--qemu", "edu,bus=bridge,addr=02.0",
      "--nvme-driver", "--storage", "--bind", "0000:00:06.0=vfio-pci",
      // A small limit on DMA mappings per container, so a test can reach it.
      "--module-option", "vfio_iommu_type1=dma_entry_limit=64", "--bind", "0000:00:04.0=vfio-pci",
      "--bind", "0000:02:01.0=vfio-pci", "--bind", "0000:02:02.0=uio_pci_generic"};
  if (backend == "iommufd") options.vm_arguments.push_back("--own-kernel");
  // GuestDma.DmaToAnUnmappedIovaFaultsWithoutHarm writes to IOVA 0xf000000 on purpose.
  options.expected_dmar_faults = {{"0xf000000", "GuestDma.DmaToAnUnmappedIovaFaultsWithoutHarm"}};
  return options;
}

namespace {

// What the guest wrote through its VFIO mapping of BAR2, and what edu wrote there by DMA
// through a peer window (GuestPeerDma): byte for byte, nothing else.
TEST(HostIvshmem, BackingFileHoldsWhatTheGuestWroteThroughVfio) {
  // The guest's peer-to-peer DMA into ivshmem runs on both backends: type1 maps the BAR's
  // mapping into the IOMMU; iommufd imports the BAR as a dma-buf, which the kernel of our
  // own (7.3, tests/vm/build-kernel) exports (Linux 6.19 and later, CONFIG_VFIO_PCI_DMABUF).
  pcie::vm::expect_file_holds_ivshmem_pattern(g_ivshmem_file, kIvshmemSize, /*with_peer_dma=*/true);
}

}  // namespace
