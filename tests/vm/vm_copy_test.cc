// The bulk copy path on a real kernel: boots the test VM with a 32 MiB ivshmem (backed by
// a file here) on the QEMU CPU model --cpu names, runs guest_copy_test in it, then checks
// every byte of the backing file against what the guest's copies meant to write
// (copy_pattern.h), outside pciectl bench's window. The CPU model fixes which kernels may
// run, so the host knows exactly which regions must be written and which must stay empty.
//
// Flags: --pcie-vm=PATH --guest=PATH --pciectl=PATH --cpu=MODEL (Bazel passes them).
#include <gtest/gtest.h>

#include <fstream>
#include <iterator>

#include "tests/vm/copy_pattern.h"
#include "tests/vm/vm_harness.h"

namespace {

std::filesystem::path g_ivshmem_file;
std::string g_cpu;

// The copy kernels each emulated CPU model has under QEMU 7.2's software emulation
// (target/i386/cpu.c): qemu64 stops at SSE3, Nehalem adds SSSE3 to SSE4.2 but no AVX, and
// TCG's "max" adds AVX2 but neither AVX-512 nor MOVDIR64B.
bool model_has(const std::string& cpu, std::string_view kernel) {
  if (kernel == "auto" || kernel == "registers" || kernel == "sse2" || kernel == "32-bit") return true;
  if (kernel == "sse4.1") return cpu == "Nehalem" || cpu == "max";
  if (kernel == "avx2") return cpu == "max";
  return false;  // avx512, movdir64b
}

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path& work_dir) {
  g_ivshmem_file = work_dir / "ivshmem";
  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest", "pciectl"}, "guest_copy_test");
  g_cpu = flags.contains("cpu") ? flags.at("cpu") : "max";
  options.vm_arguments = {"--cpu",          g_cpu, "--ivshmem-file", g_ivshmem_file.string(),
                          "--ivshmem-size", std::to_string(pcie::vm::kCopyIvshmemSize)};
  return options;
}

namespace {

TEST(HostIvshmem, BackingFileHoldsExactlyWhatTheCopiesWrote) {
  std::ifstream file(g_ivshmem_file, std::ios::binary);
  ASSERT_TRUE(file) << g_ivshmem_file;
  const std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  ASSERT_EQ(bytes.size(), pcie::vm::kCopyIvshmemSize);
  const std::vector<std::uint8_t> header(bytes.begin(), bytes.begin() + pcie::vm::kCopyKernels.size());
  // The guest's CPU model is fixed, so which kernels ran is known: a kernel that wrongly
  // claimed to be missing would leave its region empty and pass the byte check below.
  for (std::size_t region = 0; region < pcie::vm::kCopyKernels.size(); ++region) {
    const std::string_view name = pcie::vm::kCopyKernels[region];
    EXPECT_EQ(header[region], model_has(g_cpu, name) ? 1 : 0) << name << " on -cpu " << g_cpu;
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
