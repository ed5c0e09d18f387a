// The bulk copy path on a real kernel: boots the test VM with a 32 MiB ivshmem (backed by
// a file here) on QEMU's "max" CPU model (SSE4.1 and AVX2 under software emulation), runs
// guest_copy_test in it, then checks every byte of the backing file against what the
// guest's copies meant to write (copy_pattern.h), outside pciectl bench's window.
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH (Bazel passes them).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "tests/vm/copy_pattern.h"
#include "tests/vm/vm_harness.h"

namespace {

std::filesystem::path g_ivshmem_file;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  g_ivshmem_file = work_dir / "ivshmem";
  pcie::vm::Options options;
  options.pcie_vm = flags.contains("pcie-vm") ? flags.at("pcie-vm") : "tests/vm/pcie-vm";
  options.vm_arguments = {"--cpu",          "max", "--ivshmem-file", g_ivshmem_file.string(),
                          "--ivshmem-size", std::to_string(pcie::vm::kCopyIvshmemSize)};
  for (const char* program : {"guest", "pciectl"}) {
    if (flags.contains(program)) options.guest_programs.push_back(flags.at(program));
  }
  options.guest_command = {"guest_copy_test", std::string("--gtest_output=json:") + pcie::vm::kGuestResults};
  return options;
}

namespace {

TEST(HostIvshmem, BackingFileHoldsExactlyWhatTheCopiesWrote) {
  std::ifstream file(g_ivshmem_file, std::ios::binary);
  ASSERT_TRUE(file) << g_ivshmem_file;
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), pcie::vm::kCopyIvshmemSize);
  const std::vector<std::uint8_t> header(bytes.begin(), bytes.begin() + pcie::vm::kCopyKernels.size());
  // The kernels every x86-64 CPU has, and the restricted window, must have run.
  for (std::size_t region = 0; region < pcie::vm::kCopyKernels.size(); ++region) {
    const std::string_view name = pcie::vm::kCopyKernels[region];
    if (name == "auto" || name == "registers" || name == "sse2" || name == "32-bit") {
      EXPECT_EQ(header[region], 1) << name << " did not write its region";
    }
  }
  const std::vector<std::uint8_t> expected = pcie::vm::expected_copy_image(header);
  for (std::uint64_t offset = 0; offset < bytes.size(); ++offset) {
    if (offset >= pcie::vm::kBenchWindowOffset && offset < pcie::vm::kBenchWindowOffset + pcie::vm::kBenchWindowLength) {
      continue;
    }
    ASSERT_EQ(bytes[offset], expected[offset]) << "offset 0x" << std::hex << offset;
  }
}

}  // namespace
