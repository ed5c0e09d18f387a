// DMA buffer allocation and mapping rates, run inside the test VM:
//  - VFIO, each IOMMU backend the kernel offers, in the same run: type1 through the device
//    --bdf (default 0000:00:06.0, the edu that scripts/vm binds to vfio-pci), iommufd through
//    a second device --iommufd-bdf (default 0000:00:03.0, the other edu), since one device
//    cannot be in a type1 container and bound to an iommufd at once. Each iommufd figure is
//    also a ratio to the type1 one. Where the kernel has no iommufd (Debian 12's 6.1), the
//    reason is printed and type1 runs alone; PCIE_VFIO_BACKEND=type1|iommufd runs only that
//    one (through --bdf).
//      ./scripts/vm --own-kernel --bind 0000:00:03.0=vfio-pci --add bazel-bin/bench/dma_bench -- dma_bench
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
#include <memory>
#include <string>
#include <optional>

#include <fcntl.h>
#include <linux/memfd.h>
#include <unistd.h>

#include "bench/pool_slice.h"
#include "bench/ratio_reporter.h"
#include "pcie/dma.h"
#include "pcie/vfio.h"
#include "src/dma/pagemap.h"

namespace pcie::bench {
namespace {

// One VFIO backend under test: its container, the device that gives the container an IOMMU
// domain, and the allocator on it. Destroyed in reverse order.
struct BackendUnderTest {
  VfioContainer container;
  VfioDevice device;
  DmaAllocator allocator;
};

// The physical backend's allocator (--backend=physical).
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

void BM_DmaBuffer(benchmark::State& state, DmaAllocator* allocator, DmaBacking backing) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    auto buffer = allocator->allocate(size, {.prefer = backing});
    if (!buffer) return state.SkipWithError(buffer.error().message().c_str());
    if (buffer->backing() != backing) return state.SkipWithError("got another backing (huge pages reserved?)");
    benchmark::DoNotOptimize(buffer->data());
  }
  state.SetItemsProcessed(state.iterations());
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
  benchmark::RegisterBenchmark("BM_DmaBuffer/physical/pages", BM_DmaBuffer, &*g_allocator, pcie::DmaBacking::pages)
      ->Arg(4096);
  pairs.emplace_back("BM_DmaBuffer/physical/pages/4096", "BM_PopulatedMmap/4096");
  benchmark::RegisterBenchmark("BM_PopulatedHugeMmap", BM_PopulatedHugeMmap)->Arg(2097152);
  benchmark::RegisterBenchmark("BM_DmaBuffer/physical/huge_2m", BM_DmaBuffer, &*g_allocator, pcie::DmaBacking::huge_2m)
      ->Arg(2097152);
  pairs.emplace_back("BM_DmaBuffer/physical/huge_2m/2097152", "BM_PopulatedHugeMmap/2097152");
  unsigned gigantic_free = 0;
  std::ifstream("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages") >> gigantic_free;
  if (gigantic_free > 0) {
    constexpr std::int64_t kGiB = 1L << 30;
    benchmark::RegisterBenchmark("BM_PopulatedHugeMmap", BM_PopulatedHugeMmap)->Arg(kGiB)->Iterations(3);
    benchmark::RegisterBenchmark("BM_DmaBuffer/physical/huge_1g", BM_DmaBuffer, &*g_allocator,
                                 pcie::DmaBacking::huge_1g)
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

// Opens `bdf` through a container forced to `backend`; null (with the reason printed) when
// this kernel or user cannot.
std::unique_ptr<pcie::bench::BackendUnderTest> open_backend(pcie::VfioIommuBackend backend,
                                                            const std::string& bdf_text) {
  const std::string name(pcie::to_string(backend));
  auto not_measured = [&name](const pcie::Error& error) {
    std::printf("VFIO %s: not measured: %s\n", name.c_str(), error.message().c_str());
    return nullptr;
  };
  auto bdf = pcie::Bdf::parse(bdf_text);
  if (!bdf) return not_measured(bdf.error());
  auto container = pcie::VfioContainer::open({}, {.backend = backend});
  if (!container) return not_measured(container.error());
  auto device = container->open_device(*bdf);
  if (!device) return not_measured(device.error());
  auto allocator = pcie::DmaAllocator::create(*container);
  if (!allocator) return not_measured(allocator.error());
  std::printf("VFIO %s: %s, through %s\n", name.c_str(), container->backend_choice().reason.c_str(),
              bdf_text.c_str());
  return std::make_unique<pcie::bench::BackendUnderTest>(
      pcie::bench::BackendUnderTest{std::move(*container), std::move(*device), std::move(*allocator)});
}

int main(int argc, char** argv) {
  using namespace pcie::bench;
  benchmark::Initialize(&argc, argv);
  std::string type1_bdf = "0000:00:06.0";
  std::string iommufd_bdf = "0000:00:03.0";
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--bdf=")) type1_bdf = argv[i] + 6;
    if (arg.starts_with("--iommufd-bdf=")) iommufd_bdf = argv[i] + 14;
    if (arg == "--backend=physical") return run_physical();
  }
  // PCIE_VFIO_BACKEND narrows the run to one backend (through --bdf); unset or auto: both.
  const char* only_text = std::getenv(pcie::kVfioBackendVariable);
  auto only = pcie::parse_vfio_iommu_backend(only_text != nullptr && *only_text != '\0' ? only_text : "auto");
  if (!only) return std::fprintf(stderr, "dma_bench: %s\n", only.error().message().c_str()), 1;
  std::unique_ptr<BackendUnderTest> type1;
  std::unique_ptr<BackendUnderTest> iommufd;
  if (*only != pcie::VfioIommuBackend::iommufd) type1 = open_backend(pcie::VfioIommuBackend::type1, type1_bdf);
  if (*only == pcie::VfioIommuBackend::iommufd) {
    iommufd = open_backend(pcie::VfioIommuBackend::iommufd, type1_bdf);
  } else if (*only == pcie::VfioIommuBackend::automatic) {
    iommufd = open_backend(pcie::VfioIommuBackend::iommufd, iommufd_bdf);
  }
  if (!type1 && !iommufd) return std::fprintf(stderr, "dma_bench: no VFIO backend to measure\n"), 1;
  std::ofstream("/proc/sys/vm/nr_hugepages") << 8;  // 2 MiB pages, if the kernel can

  struct Measured {
    const char* name;
    BackendUnderTest* backend;
  };
  std::vector<Measured> measured;
  if (type1) measured.push_back({"type1", type1.get()});
  if (iommufd) measured.push_back({"iommufd", iommufd.get()});
  // 1 GiB pages exist only when reserved at boot (scripts/vm --memory 2G --cpu max
  // --append "hugepagesz=1G hugepages=1"); then 1 GiB buffers are timed too.
  unsigned gigantic_free = 0;
  std::ifstream("/sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages") >> gigantic_free;
  constexpr std::int64_t kGiB = 1L << 30;

  // The baselines: populated anonymous memory of each size, malloc for pool slices.
  for (const std::int64_t size : {4096L, 65536L, 2097152L}) {
    benchmark::RegisterBenchmark("BM_PopulatedMmap", BM_PopulatedMmap)->Arg(size);
  }
  if (gigantic_free > 0) benchmark::RegisterBenchmark("BM_PopulatedMmap", BM_PopulatedMmap)->Arg(kGiB)->Iterations(3);
  for (const std::int64_t size : {64L, 512L}) benchmark::RegisterBenchmark("BM_Malloc", BM_Malloc)->Arg(size);

  struct Case {
    pcie::DmaBacking backing;
    const char* backing_name;
    std::int64_t size;
  };
  std::vector<Case> cases = {{pcie::DmaBacking::pages, "pages", 4096},
                             {pcie::DmaBacking::pages, "pages", 65536},
                             {pcie::DmaBacking::pages, "pages", 2097152},
                             {pcie::DmaBacking::huge_2m, "huge_2m", 2097152}};
  if (gigantic_free > 0) {
    cases.push_back({pcie::DmaBacking::pages, "pages", kGiB});
    cases.push_back({pcie::DmaBacking::huge_1g, "huge_1g", kGiB});
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  std::vector<std::pair<std::string, std::string>> backend_pairs;  // iommufd against type1
  // Case by case, one backend right after the other, so that drift over the run (host load
  // under QEMU) hits both alike. Names: BM_DmaBuffer/<backend>/<backing>/<size>.
  for (const Case& c : cases) {
    for (const Measured& m : measured) {
      const std::string name = std::string("BM_DmaBuffer/") + m.name + "/" + c.backing_name;
      auto* registered =
          benchmark::RegisterBenchmark(name.c_str(), BM_DmaBuffer, &m.backend->allocator, c.backing)->Arg(c.size);
      std::string suffix = "/" + std::to_string(c.size);
      if (c.size == kGiB) {
        registered->Iterations(3);
        suffix += "/iterations:3";
      }
      pairs.emplace_back(name + suffix, "BM_PopulatedMmap" + suffix);
      if (m.backend == iommufd.get() && type1) {
        backend_pairs.emplace_back(name + suffix, std::string("BM_DmaBuffer/type1/") + c.backing_name + suffix);
      }
    }
  }
  for (const std::int64_t size : {64L, 512L}) {
    for (const Measured& m : measured) {
      const std::string name = std::string("BM_PoolSlice/") + m.name;
      const std::string suffix = "/" + std::to_string(size);
      benchmark::RegisterBenchmark(name.c_str(), BM_PoolSlice, &m.backend->allocator)->Arg(size);
      pairs.emplace_back(name + suffix, "BM_Malloc" + suffix);
      // What the pool saves: a page-sized DMA buffer (and IOMMU mapping) per small buffer.
      pairs.emplace_back(name + suffix, std::string("BM_DmaBuffer/") + m.name + "/pages/4096");
      if (m.backend == iommufd.get() && type1) backend_pairs.emplace_back(name + suffix, "BM_PoolSlice/type1" + suffix);
    }
  }
  pairs.insert(pairs.end(), backend_pairs.begin(), backend_pairs.end());
  RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  iommufd.reset();
  type1.reset();
  benchmark::Shutdown();
  return 0;
}
