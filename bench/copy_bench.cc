// Host-memory copy throughput, 64 B to 1 GiB, on 4 KiB pages and on huge pages: our copy
// path against glibc memcpy (the baseline of every ratio), DPDK's rte_memcpy and a plain
// volatile 32-bit loop (what pcimem-style tools do), all measured in the same run.
//
//   ours            pcie::copy, automatic kernel: this CPU's host copy plan (memcpy inline
//                   below 2 KiB; the context line says what it does above)
//   ours_workers    pcie::copy with CopyWorkers (all other cores) past 8 MiB
//   ours_streaming  pcie::copy forced to the widest vector kernel (non-temporal stores)
//   ours_mmio       pcie::copy_to_device onto this memory viewed as a write-combined
//                   window: the MMIO-safe kernel's instruction cost, without a device
//
// This machine has no BAR we may map (its devices are its own disk and network), so BAR
// throughput is `pciectl bench`'s job, on a device of yours or in the test VM.
//
// Flags (before Google Benchmark's own): --max-size=BYTES (default 1 GiB),
// --pages=4k|huge|both (default both). Huge pages come from hugetlbfs when some are
// reserved (echo 1100 > /proc/sys/vm/nr_hugepages), else from transparent huge pages;
// the context lines say which, and how much of each buffer they cover.
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "bench/ratio_reporter.h"
#include "bench/rte_memcpy_wrapper.h"
#include "pcie/copy.h"
#include "pcie/sys/mapping.h"

namespace pcie::bench {
namespace {

constexpr std::size_t kHugePage = 2u << 20;

struct Buffer {
  pcie::Mapping mapping;      // owns the whole mmap, padding included
  std::byte* data = nullptr;  // 2 MiB-aligned inside it
  std::size_t size = 0;
  std::string backing;
};

// Kilobytes of `address`'s mapping that /proc/self/smaps reports as huge pages.
std::size_t huge_kilobytes(const void* address) {
  std::ifstream smaps("/proc/self/smaps");
  const auto wanted = reinterpret_cast<std::uintptr_t>(address);
  bool inside = false;
  std::size_t kilobytes = 0;
  for (std::string line; std::getline(smaps, line);) {
    std::uintptr_t start = 0, end = 0;
    char dash = 0;
    std::istringstream fields(line);
    if (fields >> std::hex >> start >> dash >> end && dash == '-') {
      inside = wanted >= start && wanted < end;
      continue;
    }
    if (!inside) continue;
    std::istringstream values(line);
    std::string key;
    std::size_t value = 0;
    values >> key >> value;
    if (key == "AnonHugePages:" || key == "Private_Hugetlb:" || key == "Shared_Hugetlb:") kilobytes += value;
  }
  return kilobytes;
}

Buffer allocate(std::size_t size, bool huge) {
  Buffer buffer;
  buffer.size = (size + kHugePage - 1) / kHugePage * kHugePage;
  void* mapped = MAP_FAILED;
  if (huge) {
    mapped = mmap(nullptr, buffer.size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
    if (mapped != MAP_FAILED) {
      buffer.mapping = pcie::Mapping(mapped, buffer.size);
      buffer.backing = "hugetlbfs 2 MiB pages";
    }
  }
  if (mapped == MAP_FAILED) {
    // Over-allocate to align to 2 MiB, so transparent huge pages can back all of it.
    const std::size_t padded = buffer.size + kHugePage;
    mapped = mmap(nullptr, padded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mapped == MAP_FAILED) return {};
    buffer.mapping = pcie::Mapping(mapped, padded);
    auto* base = static_cast<std::byte*>(mapped);
    const auto address = reinterpret_cast<std::uintptr_t>(base);
    auto* aligned = base + ((kHugePage - address % kHugePage) % kHugePage);
    madvise(aligned, buffer.size, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
    mapped = aligned;
    buffer.backing = huge ? "transparent huge pages" : "4 KiB pages";
  }
  buffer.data = static_cast<std::byte*>(mapped);
  std::memset(buffer.data, 0x5a, buffer.size);  // fault every page in before timing
  if (huge) buffer.backing += ", " + std::to_string(huge_kilobytes(buffer.data) / 1024) + " MiB huge";
  return buffer;
}

struct Pair {
  Buffer source, destination;
};
std::map<bool, Pair> g_buffers;  // by "huge"
std::optional<CopyWorkers> g_workers;

enum class Candidate { ours, ours_workers, ours_streaming, ours_mmio, memcpy, rte_memcpy, volatile32 };
constexpr const char* kCandidateNames[] = {"ours",   "ours_workers", "ours_streaming", "ours_mmio",
                                           "memcpy", "rte_memcpy",   "volatile32"};

CopyKernel widest_kernel() {
  for (CopyKernel kernel : {CopyKernel::avx512, CopyKernel::avx2, CopyKernel::sse2}) {
    if (copy_kernel_supported(kernel)) return kernel;
  }
  return CopyKernel::registers;
}

void volatile_copy32(std::byte* destination, const std::byte* source, std::size_t length) {
  auto* to = reinterpret_cast<volatile std::uint32_t*>(destination);
  const auto* from = reinterpret_cast<const volatile std::uint32_t*>(source);
  for (std::size_t i = 0; i < length / 4; ++i) to[i] = from[i];
}

void run_copy(benchmark::State& state, Candidate candidate, bool huge) {
  const auto length = static_cast<std::size_t>(state.range(0));
  Pair& pair = g_buffers.at(huge);
  std::byte* to = pair.destination.data;
  const std::byte* from = pair.source.data;
  const MmioView window(to, pair.destination.size, WidthSet::all(), "bench", MemoryType::write_combined);
  const CopyOptions with_workers{.workers = &*g_workers};
  const CopyOptions streaming{.kernel = widest_kernel()};
  for (auto _ : state) {
    switch (candidate) {
      case Candidate::ours: benchmark::DoNotOptimize(pcie::copy(to, from, length)); break;
      case Candidate::ours_workers: benchmark::DoNotOptimize(pcie::copy(to, from, length, with_workers)); break;
      case Candidate::ours_streaming: benchmark::DoNotOptimize(pcie::copy(to, from, length, streaming)); break;
      case Candidate::ours_mmio: benchmark::DoNotOptimize(copy_to_device(window, 0, from, length)); break;
      case Candidate::memcpy: std::memcpy(to, from, length); break;
      case Candidate::rte_memcpy: rte_memcpy_out_of_line(to, from, length); break;
      case Candidate::volatile32: volatile_copy32(to, from, length); break;
    }
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(length));
}

std::string size_name(std::size_t bytes) {
  if (bytes >= (1u << 30)) return std::to_string(bytes >> 30) + "G";
  if (bytes >= (1u << 20)) return std::to_string(bytes >> 20) + "M";
  if (bytes >= (1u << 10)) return std::to_string(bytes >> 10) + "K";
  return std::to_string(bytes);
}

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  using namespace pcie::bench;
  std::size_t max_size = std::size_t{1} << 30;
  std::string pages = "both";
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument.starts_with("--max-size=")) {
      max_size = std::stoull(argument.substr(11));
    } else if (argument.starts_with("--pages=")) {
      pages = argument.substr(8);
    } else {
      rest.push_back(argv[i]);
    }
  }
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());

  const unsigned helpers = std::max(1u, std::thread::hardware_concurrency()) - 1;
  auto workers = pcie::CopyWorkers::start(std::max(1u, helpers));
  if (!workers) return std::fprintf(stderr, "copy_bench: %s\n", workers.error().message().c_str()), 1;
  g_workers.emplace(std::move(*workers));
  benchmark::AddCustomContext("copy workers", std::to_string(g_workers->helpers()) + " helper threads");
  benchmark::AddCustomContext("ours (host copy plan)", pcie::host_copy_plan_description());
  benchmark::AddCustomContext("ours_streaming kernel", std::string(pcie::to_string(widest_kernel())));
  benchmark::AddCustomContext(
      "ours_mmio kernel",
      std::string(pcie::to_string(pcie::choose_copy_kernel(pcie::CopyDirection::to_device,
                                                            pcie::MemoryType::write_combined, pcie::WidthSet::all()))));

  std::vector<std::size_t> sizes;
  // x4 from 64 B (the plan's ranges start at 2 KiB, 16-24 KiB and 4-16 MiB), plus 2 KiB.
  for (std::size_t size = 64; size <= max_size; size *= 4) {
    sizes.push_back(size);
    if (size == 1024 && 2048 <= max_size) sizes.push_back(2048);
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const bool huge : {false, true}) {
    if ((huge && pages == "4k") || (!huge && pages == "huge")) continue;
    Pair pair{allocate(max_size, huge), allocate(max_size, huge)};
    if (pair.source.data == nullptr || pair.destination.data == nullptr) {
      return std::fprintf(stderr, "copy_bench: cannot allocate 2 x %zu bytes\n", max_size), 1;
    }
    const std::string label = huge ? "huge" : "4k";
    benchmark::AddCustomContext(label + " buffers", pair.source.backing + " / " + pair.destination.backing);
    g_buffers.emplace(huge, std::move(pair));
    for (std::size_t size : sizes) {
      for (int c = 0; c <= static_cast<int>(Candidate::volatile32); ++c) {
        const auto candidate = static_cast<Candidate>(c);
        const std::string name = std::string("copy/") + kCandidateNames[c] + "/" + label + "/" + size_name(size);
        benchmark::RegisterBenchmark(name.c_str(), run_copy, candidate, huge)
            ->Arg(static_cast<std::int64_t>(size))
            ->ArgName("bytes")
            ->UseRealTime();
        const std::string suffix = "/bytes:" + std::to_string(size) + "/real_time";
        if (candidate != Candidate::memcpy) {
          pairs.emplace_back(name + suffix, "copy/memcpy/" + label + "/" + size_name(size) + suffix);
        }
        // The goal: ours at least as fast as the faster of memcpy and rte_memcpy.
        if (candidate == Candidate::ours) {
          pairs.emplace_back(name + suffix, "copy/rte_memcpy/" + label + "/" + size_name(size) + suffix);
        }
      }
    }
  }
  RatioReporter reporter(pairs, RatioKind::speed);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
