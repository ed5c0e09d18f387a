// Entry points of the bulk copy kernels (src/copy/kernel_*.cc), one file per instruction
// set, each compiled for its own target. Dispatch and all checks live in copy.cc: a kernel
// is called only with a span it may access and only on a CPU that has its instructions.
//
// Each kernel is described by a constant (constinit data, not a function): nothing compiled
// for a wider instruction set may run before the CPU check, and a function that merely
// returned the descriptor would be compiled for the kernel's target too (GCC used pinsrq,
// vpinsrq and vinserti128 to build the struct, which faulted on CPUs without them).
#pragma once

#include <cstddef>
#include <cstdint>

namespace pcie::copy_detail {

struct SpanJob {
  std::uintptr_t device = 0;  // the window side (or the destination of a host copy)
  std::byte* host = nullptr;  // the host side (only read for writes to the device)
  std::uint64_t length = 0;
  unsigned allowed = 0;       // allowed access sizes, bit k = 2^k bytes (span_walk.h)
};

using SpanFunction = void (*)(const SpanJob&);

struct KernelFunctions {
  std::size_t widest = 0;                     // the widest access, in bytes
  SpanFunction to_device = nullptr;           // aligned stores
  SpanFunction from_device = nullptr;         // aligned loads
  SpanFunction from_device_streaming = nullptr;  // streaming loads (WC windows)
  SpanFunction host_copy = nullptr;           // device = destination; non-temporal stores
};

// Host-to-host loops (host_loops.h) of one vector width: copy()'s automatic kernel where
// glibc's memcpy is slow on this CPU (host_plan.h says where). Both sides write-back memory.
using HostCopyFunction = void (*)(std::byte* to, const std::byte* from, std::size_t length);

struct HostCopyLoops {
  std::size_t vector_bytes = 0;          // 32 (AVX2) or 64 (AVX-512)
  HostCopyFunction cached = nullptr;     // ordinary stores
  HostCopyFunction streaming = nullptr;  // non-temporal stores, fenced before it returns
};

extern const KernelFunctions kRegistersKernel;
#if defined(__x86_64__)
extern const KernelFunctions kSse2Kernel;
extern const KernelFunctions kSse41Kernel;
extern const KernelFunctions kAvx2Kernel;
extern const KernelFunctions kAvx512Kernel;
extern const KernelFunctions kMovdir64bKernel;
extern const HostCopyLoops kAvx2HostLoops;
extern const HostCopyLoops kAvx512HostLoops;
#endif

}  // namespace pcie::copy_detail
