// Which loop copy() runs for a host-to-host copy of each size on this CPU (private). glibc's
// memcpy is the baseline, and stays where it is fastest; the plan replaces it in the size
// ranges where, on this kind of CPU, it is measurably slower than a plain vector loop
// (bench/copy_bench measures each range against memcpy and DPDK's rte_memcpy):
//
//  - AMD and Hygon (Zen) with AVX2 and ERMS: glibc 2.36 takes `rep movsb` from its
//    rep_movsb_threshold (2112 B with FSRM, else 4096 x vector bytes / 16: 8 KiB with its
//    32-byte vectors, 16 KiB with 64-byte ones) up to the L2 size, and rep movsb is slow there
//    for copies that fit in L1 (glibc bug 30994). The vector loop takes [that threshold,
//    L1d/2); from L1d/2 on, rep movsb wins again and memcpy keeps it.
//  - The same Zen CPUs: copies too large for a core's share of the last-level cache go
//    through non-temporal stores from `streaming_from` (a quarter of the L3 the CPU
//    reports, at least 4 MiB and at most 16 MiB: a VM's CPUID often reports a host's whole
//    L3, and glibc then keeps ordinary stores far past the point where they stop paying).
//  - Intel, every other vendor, and CPUs without AVX2: memcpy at every size (Intel's rep
//    movsb with ERMS/FSRM and glibc's non-temporal threshold are tuned for them).
//
// The plan is a pure function of CpuFacts, so a table of CPU models can test it
// (tests/copy_test.cc); host_copy_plan() is this CPU's, worked out once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>

#include "src/copy/kernels.h"

namespace pcie::copy_detail {

struct CpuFacts {
  enum class Vendor { intel, amd, hygon, other };
  Vendor vendor = Vendor::other;
  unsigned family = 0;            // CPUID's display family (AMD Zen: 0x17 and up)
  bool avx2 = false;              // usable: CPUID and the OS saves the state (XGETBV)
  bool avx512 = false;            // AVX-512F, usable likewise
  bool erms = false;              // Enhanced REP MOVSB/STOSB (CPUID 7.EBX[9])
  bool fsrm = false;              // Fast Short REP MOV (CPUID 7.EDX[4])
  std::size_t l1d_bytes = 0;      // 0: unknown
  std::size_t l3_bytes = 0;       // 0: unknown (or no L3)
};

inline constexpr std::size_t kNever = std::numeric_limits<std::size_t>::max();

struct HostCopyPlan {
  std::size_t loop_from = kNever;       // [loop_from, loop_below): `loop`, ordinary stores
  std::size_t loop_below = kNever;
  HostCopyFunction loop = nullptr;
  std::size_t loop_vector_bytes = 0;
  std::size_t streaming_from = kNever;  // [streaming_from, ...): `streaming`, non-temporal
  HostCopyFunction streaming = nullptr;
  std::size_t streaming_vector_bytes = 0;
  std::string description;              // for tools and copy_bench's context line
};

// Where glibc 2.36's memcpy starts `rep movsb` on a CPU with `facts` (its
// rep_movsb_threshold, sysdeps/x86/dl-cacheinfo.h; `ld.so --list-diagnostics` shows it as
// x86.cpu_features.rep_movsb_threshold): 2112 bytes with FSRM, else 4096 x its vector
// bytes / 16 (16 KiB where AVX-512 is usable, 8 KiB with AVX2), 2048 with SSE2 only.
std::size_t glibc_rep_movsb_threshold(const CpuFacts& facts);

// The facts of the CPU this runs on (CPUID, and the OS's AVX state saving through
// __builtin_cpu_supports; cache sizes as glibc reports them, 0 when unknown).
CpuFacts this_cpu();

// The plan for a CPU with `facts` (nothing of this CPU is read: the loops are only named,
// and run only when the facts are this CPU's, through host_copy_plan()).
HostCopyPlan plan_host_copy(const CpuFacts& facts);

// This CPU's plan, worked out once.
const HostCopyPlan& host_copy_plan();

// Copies `length` bytes by `plan`: its streaming loop from streaming_from, its loop in
// [loop_from, loop_below), memcpy elsewhere (copy() passes host_copy_plan(); tests pass
// plans whose loops count their calls).
void copy_by_plan(const HostCopyPlan& plan, std::byte* to, const std::byte* from, std::size_t length) noexcept;

}  // namespace pcie::copy_detail
