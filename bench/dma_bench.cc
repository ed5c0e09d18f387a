// DMA buffer allocation and mapping rates, run inside the test VM, on one backend:
//  - VFIO type1 (default; a device bound to vfio-pci: scripts/vm binds 0000:00:06.0):
//      ./scripts/vm --add bazel-bin/bench/dma_bench -- dma_bench [--bdf=0000:00:06.0]
//  - physical addresses (--backend=physical; no device needed, root for pagemap):
//      ./scripts/vm --no-iommu --add bazel-bin/bench/dma_bench -- dma_bench --backend=physical
//   (with --memory 2304M --cpu max --append "hugepagesz=1G hugepages=1" for 1 GiB pages)
//
// Physical backend: allocate + lock + translate against a populated mmap of the same size
// and page kind; and the pagemap translation itself, per page: one pread(2) for the whole
// buffer (what the library does) against one pread per page (what DPDK's
// rte_mem_virt2phy does for each lookup).
//
// Each candidate is timed against a baseline from the same run: a DMA buffer (memory +
// MADV_DONTFORK + IOVA + VFIO_IOMMU_MAP_DMA pinning, then unmap and free) against the same
// amount of anonymous memory populated and freed (mmap + munmap); a pool slice against
// malloc/free of the same size.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <optional>

#include <fcntl.h>
#include <linux/memfd.h>
#include <unistd.h>

#include "bench/ratio_reporter.h"
#include "pcie/dma.h"
#include "pcie/vfio.h"
#include "src/dma/pagemap.h"

namespace pcie::bench {
namespace {

std::optional<VfioContainer> g_container;
std::optional<VfioDevice> g_device;
std::optional<DmaAllocator> g_allocator;

void BM_PopulatedMmap(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    if (memory == MAP_FAILED) return state.SkipWithError("mmap failed");
    benchmark::DoNotOptimize(memory);
    munmap(memory, size);
  }
  state.SetItemsProcessed(state.iterations());
}

// The same populated memory from a huge-page memfd (what a huge-page DMA buffer is made of).
void BM_PopulatedHugeMmap(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  const unsigned flags = MFD_HUGETLB | (size >= (1u << 30) ? MFD_HUGE_1GB : MFD_HUGE_2MB);
  for (auto _ : state) {
    const int fd = memfd_create("bench", flags | MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, static_cast<off_t>(size)) != 0) return state.SkipWithError("no huge pages");
    void* memory = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, fd, 0);
    close(fd);
    if (memory == MAP_FAILED) return state.SkipWithError("mmap failed");
    benchmark::DoNotOptimize(memory);
    munmap(memory, size);
  }
}

// Translating the pages of a populated 2 MiB region of 4 KiB pages (512 pages).
constexpr std::size_t kTranslatedPages = 512;

void BM_TranslateOnePreadPerPage(benchmark::State& state) {
  const std::size_t size = kTranslatedPages * 4096;
  auto* memory = static_cast<std::byte*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (memory == MAP_FAILED || fd < 0) return state.SkipWithError("no pagemap");
  for (auto _ : state) {
    std::uint64_t first = 0;
    for (std::size_t page = 0; page < kTranslatedPages; ++page) {
      std::uint64_t entry = 0;
      const auto offset = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(memory + page * 4096) / 4096 * 8);
      if (pread(fd, &entry, sizeof entry, offset) != sizeof entry) return state.SkipWithError("pread");
      if (page == 0) first = entry;
      benchmark::DoNotOptimize(entry);
    }
    benchmark::DoNotOptimize(first);
  }
  state.SetItemsProcessed(state.iterations() * kTranslatedPages);
  close(fd);
  munmap(memory, size);
}

void BM_TranslateOnePreadPerBuffer(benchmark::State& state) {
  const std::size_t size = kTranslatedPages * 4096;
  auto* memory = static_cast<std::byte*>(
      mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0));
  const int fd = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (memory == MAP_FAILED || fd < 0) return state.SkipWithError("no pagemap");
  std::vector<std::uint64_t> entries(kTranslatedPages);
  for (auto _ : state) {
    auto read = pagemap::read_entries(fd, "/proc/self/pagemap", reinterpret_cast<std::uintptr_t>(memory), entries);
    if (!read) return state.SkipWithError(read.error().message().c_str());
    // Ordinary pages are rarely contiguous: the check's verdict is not the point here.
    benchmark::DoNotOptimize(pagemap::contiguous_physical_address(entries, "bench"));
  }
  state.SetItemsProcessed(state.iterations() * kTranslatedPages);
  close(fd);
  munmap(memory, size);
}

void BM_DmaBuffer(benchmark::State& state, DmaBacking backing) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    auto buffer = g_allocator->allocate(size, {.prefer = backing});
    if (!buffer) return state.SkipWithError(buffer.error().message().c_str());
    if (buffer->backing() != backing) return state.SkipWithError("got another backing (huge pages reserved?)");
    benchmark::DoNotOptimize(buffer->data());
  }
  state.SetItemsProcessed(state.iterations());
}

void BM_Malloc(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* memory = std::malloc(size);
    benchmark::DoNotOptimize(memory);
    std::free(memory);
  }
}

void BM_PoolSlice(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  auto pool = DmaPool::create(*g_allocator, {.prefer = DmaBacking::pages});
  if (!pool) return state.SkipWithError(pool.error().message().c_str());
  { auto warm = pool->allocate(size); }  // the chunk is mapped once, outside the timing
  for (auto _ : state) {
    auto slice = pool->allocate(size);
    if (!slice) return state.SkipWithError(slice.error().message().c_str());
    benchmark::DoNotOptimize(slice->data());
  }
}

}  // namespace
}  // namespace pcie::bench

// The physical backend's benchmarks: each buffer against populated memory of its kind, and
// the translation per page.
int run_physical() {
  using namespace pcie::bench;
  g_allocator.emplace(pcie::DmaAllocator::create_physical(pcie::DeviceMayReachAllMemory::acknowledged));
  std::ofstream("/proc/sys/vm/nr_hugepages") << 8;  // 2 MiB pages, if the kernel can
  std::vector<std::pair<std::string, std::string>> pairs;
  benchmark::RegisterBenchmark("BM_PopulatedMmap", BM_PopulatedMmap)->Arg(4096);
  benchmark::RegisterBenchmark("BM_DmaBuffer/physical/pages", BM_DmaBuffer, pcie::DmaBacking::pages)->Arg(4096);
  pairs.emplace_back("BM_DmaBuffer/physical/pages/4096", "BM_PopulatedMmap/4096");
  benchmark::RegisterBenchmark("BM_PopulatedHugeMmap", BM_PopulatedHugeMmap)->Arg(2097152);
  benchmark::RegisterBenchmark("BM_DmaBuffer/physical/huge_2m", BM_DmaBuffer, pcie::DmaBacking::huge_2m)->Arg(2097152);
  pairs.emplace_back("BM_DmaBuffer/physical/huge_2m/2097152", "BM_PopulatedHugeMmap/2097152");
  unsigned gigantic_free = 0;
  std::ifstream("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages") >> gigantic_free;
  if (gigantic_free > 0) {
    constexpr std::int64_t kGiB = 1L << 30;
    benchmark::RegisterBenchmark("BM_PopulatedHugeMmap", BM_PopulatedHugeMmap)->Arg(kGiB)->Iterations(3);
    benchmark::RegisterBenchmark("BM_DmaBuffer/physical/huge_1g", BM_DmaBuffer, pcie::DmaBacking::huge_1g)
        ->Arg(kGiB)
        ->Iterations(3);
    pairs.emplace_back("BM_DmaBuffer/physical/huge_1g/1073741824/iterations:3",
                       "BM_PopulatedHugeMmap/1073741824/iterations:3");
  }
  benchmark::RegisterBenchmark("BM_TranslateOnePreadPerPage", BM_TranslateOnePreadPerPage);
  benchmark::RegisterBenchmark("BM_TranslateOnePreadPerBuffer", BM_TranslateOnePreadPerBuffer);
  pairs.emplace_back("BM_TranslateOnePreadPerBuffer", "BM_TranslateOnePreadPerPage");
  RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("pagemap translation: %zu pages per run (divide a run's time by it for the cost per page)\n",
              kTranslatedPages);
  g_allocator.reset();
  benchmark::Shutdown();
  return 0;
}

int main(int argc, char** argv) {
  using namespace pcie::bench;
  benchmark::Initialize(&argc, argv);
  std::string bdf_text = "0000:00:06.0";
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]).starts_with("--bdf=")) bdf_text = argv[i] + 6;
    if (std::string_view(argv[i]) == "--backend=physical") return run_physical();
  }
  auto bdf = pcie::Bdf::parse(bdf_text);
  auto container = pcie::VfioContainer::open();
  if (!bdf || !container) return std::fprintf(stderr, "dma_bench: cannot open VFIO\n"), 1;
  auto device = container->open_device(*bdf);
  if (!device) return std::fprintf(stderr, "dma_bench: %s\n", device.error().message().c_str()), 1;
  // Which IOMMU backend the figures are for (PCIE_VFIO_BACKEND picks one).
  std::printf("VFIO backend: %s\n", container->backend_choice().reason.c_str());
  g_container.emplace(std::move(*container));
  g_device.emplace(std::move(*device));
  g_allocator.emplace(pcie::DmaAllocator::create(*g_container).value());
  std::ofstream("/proc/sys/vm/nr_hugepages") << 8;  // 2 MiB pages, if the kernel can

  std::vector<std::pair<std::string, std::string>> pairs;
  for (const std::int64_t size : {4096L, 65536L, 2097152L}) {
    benchmark::RegisterBenchmark("BM_PopulatedMmap", BM_PopulatedMmap)->Arg(size);
    benchmark::RegisterBenchmark("BM_DmaBuffer/pages", BM_DmaBuffer, pcie::DmaBacking::pages)->Arg(size);
    pairs.emplace_back("BM_DmaBuffer/pages/" + std::to_string(size), "BM_PopulatedMmap/" + std::to_string(size));
  }
  benchmark::RegisterBenchmark("BM_DmaBuffer/huge_2m", BM_DmaBuffer, pcie::DmaBacking::huge_2m)->Arg(2097152);
  pairs.emplace_back("BM_DmaBuffer/huge_2m/2097152", "BM_PopulatedMmap/2097152");
  // 1 GiB pages exist only when reserved at boot (scripts/vm --memory 2G --cpu max
  // --append "hugepagesz=1G hugepages=1"); then 1 GiB buffers are timed too.
  unsigned gigantic_free = 0;
  std::ifstream("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages") >> gigantic_free;
  if (gigantic_free > 0) {
    constexpr std::int64_t kGiB = 1L << 30;
    benchmark::RegisterBenchmark("BM_PopulatedMmap", BM_PopulatedMmap)->Arg(kGiB)->Iterations(3);
    benchmark::RegisterBenchmark("BM_DmaBuffer/pages", BM_DmaBuffer, pcie::DmaBacking::pages)->Arg(kGiB)->Iterations(3);
    benchmark::RegisterBenchmark("BM_DmaBuffer/huge_1g", BM_DmaBuffer, pcie::DmaBacking::huge_1g)->Arg(kGiB)->Iterations(3);
    pairs.emplace_back("BM_DmaBuffer/pages/1073741824/iterations:3", "BM_PopulatedMmap/1073741824/iterations:3");
    pairs.emplace_back("BM_DmaBuffer/huge_1g/1073741824/iterations:3", "BM_PopulatedMmap/1073741824/iterations:3");
  }
  for (const std::int64_t size : {64L, 512L}) {
    benchmark::RegisterBenchmark("BM_Malloc", BM_Malloc)->Arg(size);
    benchmark::RegisterBenchmark("BM_PoolSlice", BM_PoolSlice)->Arg(size);
    pairs.emplace_back("BM_PoolSlice/" + std::to_string(size), "BM_Malloc/" + std::to_string(size));
    // What the pool saves: a page-sized DMA buffer (and IOMMU mapping) per small buffer.
    pairs.emplace_back("BM_PoolSlice/" + std::to_string(size), "BM_DmaBuffer/pages/4096");
  }
  RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  g_allocator.reset();
  g_device.reset();
  g_container.reset();
  benchmark::Shutdown();
  return 0;
}
