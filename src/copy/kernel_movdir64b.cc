// The MOVDIR64B copy kernel: 64-byte blocks are written with MOVDIR64B, a direct store
// that reaches the device as one 64-byte posted write even on an uncached window, where
// ordinary stores go out one per instruction (Intel SDM vol. 2B, MOVDIR64B). There is no
// 32-byte access (that would need AVX); heads and tails use 16-byte and register accesses.
// Loads are SSE4.1's (every CPU with MOVDIR64B has it).
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// The code below is compiled for the instruction set named (g++ and clang++ each have
// their own pragma for it; clang ignores GCC's).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("movdir64b,sse4.1"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("movdir64b,sse4.1")
#endif

#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {
namespace {

constexpr unsigned kMovdir64bWidths = 1 | 2 | 4 | 8 | 16 | 64;

struct DirectStores {
  static constexpr std::size_t kWidest = 64;
  template <std::size_t N>
  void move(std::uintptr_t device, std::byte* host) {
    if constexpr (N == 64) {
      _movdir64b(reinterpret_cast<void*>(device), host);
    } else if constexpr (N == 16) {
      store_vector<16>(device, host);
    } else if constexpr (N <= 8) {
      store_register<N>(device, host);
    } else {
      // 32 bytes: never asked for, kMovdir64bWidths leaves it out of every walk.
      __builtin_trap();
    }
  }
};

void direct_stores(const SpanJob& job) {
  DirectStores ops;
  walk_span(ops, job.device, job.host, job.length, job.allowed & kMovdir64bWidths);
}

}  // namespace

constexpr KernelFunctions kLoads = vector_kernel<16, true>();
constinit const KernelFunctions kMovdir64bKernel = {64, direct_stores, kLoads.from_device,
                                                    kLoads.from_device_streaming, direct_stores};

}  // namespace pcie::copy_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
