// Runs inside the test VM: the bulk copy path against a real kernel's write-combined and
// uncached mappings of ivshmem's BAR2 (resource2_wc, resource2), with every copy kernel
// this (emulated) CPU has; the host side (vm_copy_test.cc) then checks every byte of the
// BAR's backing file. Also runs pciectl bench against ivshmem and edu (sanity, not speed:
// the VM runs under software emulation).
//
// Flags (after GoogleTest's): none.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "pcie/copy.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/fake_sysfs.h"
#include "tests/cli_helpers.h"
#include "tests/vm/copy_pattern.h"

namespace pcie {
namespace {

const Bdf kIvshmem = testing::kVmIvshmem;  // 00:04.0

Result<BarMapping> map_ivshmem(MemoryType type) {
  return BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.memory_type = type});
}

// The source bytes of a span: what must land at span.offset onwards.
std::vector<std::byte> source_of(const vm::CopySpan& span) {
  std::vector<std::byte> source(span.host_offset + span.length);
  for (std::uint64_t i = 0; i < span.length; ++i) {
    source[span.host_offset + i] = static_cast<std::byte>(vm::pattern_byte(span.offset + i));
  }
  return source;
}

class GuestCopy : public ::testing::TestWithParam<std::size_t> {};

// Writes region k's spans through the write-combined mapping with kernel k, reads them
// back through both mappings, and marks the region written in the header.
TEST_P(GuestCopy, WritesThroughWcBarAndReadsBack) {
  const std::size_t region = GetParam();
  const std::string_view name = vm::kCopyKernels[region];
  CopyOptions options;
  if (name != "32-bit") options.kernel = copy_kernel_from_string(name).value();
  // One memory type at a time: while another mapping of the BAR exists, x86 PAT gives a
  // new one the existing one's type (pcie/memory_type.h).
  const auto restricted = [&](Result<BarMapping> mapping) {
    if (mapping && name == "32-bit") mapping->restrict_widths(WidthSet::only(Width::bits32));
    return mapping;
  };
  if (!copy_kernel_supported(options.kernel)) {
    // The kernel this CPU lacks is refused up front, and the region stays unwritten.
    auto wc = restricted(map_ivshmem(MemoryType::write_combined));
    ASSERT_TRUE(wc) << wc.error().message();
    std::byte byte{};
    auto refused = copy_to_device(*wc, vm::copy_region_base(region), &byte, 1, options);
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::not_supported) << refused.error().message();
    RecordProperty("kernel_missing", std::string(name));
    return;
  }
  {
    auto wc = restricted(map_ivshmem(MemoryType::write_combined));
    ASSERT_TRUE(wc) << wc.error().message();
    for (const vm::CopySpan& span : vm::copy_spans(region)) {
      const std::vector<std::byte> source = source_of(span);
      auto written = copy_to_device(*wc, span.offset, source.data() + span.host_offset, span.length, options);
      ASSERT_TRUE(written) << written.error().message();
    }
  }
  for (const MemoryType type : {MemoryType::write_combined, MemoryType::uncached}) {
    auto mapping = restricted(map_ivshmem(type));
    ASSERT_TRUE(mapping) << mapping.error().message();
    for (const vm::CopySpan& span : vm::copy_spans(region)) {
      const std::vector<std::byte> source = source_of(span);
      std::vector<std::byte> back(span.host_offset + span.length + 1, std::byte{0xee});
      auto read = copy_from_device(back.data() + span.host_offset, *mapping, span.offset, span.length, options);
      ASSERT_TRUE(read) << read.error().message();
      ASSERT_TRUE(std::equal(source.begin() + static_cast<std::ptrdiff_t>(span.host_offset), source.end(),
                             back.begin() + static_cast<std::ptrdiff_t>(span.host_offset)))
          << name << " via " << to_string(type) << ": span at 0x" << std::hex << span.offset;
      EXPECT_EQ(back.back(), std::byte{0xee}) << "read past the span";
    }
  }
  auto header = map_ivshmem(MemoryType::uncached);  // unrestricted, for 8-bit writes
  ASSERT_TRUE(header) << header.error().message();
  ASSERT_TRUE(header->write(Width::bits8, region, 1));  // region written
}


INSTANTIATE_TEST_SUITE_P(EveryKernel, GuestCopy, ::testing::Range<std::size_t>(0, vm::kCopyKernels.size()),
                         [](const ::testing::TestParamInfo<std::size_t>& info) {
                           std::string name(vm::kCopyKernels[info.param]);
                           for (char& c : name) {
                             if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
                           }
                           return name;
                         });

cli::CommandResult pciectl(const std::string& arguments) {
  static const std::string scratch = cli::make_scratch_dir("guest-copy");
  return cli::run_command("pciectl " + arguments, scratch);
}

// Latencies are only checked for shape: under software emulation the clock's own cost
// (subtracted) is as large and as noisy as an access, so medians of 0 ns occur.
void expect_sane_bench(const cli::CommandResult& run, std::size_t rows) {
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  ASSERT_EQ(json["throughput"].size(), rows) << run.out;
  for (const auto& row : json["throughput"]) EXPECT_GT(row["median_gbs"].get<double>(), 0) << row;
  for (const auto& latency : json["latency"]) {
    EXPECT_GE(latency["median_ns"].get<double>(), 0) << latency;
    EXPECT_GE(latency["p99_ns"].get<double>(), latency["median_ns"].get<double>()) << latency;
  }
}

TEST(GuestBench, IvshmemBothMappingsReadAndWrite) {
  const cli::CommandResult run = pciectl(
      "bench 0000:00:04.0 bar2 --offset " + std::to_string(vm::kBenchWindowOffset) + " --length " +
      std::to_string(vm::kBenchWindowLength) +
      " --sizes 64,4K,1M --widths 32,64,copy --repetitions 3 --min-time-ms 5 --latency-samples 200 --allow-write --json");
  // 2 mappings x 2 directions x 3 access kinds x 3 sizes; 2 latencies per mapping.
  expect_sane_bench(run, 36);
  EXPECT_NE(run.err.find("will overwrite 0000:00:04.0 BAR2 [0x1800000, 0x1c00000) (4 MiB)"), std::string::npos)
      << run.err;
}

// The CPU flags the guest kernel reports (/proc/cpuinfo), for each kernel's feature.
bool cpuinfo_has(const std::string& flag) {
  const std::string cpuinfo = cli::slurp("/proc/cpuinfo");
  const auto flags = cpuinfo.find("\nflags");
  const auto end = cpuinfo.find('\n', flags + 1);
  const std::string line = " " + cpuinfo.substr(flags, end - flags) + " ";
  return line.find(" " + flag + " ") != std::string::npos;
}

bool cpu_has_kernel(std::string_view kernel) {
  if (kernel == "registers" || kernel == "sse2") return true;
  if (kernel == "sse4.1") return cpuinfo_has("sse4_1");
  if (kernel == "avx2") return cpuinfo_has("avx2");
  if (kernel == "avx512") return cpuinfo_has("avx512f");
  return cpuinfo_has("movdir64b") && cpuinfo_has("sse4_1");
}

// On every emulated CPU model: pciectl bench with each copy kernel either measures (the CPU
// has it) or refuses with a one-line usage error naming the missing instructions; never
// SIGILL (exit 132).
TEST(GuestBench, EveryCopyKernelRunsOrIsRefused) {
  for (const std::string kernel : {"registers", "sse2", "sse4.1", "avx2", "avx512", "movdir64b"}) {
    SCOPED_TRACE(kernel);
    EXPECT_EQ(copy_kernel_supported(copy_kernel_from_string(kernel).value()), cpu_has_kernel(kernel));
    const cli::CommandResult run = pciectl("bench 0000:00:04.0 bar2 --offset " +
                                           std::to_string(vm::kBenchWindowOffset) +
                                           " --length 64K --sizes 4K --widths copy --repetitions 1 --min-time-ms 1 "
                                           "--latency-samples 10 --allow-write --json --kernel " + kernel);
    if (cpu_has_kernel(kernel)) {
      EXPECT_EQ(run.exit_code, 0) << run.err;
      EXPECT_NE(run.out.find("copy (" + kernel + ")"), std::string::npos) << run.out;
    } else {
      EXPECT_EQ(run.exit_code, 2) << run.err;
      EXPECT_NE(run.err.find("this CPU has no " + kernel + " instructions"), std::string::npos) << run.err;
      EXPECT_EQ(cli::lines_of(run.err).back().find("pciectl: error: "), 0u) << run.err;
    }
  }
}

TEST(GuestBench, EduUncachedOnlyAboveItsRegisters) {
  // edu's registers sit below 0x100 (a write to 0x98 would start a DMA); from 0x1000 on
  // its BAR ignores writes and reads ~0.
  const cli::CommandResult run = pciectl(
      "bench 0000:00:03.0 bar0 --offset 0x1000 --length 64K --sizes 64,4K --widths 32,64,copy --repetitions 3 "
      "--min-time-ms 5 --latency-samples 100 --allow-write --json");
  expect_sane_bench(run, 12);  // uncached only: edu's BAR is not prefetchable
  const cli::CommandResult wc = pciectl("bench 0000:00:03.0 bar0 --mapping wc");
  EXPECT_EQ(wc.exit_code, 2);
  EXPECT_NE(wc.err.find("not prefetchable"), std::string::npos) << wc.err;
}

}  // namespace
}  // namespace pcie
