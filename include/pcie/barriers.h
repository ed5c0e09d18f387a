// Memory barriers named by what they are for. MMIO accessors already order themselves
// against each other; these are for the places where ordinary memory (DMA buffers,
// descriptors) and write-combined stores meet device registers.
#pragma once

namespace pcie {

// Stops the compiler from moving memory accesses across this point; emits no instruction.
inline void compiler_barrier() { asm volatile("" ::: "memory"); }

#if defined(__x86_64__)

// Makes every earlier store, including write-combined and non-temporal ones, globally
// visible before any later store, such as a doorbell write (sfence; Intel SDM vol. 3A,
// 11.3: WC stores are weakly ordered). Use after filling a WC BAR or descriptors.
inline void barrier_before_doorbell() { asm volatile("sfence" ::: "memory"); }

// Orders an earlier load (a completion flag, a status register) before later loads of
// data the device wrote by DMA (lfence). Ordinary x86 loads are already ordered; this
// matters after streaming (movntdqa) loads from WC memory.
inline void barrier_before_reading_dma_data() { asm volatile("lfence" ::: "memory"); }

// Orders all earlier loads and stores before all later ones (mfence).
inline void full_barrier() { asm volatile("mfence" ::: "memory"); }

namespace detail {
// x86 keeps uncached MMIO in program order with respect to other memory accesses, so, as
// in the kernel's readl/writel for x86, only the compiler must be restrained.
inline void before_ordered_mmio_write() { compiler_barrier(); }
inline void after_ordered_mmio_read() { compiler_barrier(); }
}  // namespace detail

#elif defined(__aarch64__)

// The arm64 equivalents of the kernel's wmb/rmb/mb and __iowmb/__iormb.
inline void barrier_before_doorbell() { asm volatile("dsb st" ::: "memory"); }
inline void barrier_before_reading_dma_data() { asm volatile("dsb ld" ::: "memory"); }
inline void full_barrier() { asm volatile("dsb sy" ::: "memory"); }

namespace detail {
inline void before_ordered_mmio_write() { asm volatile("dmb oshst" ::: "memory"); }
inline void after_ordered_mmio_read() { asm volatile("dmb oshld" ::: "memory"); }
}  // namespace detail

#else
#error "pcie: MMIO ordering is defined for x86-64 and arm64 only"
#endif

}  // namespace pcie
