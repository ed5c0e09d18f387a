// The pair both DMA pool benchmarks time (bench/dma_pool_bench on the host, bench/dma_bench
// in the VM over a real IOMMU): malloc + free of a size, and a DmaPool slice of that size
// allocated and released, its chunk mapped once outside the timing.
#pragma once

#include <benchmark/benchmark.h>

#include <cstdlib>

#include "pcie/dma.h"

namespace pcie::bench {

inline void BM_Malloc(benchmark::State& state) {
  const auto size = static_cast<std::size_t>(state.range(0));
  for (auto _ : state) {
    void* memory = std::malloc(size);
    benchmark::DoNotOptimize(memory);
    std::free(memory);
  }
}

inline void BM_PoolSlice(benchmark::State& state, const DmaAllocator* allocator) {
  const auto size = static_cast<std::size_t>(state.range(0));
  auto pool = DmaPool::create(*allocator, {.prefer = DmaBacking::pages});
  if (!pool) return state.SkipWithError(pool.error().message().c_str());
  { auto warm = pool->allocate(size); }  // the chunk is mapped once, outside the timing
  for (auto _ : state) {
    auto slice = pool->allocate(size);
    if (!slice) return state.SkipWithError(slice.error().message().c_str());
    benchmark::DoNotOptimize(slice->data());
  }
}

}  // namespace pcie::bench
