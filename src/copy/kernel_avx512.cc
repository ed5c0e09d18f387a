// The avx512 copy kernel: accesses up to 64 bytes. Compiled for avx512f; called only
// when the CPU has it (copy.cc).
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx512f")
#include <immintrin.h>

#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {

KernelFunctions avx512_kernel() { return vector_kernel<64, true>(); }

}  // namespace pcie::copy_detail

#pragma GCC pop_options
#endif
