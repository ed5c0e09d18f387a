// The copy path's kernel choice (private): which kernels this CPU has (checked once, before
// any of their code runs), the automatic choice per direction and memory type, and the
// access-size masks the walks use (span_walk.h: bit k = 2^k bytes).
#pragma once

#include <cstddef>
#include <string>

#include "pcie/copy.h"
#include "src/copy/kernels.h"

namespace pcie::copy_detail {

// Access sizes a kernel can make with general-purpose registers.
inline constexpr unsigned kRegisterWidths = 1 | 2 | 4 | 8;

// The loops of a kernel this CPU has (only call after copy_kernel_supported()).
const KernelFunctions& functions_of(CopyKernel kernel);
// Access sizes `kernel` can make; 0 for automatic and libc.
unsigned kernel_widths(CopyKernel kernel);
// The access sizes a window allows: its register widths, plus 16/32/64-byte vector
// accesses where it allows 64-bit ones.
unsigned window_widths(WidthSet allowed);
// A power of two from 1 to 64.
bool valid_max_access(std::size_t bytes);
// `mask` without sizes above `max_access_bytes`.
unsigned cap_widths(unsigned mask, std::size_t max_access_bytes);
// "8/16/32", for messages; "none" for an empty mask.
std::string widths_text(unsigned mask);

}  // namespace pcie::copy_detail
