// The sse41 copy kernel: accesses up to 16 bytes. Compiled for sse4.1; called only
// when the CPU has it (copy.cc); the descriptor below is constant data, so no code of
// this file runs before that check.
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#include <immintrin.h>

// The code below is compiled for the instruction set named (g++ and clang++ each have
// their own pragma for it; clang ignores GCC's).
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("sse4.1"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("sse4.1")
#endif

#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {

constinit const KernelFunctions kSse41Kernel = vector_kernel<16, true>();

}  // namespace pcie::copy_detail

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif
#endif
