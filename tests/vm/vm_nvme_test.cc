// The example NVMe driver on QEMU's nvme: boots the test VM with 01:00.0 bound to vfio-pci
// and its namespace backed by a file here, runs guest_nvme_test, then checks that the file
// holds what the guest wrote at the right offsets and zeros everywhere else.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them), --block-size=512|4096.
#include <gtest/gtest.h>

#include <fstream>

#include "tests/vm/nvme_pattern.h"
#include "tests/vm/vm_harness.h"

namespace {

std::filesystem::path g_image;
std::uint32_t g_block_size = 512;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  if (flags.contains("block-size")) g_block_size = static_cast<std::uint32_t>(std::stoul(flags.at("block-size")));
  g_image = work_dir / "nvme.img";
  std::filesystem::remove(g_image);
  std::ofstream(g_image).close();
  std::filesystem::resize_file(g_image, pcie::vm::kNvmeImageBytes);
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_nvme_test");
  options.guest_command.push_back("--block-size=" + std::to_string(g_block_size));
  options.vm_arguments = {"--memory", "1024M", "--nvme-image", g_image.string(),
                          "--nvme-block-size", std::to_string(g_block_size), "--bind", "0000:01:00.0=vfio-pci"};
  return options;
}

namespace {

TEST(HostNvme, ImageHoldsExactlyWhatTheDriverWrote) {
  std::ifstream file(g_image, std::ios::binary);
  ASSERT_TRUE(file) << g_image;
  std::vector<char> image(pcie::vm::kNvmeImageBytes);
  file.read(image.data(), static_cast<std::streamsize>(image.size()));
  ASSERT_EQ(file.gcount(), static_cast<std::streamsize>(image.size()));
  std::vector<bool> written(image.size(), false);
  for (const pcie::vm::NvmeWrite& write : pcie::vm::nvme_writes(g_block_size)) {
    for (std::uint64_t i = write.offset; i < write.offset + write.bytes; ++i) written[i] = true;
  }
  std::uint64_t wrong = 0;
  std::uint64_t first_wrong = 0;
  for (std::uint64_t i = 0; i < image.size(); ++i) {
    const std::byte expected = written[i] ? pcie::vm::nvme_pattern_byte(i) : std::byte{0};
    if (std::byte(static_cast<unsigned char>(image[i])) != expected && wrong++ == 0) first_wrong = i;
  }
  EXPECT_EQ(wrong, 0u) << "bytes differ from what was written; the first at offset " << first_wrong;
}

}  // namespace
