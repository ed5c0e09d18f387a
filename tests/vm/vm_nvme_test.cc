// The example NVMe driver on QEMU's nvme: boots the test VM with 01:00.0 and ivshmem
// (00:04.0) bound to vfio-pci, the namespace and ivshmem's BAR2 backed by files here, runs
// guest_nvme_test, then checks that the namespace's file holds what the guest wrote at the
// right offsets (through host memory, and straight from ivshmem's BAR) and zeros everywhere
// else, and that ivshmem's file holds what the host put there except where the driver read
// blocks straight into the BAR.
//
// Flags: --pcie-vm=PATH --guest=PATH --nvme-driver=PATH (Bazel passes them),
// --block-size=512|4096, --backend=type1|iommufd|noiommu (Debian's kernel, or ours: 7.3,
// whose iommufd takes the BAR as a dma-buf, and which has VFIO's no-IOMMU mode).
#include <gtest/gtest.h>

#include <fstream>

#include "tests/vm/nvme_pattern.h"
#include "tests/vm/vm_harness.h"

namespace {

std::filesystem::path g_image;
std::filesystem::path g_ivshmem;
std::uint32_t g_block_size = 512;

std::vector<char> read_file(const std::filesystem::path& path, std::size_t size) {
  std::ifstream file(path, std::ios::binary);
  std::vector<char> bytes(size);
  file.read(bytes.data(), static_cast<std::streamsize>(size));
  if (file.gcount() != static_cast<std::streamsize>(size)) bytes.clear();
  return bytes;
}

// The number of bytes of `actual` that differ from expected(offset), and the first.
template <typename Expected>
std::pair<std::uint64_t, std::uint64_t> count_differences(const std::vector<char>& actual, Expected expected) {
  std::uint64_t wrong = 0, first_wrong = 0;
  for (std::uint64_t i = 0; i < actual.size(); ++i) {
    if (std::byte(static_cast<unsigned char>(actual[i])) != expected(i) && wrong++ == 0) first_wrong = i;
  }
  return {wrong, first_wrong};
}

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  if (flags.contains("block-size")) g_block_size = static_cast<std::uint32_t>(std::stoul(flags.at("block-size")));
  g_image = work_dir / "nvme.img";
  std::filesystem::remove(g_image);
  std::ofstream(g_image).close();
  std::filesystem::resize_file(g_image, pcie::vm::kNvmeImageBytes);
  g_ivshmem = work_dir / "ivshmem";
  {
    std::vector<char> fill(pcie::vm::kPeerBarBytes);
    for (std::size_t i = 0; i < fill.size(); ++i) fill[i] = static_cast<char>(pcie::vm::ivshmem_fill_byte(i));
    std::ofstream(g_ivshmem, std::ios::binary | std::ios::trunc).write(fill.data(), static_cast<std::streamsize>(fill.size()));
  }
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "nvme-driver"}, "guest_nvme_test");
  const std::string backend = flags.contains("backend") ? flags.at("backend") : "type1";
  options.guest_command.push_back("--block-size=" + std::to_string(g_block_size));
  options.guest_command.push_back("--backend=" + backend);
  options.vm_arguments = {"--memory", "1024M", "--nvme-image", g_image.string(),
                          "--nvme-block-size", std::to_string(g_block_size), "--bind", "0000:01:00.0=vfio-pci",
                          "--ivshmem-file", g_ivshmem.string(), "--ivshmem-size", std::to_string(pcie::vm::kPeerBarBytes),
                          "--bind", "0000:00:04.0=vfio-pci", "--bind", "0000:00:06.0=vfio-pci", "--nvme-cmb-mb", "1"};
  if (backend == "iommufd") options.vm_arguments.push_back("--own-kernel");
  if (backend == "noiommu") {
    // VFIO's no-IOMMU mode, on the kernel of our own (Debian's has none): the peer window
    // is ivshmem's BAR at its bus address, every buffer a physical address.
    options.vm_arguments.insert(options.vm_arguments.end(),
                                {"--own-kernel", "--no-iommu", "--append", "vfio.enable_unsafe_noiommu_mode=1"});
  }
  return options;
}

namespace {

// Through host memory (nvme_writes) and straight from ivshmem's BAR (write --from).
TEST(HostNvme, ImageHoldsExactlyWhatTheDriverWrote) {
  const std::vector<char> image = read_file(g_image, pcie::vm::kNvmeImageBytes);
  ASSERT_FALSE(image.empty()) << g_image;
  // 0: not written; 1: nvme_pattern_byte; 2: ivshmem's byte at the recorded offset.
  std::vector<std::uint8_t> source(image.size(), 0);
  std::vector<std::uint64_t> peer_offset(image.size(), 0);
  for (const pcie::vm::NvmeWrite& write : pcie::vm::nvme_writes(g_block_size)) {
    for (std::uint64_t i = write.offset; i < write.offset + write.bytes; ++i) source[i] = 1;
  }
  for (const pcie::vm::NvmePeerTransfer& transfer : pcie::vm::nvme_peer_transfers(g_block_size)) {
    if (transfer.into_peer) continue;
    for (std::uint64_t i = 0; i < transfer.bytes; ++i) {
      ASSERT_EQ(source[transfer.namespace_offset + i], 0) << "the table overlaps itself";
      source[transfer.namespace_offset + i] = 2;
      peer_offset[transfer.namespace_offset + i] = transfer.peer_offset + i;
    }
  }
  const auto [wrong, first_wrong] = count_differences(image, [&](std::uint64_t i) {
    return source[i] == 1 ? pcie::vm::nvme_pattern_byte(i)
           : source[i] == 2 ? pcie::vm::ivshmem_fill_byte(peer_offset[i])
                            : std::byte{0};
  });
  EXPECT_EQ(wrong, 0u) << "bytes differ from what was written; the first at offset " << first_wrong
                       << (source[first_wrong] == 2 ? " (written from ivshmem's BAR)" : "");
}

// What the host put there, except the ranges the driver read straight into the BAR (read
// --into), which hold the namespace's blocks.
TEST(HostNvme, IvshmemHoldsTheBlocksReadIntoItAndNothingElseChanged) {
  const std::vector<char> bar = read_file(g_ivshmem, pcie::vm::kPeerBarBytes);
  ASSERT_FALSE(bar.empty()) << g_ivshmem;
  std::vector<std::int64_t> from_namespace(bar.size(), -1);
  for (const pcie::vm::NvmePeerTransfer& transfer : pcie::vm::nvme_peer_transfers(g_block_size)) {
    if (!transfer.into_peer) continue;
    for (std::uint64_t i = 0; i < transfer.bytes; ++i) {
      ASSERT_EQ(from_namespace[transfer.peer_offset + i], -1) << "the table overlaps itself";
      from_namespace[transfer.peer_offset + i] = static_cast<std::int64_t>(transfer.namespace_offset + i);
    }
  }
  const auto [wrong, first_wrong] = count_differences(bar, [&](std::uint64_t i) {
    return from_namespace[i] >= 0 ? pcie::vm::nvme_pattern_byte(static_cast<std::uint64_t>(from_namespace[i]))
                                  : pcie::vm::ivshmem_fill_byte(i);
  });
  EXPECT_EQ(wrong, 0u) << "bytes of ivshmem's BAR differ; the first at offset " << first_wrong
                       << (from_namespace[first_wrong] >= 0 ? " (read into it from the namespace)" : " (untouched)");
}

}  // namespace
