// The sse41 copy kernel: accesses up to 16 bytes. Compiled for sse4.1; called only
// when the CPU has it (copy.cc); the descriptor below is constant data, so no code of
// this file runs before that check.
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("sse4.1")
#include <immintrin.h>

#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {

constinit const KernelFunctions kSse41Kernel = vector_kernel<16, true>();

}  // namespace pcie::copy_detail

#pragma GCC pop_options
#endif
