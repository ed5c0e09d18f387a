// The sse2 copy kernel: accesses up to 16 bytes. Compiled for sse2; called only
// when the CPU has it (copy.cc).
#include <cstddef>
#include <cstdint>

#include "src/copy/kernels.h"

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("sse2")
#include <immintrin.h>

#include "src/copy/span_walk.h"
#include "src/copy/vector_ops.h"

namespace pcie::copy_detail {

KernelFunctions sse2_kernel() { return vector_kernel<16, false>(); }

}  // namespace pcie::copy_detail

#pragma GCC pop_options
#endif
