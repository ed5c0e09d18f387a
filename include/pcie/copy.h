// Bulk copies between host memory and device windows (BARs), and between host buffers.
//
// memcpy is the wrong tool for MMIO: it may store a byte twice (overlapping tails), use
// access widths the device refuses, and read uncached memory eight bytes at a time. This
// path keeps the rules of the kernel's memcpy_toio/memcpy_fromio and adds speed:
//
//  - every device byte is accessed exactly once, by non-overlapping accesses;
//  - every access is naturally aligned and no wider than the window allows: 1/2/4/8-byte
//    register accesses where the region allows them, and 16/32/64-byte vector accesses
//    only where it allows 64-bit ones (a region restricted to 32-bit accesses, as many FPGA
//    register files are, is copied 32 bits at a time);
//  - the unaligned head and tail are done with the widest narrower accesses that fit;
//  - copies to write-combined windows end with one store fence (sfence), so a doorbell
//    written afterwards reaches the device after the data; reads from write-combined
//    windows use streaming loads (movntdqa, SSE4.1), which fetch a whole line per access
//    instead of one uncached read per access.
//
// The kernel (the instruction set the loop uses) is picked at run time from the window's
// memory type and the CPU's features; CopyOptions::kernel overrides it for experiments.
// Nothing here allocates or prints; errors are values.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "pcie/error.h"
#include "pcie/mmio.h"
#include "pcie/region.h"

namespace pcie {

// The instruction sequence a copy's loop uses (its widest access and load/store kind).
enum class CopyKernel : std::uint8_t {
  automatic,  // picked from the memory type and the CPU (see choose_copy_kernel)
  registers,  // 1/2/4/8-byte accesses only, like the kernel's memcpy_toio; any CPU
  sse2,       // 16-byte vector accesses (movdqa)
  sse41,      // sse2, with streaming 16-byte loads (movntdqa) from write-combined windows
  avx2,       // 32-byte accesses; streaming 32-byte loads from write-combined windows
  avx512,     // 64-byte accesses (one whole cache line / WC buffer per store)
  movdir64b,  // stores by MOVDIR64B: one 64-byte posted write each, even to uncached
              // windows (Intel SDM vol. 2B); loads as avx512 or the best other kernel
  libc,       // glibc's memcpy: host-to-host copies only (write-back memory)
};

// "registers", "sse2", ... ("auto" for automatic).
std::string_view to_string(CopyKernel kernel);
// The inverse of to_string ("auto" or "automatic" -> automatic); invalid_argument otherwise.
Result<CopyKernel> copy_kernel_from_string(std::string_view name);
// Whether this CPU (and OS: AVX state saving) can run `kernel`.
bool copy_kernel_supported(CopyKernel kernel);
// The widest single access `kernel` makes, in bytes (registers: 8; libc: 0, unknown).
std::size_t copy_kernel_access_bytes(CopyKernel kernel);

// Which way a copy goes, which decides the kernel choose_copy_kernel() picks: into a device
// window, out of one, or between host buffers.
enum class CopyDirection { to_device, from_device, host_to_host };

class CopyWorkers;

// How a copy is done: the kernel, the widest access, and helper threads for large copies.
struct CopyOptions {
  CopyKernel kernel = CopyKernel::automatic;  // automatic: choose_copy_kernel()'s pick
  // The widest single access allowed, in bytes (1..64, a power of two): 8 keeps a copy
  // to register-sized accesses on a window that allows 64-bit ones.
  std::size_t max_access_bytes = 64;
  // Helper threads to share copies of at least `parallel_threshold` bytes. One core's
  // outstanding misses cap its bandwidth well below the memory's (or the link's); a copy
  // split over cores goes faster. Never used unless given: no hidden threads.
  const CopyWorkers* workers = nullptr;
  std::uint64_t parallel_threshold = std::uint64_t{8} << 20;  // bytes (8 MiB); shorter: one thread
};

// The kernel that `automatic` resolves to for this direction, memory type and window
// widths on this CPU (tools print it). With options.kernel set, that kernel. Host-to-host
// copies resolve per size (host_copy_plan_description()): `automatic` for them.
CopyKernel choose_copy_kernel(CopyDirection direction, MemoryType memory_type, WidthSet allowed,
                              const CopyOptions& options = {});

// Copies `length` bytes from `source` to the window at `offset`. Checks, before any
// access: the span lies inside the window, the window is writable, and offset and length
// are multiples of the narrowest width the window allows (else no access pattern can
// cover them). Fails, before any access, with invalid_argument (an empty Region, a null
// `source` with a nonzero length, max_access_bytes not a power of two in 1..64,
// CopyKernel::libc), permission_denied (a read-only Region), out_of_range (the span),
// not_supported (a kernel this CPU lacks), width_not_allowed (no width the window, the
// kernel and max_access_bytes all allow) or misaligned (the ends). A Region without a
// mapping is copied by Region::write (the registers kernel, whatever options.kernel),
// stopping at its first error (device_removed, the backend's I/O error) with the bytes
// before it written. A mapped window that the removal guard revoked (pcie/removal.h) fails
// with device_removed: before the copy, with nothing written, or after it, when the
// revocation came during the copy and some bytes went to the guard's memory.
Result<void> copy_to_device(Region& region, std::uint64_t offset, const void* source, std::uint64_t length,
                            const CopyOptions& options = {});
// As above, into a mapped MmioView: always through its mapping, and with no read-only check
// (a view has no such flag).
Result<void> copy_to_device(const MmioView& view, std::uint64_t offset, const void* source,
                            std::uint64_t length, const CopyOptions& options = {});

// Copies `length` bytes of the window at `offset` to `destination`, with the same checks
// and failures but permission_denied (invalid_argument: a null `destination`), through
// Region::read where the Region has no mapping, stopping at its first error. A mapped
// window revoked before or during the copy fails with device_removed after it (the
// destination then holds the guard's all ones where the device's bytes would be).
Result<void> copy_from_device(void* destination, const Region& region, std::uint64_t offset,
                              std::uint64_t length, const CopyOptions& options = {});
// As above, out of a mapped MmioView: always through its mapping.
Result<void> copy_from_device(void* destination, const MmioView& view, std::uint64_t offset,
                              std::uint64_t length, const CopyOptions& options = {});

namespace detail {
Result<void> copy_host_slow(void* destination, const void* source, std::size_t length, const CopyOptions& options);
// The invalid_argument failure of copy() for overlapping ranges. Out of line and returning
// the whole Result, so that copy()'s body holds no Error temporaries and inlines into its
// callers (with them inline, GCC kept copy() a call with a 400-byte frame: 2 ns at 64 B).
[[gnu::cold]] Result<void> overlapping_copy_failure(const void* destination, const void* source, std::size_t length);
// Host copies shorter than this are glibc's memcpy, inline: no CPU's plan departs from it
// below 2 KiB, where its overlapping vector moves are as fast as anything we measured.
inline constexpr std::size_t kInlineHostCopyBytes = 2048;
// The automatic host copy of `length` >= kInlineHostCopyBytes bytes, by this CPU's plan.
void copy_host_planned(void* destination, const void* source, std::size_t length) noexcept;
}  // namespace detail

// Host memory to host memory (DMA buffers, staging buffers). Overlapping ranges are an
// invalid_argument error (use memmove). The automatic kernel is glibc's memcpy, inline,
// below 2 KiB, and from there on a plan chosen once per CPU (vendor, family, AVX2/AVX-512,
// ERMS, cache sizes): memcpy where it is fastest, a vector loop or non-temporal stores in
// the size ranges where memcpy measurably loses on that CPU (on AMD Zen, glibc's rep movsb
// from its threshold, 2112 B with FSRM, to half the L1d, and ordinary stores past the L3's
// share). See
// host_copy_plan_description() and bench/copy_bench, which measures the plan against
// memcpy and DPDK's rte_memcpy. CopyOptions::workers splits large copies over threads (each
// part by the same plan), and CopyOptions::kernel forces one kernel for experiments
// (libc: memcpy at every size; the vector kernels: non-temporal stores).
inline Result<void> copy(void* destination, const void* source, std::size_t length,
                         const CopyOptions& options = {}) {
  const auto to = reinterpret_cast<std::uintptr_t>(destination);
  const auto from = reinterpret_cast<std::uintptr_t>(source);
  if ((to < from ? from - to : to - from) < length) [[unlikely]] {
    return detail::overlapping_copy_failure(destination, source, length);
  }
  if (options.kernel == CopyKernel::automatic &&
      (options.workers == nullptr || length < options.parallel_threshold)) [[likely]] {
    if (length < detail::kInlineHostCopyBytes) {
      std::memcpy(destination, source, length);
    } else {
      detail::copy_host_planned(destination, source, length);
    }
    return {};
  }
  return detail::copy_host_slow(destination, source, length, options);
}

// What the automatic host copy does on this CPU, size range by size range, e.g. "AMD
// family 0x1a: memcpy below 2112 B, a 64-byte vector loop to 24 KiB (...), memcpy to
// 16 MiB, 32-byte non-temporal stores from there". Never fails.
std::string host_copy_plan_description();

// Helper threads for large copies. Move-only; joins its threads when destroyed. Several
// copies may use one set of workers from different threads: they take turns.
class CopyWorkers {
 public:
  // Starts `helpers` threads (the calling thread takes a share too, so a copy is split
  // `helpers + 1` ways). io_error (with the errno) when the threads cannot be created.
  static Result<CopyWorkers> start(unsigned helpers);

  // Move-only: takes over the threads; the moved-from object has no helpers (helpers() 0,
  // and run() runs every part on the calling thread).
  CopyWorkers(CopyWorkers&&) noexcept;
  // Stops and joins this object's threads, then takes over those of the other, as above.
  CopyWorkers& operator=(CopyWorkers&&) noexcept;
  ~CopyWorkers();

  // The number of helper threads (0 when moved from); a copy is split helpers() + 1 ways.
  unsigned helpers() const;

  // Runs part(0 .. helpers) across the helpers and the calling thread, and returns once
  // every part has finished.
  void run(const std::function<void(unsigned part, unsigned parts)>& part) const;

 private:
  struct Shared;
  explicit CopyWorkers(std::unique_ptr<Shared> shared);
  std::unique_ptr<Shared> shared_;
};

}  // namespace pcie
