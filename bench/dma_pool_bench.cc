// DmaPool slices against malloc/free of the same size, on the host without a device or
// root: the pool's chunks come from the fake IOMMU of pcie::testing::DeviceModel (ordinary
// memory, bus addresses handed out in order), so what is timed is the pool's own path:
// allocate (aligned, zeroed) and the slice's release. The chunk is mapped once, outside
// the timing, as a driver's pool is after its first allocations.
//
//   bazel run -c opt //bench:dma_pool_bench -- --benchmark_repetitions=5
//
// Each BM_PoolSlice/<size> is printed as a time ratio to BM_Malloc/<size> from the same run
// (median of the repetitions when repeated); bench/dma_bench.cc times the same pair in the
// VM over a real IOMMU.
//
// --after-a-thread starts and joins one thread before timing: from then on glibc's locks
// and libstdc++'s reference counts take their atomic paths (a single-threaded process
// skips them), as in a driver with any other thread. malloc's per-thread cache takes no
// lock either way.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "bench/pool_slice.h"
#include "bench/ratio_reporter.h"
#include "pcie/dma.h"
#include "pcie/testing/device_model.h"

namespace pcie::bench {
namespace {

constexpr std::int64_t kSizes[] = {64, 512};

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  using namespace pcie::bench;
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) != "--after-a-thread") {
      return std::fprintf(stderr, "dma_pool_bench: unknown argument %s\n", argv[i]), 2;
    }
    std::thread([] {}).join();
    std::printf("timed after a thread was started and joined: the multithreaded paths\n");
  }
  pcie::testing::DeviceModel model;
  const std::unique_ptr<pcie::Device> device = model.open();
  if (device == nullptr) return std::fprintf(stderr, "dma_pool_bench: the device model did not open\n"), 1;
  auto allocator = device->dma_allocator();
  if (!allocator) return std::fprintf(stderr, "dma_pool_bench: %s\n", allocator.error().message().c_str()), 1;
  std::vector<std::pair<std::string, std::string>> pairs;
  // Interleaved, size by size, so that drift over the run hits both alike.
  for (const std::int64_t size : kSizes) {
    benchmark::RegisterBenchmark("BM_Malloc", BM_Malloc)->Arg(size);
    benchmark::RegisterBenchmark("BM_PoolSlice", BM_PoolSlice, &*allocator)->Arg(size);
    const std::string suffix = "/" + std::to_string(size);
    pairs.emplace_back("BM_PoolSlice" + suffix, "BM_Malloc" + suffix);
  }
  RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
