// The avx2 copy kernel: accesses up to 32 bytes. Compiled for avx2; called only
// when the CPU has it (copy.cc); the descriptor below is constant data, so no code of
// this file runs before that check.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// The code below is compiled for the instruction set named (g++ and clang++ each have
// their own pragma for it; clang ignores GCC's).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx2")
#endif

#include "src/copy/host_loops.h"
#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {

constinit const KernelFunctions kAvx2Kernel = vector_kernel<32, true>();
constinit const HostCopyLoops kAvx2HostLoops = {32, copy_host_vectors<32, false>, copy_host_vectors<32, true>};

}  // namespace pcie::copy_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
