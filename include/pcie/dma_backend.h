// Where DMA memory becomes reachable by a device, behind one interface, so that a driver's
// DmaAllocator, DmaBuffer and DmaPool work the same on every backend:
//  - an IOMMU domain (VFIO type1 today): the device sees an I/O virtual address that the
//    IOMMU translates, and it can reach nothing else;
//  - physical addresses, with no IOMMU (UIO, VFIO no-IOMMU mode, an IOMMU off or in
//    passthrough): the device is handed the CPU physical address of the memory, read from
//    /proc/self/pagemap, and can reach *all* of memory. Only with an explicit, named
//    acknowledgement (DeviceMayReachAllMemory), as DPDK's IOVA-as-PA mode, PYNQ's
//    allocate().physical_address and u-dma-buf's phys_addr do.
//
// Implementations are thread-safe: allocators made from one backend share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bus_address.h"
#include "pcie/error.h"
#include "pcie/sys/mapping.h"

namespace pcie {

// The pages a DMA buffer's memory is made of.
enum class DmaBacking {
  pages,     // ordinary 4 KiB pages
  huge_2m,   // 2 MiB huge pages
  huge_1g,   // 1 GiB huge pages
};
// "4 KiB pages", "2 MiB huge pages", "1 GiB huge pages".
std::string_view dma_backing_name(DmaBacking backing);
// 4096, 2 MiB or 1 GiB.
std::uint64_t dma_backing_page_size(DmaBacking backing);

// One step of the allocator's search for memory a backend can map: up to `pieces` pieces
// of memory of `backing`, one after the other while the backend refuses the pages
// themselves (retry_with_other_memory). Refused pieces are held until the step ends, so
// that the kernel hands out other pages for the next piece.
struct DmaMemoryStep {
  DmaBacking backing = DmaBacking::pages;  // the page size of this step's memory
  unsigned pieces = 1;                     // pieces to try before the next step
};

// What a device may do with a buffer, and below which bus address it must lie.
struct DmaMapRequest {
  std::uint64_t page_size = 4096;  // the buffer's backing page size (4 KiB, 2 MiB, 1 GiB)
  std::uint64_t dma_limit = ~std::uint64_t{0};  // the last bus address the device can reach
  bool device_reads = true;   // the device may read the buffer (DMA to the device)
  bool device_writes = true;  // the device may write the buffer (DMA from the device)
  // The bus address's alignment (a power of two); 0: page_size. A physical backend fails
  // with not_supported (retryable) for memory whose physical address is not so aligned.
  std::uint64_t bus_alignment = 0;
};

// A way to make process memory reachable by a device (an IOMMU domain, or physical
// addresses), which DmaAllocator maps each buffer through. The library's own: a VFIO
// container's (type1 or iommufd, behind Device::dma_allocator()) and
// make_physical_dma_backend(); implement it for another.
class DmaBackend {
 public:
  virtual ~DmaBackend() = default;
  // "VFIO type1 IOMMU", "physical addresses (no IOMMU)".
  virtual std::string_view name() const = 0;
  // True when bus addresses are CPU physical addresses: no IOMMU stands between the device
  // and memory.
  virtual bool bus_addresses_are_physical() const = 0;
  // Makes all of `memory` (page-aligned, populated) reachable by the device and returns
  // the bus address of its first byte; the device sees the buffer contiguous from there.
  // Errors: out_of_range when it cannot lie below request.dma_limit, permission_denied
  // (memlock limits, privileges), busy (the kernel's mapping limit), not_supported when
  // this memory cannot be made contiguous for the device (retry_with_other_memory() says
  // whether other pages could do).
  virtual Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) = 0;
  // Whether a map() error is about these particular pages (above the DMA limit, not
  // contiguous), so that the allocator may try again with other memory.
  virtual bool retry_with_other_memory(const Error& error) const = 0;
  // Where the allocator looks for memory for a buffer of `size` bytes (nonzero) that
  // prefers `prefer` and must meet `request` (its page_size is not read: each step's
  // backing sets it): the steps in order. Where memory must lie is the backend's policy.
  // The default: physical_memory_plan() with 8 pieces a step where bus addresses are
  // physical; else iommu_memory_plan(). An override may fail, with not_supported when no
  // backing the caller allows can meet the request (the error saying which to allow):
  // DmaAllocator::allocate then fails with that error and takes no memory. An empty plan
  // fails the allocation with not_supported; the allocator tries at most 64 pieces a step.
  virtual Result<std::vector<DmaMemoryStep>> memory_plan(std::size_t size, DmaBacking prefer,
                                                         const DmaMapRequest& request) const;
  // A map() that fails leaves `memory` as it found it (unlocked, unmapped): the allocator
  // holds refused memory while it tries other pages, and it must not count against limits.
  // Undoes map() for `memory` at `address`; the memory is still mapped in the process. On
  // an error the device may still reach it: the caller must not reuse the bus address.
  virtual Result<void> unmap(BusAddress address, const Mapping& memory) = 0;
  // Bytes currently mapped through this backend.
  virtual std::uint64_t mapped_bytes() const = 0;
};

// The acknowledgement that physical-address DMA needs: without an IOMMU, a device (or a
// bug in its driver) that is given bus addresses can read and write every byte of memory,
// the kernel's included. There is deliberately no default and no environment variable.
enum class DeviceMayReachAllMemory { acknowledged };

// Where memory for a buffer lies behind an IOMMU, which makes any pages contiguous and
// aligned for the device: every backing from `prefer` down, huge pages only for a buffer
// that fills at least half of one (a 4 KiB ring does not cost 2 MiB), one piece each.
// Never fails, never empty.
std::vector<DmaMemoryStep> iommu_memory_plan(std::size_t size, DmaBacking prefer);

// Where memory for a buffer lies when its bus address is its physical address (no IOMMU):
// `pieces` pieces a step (clamped to 1..64), since other memory may lie elsewhere.
//  - A buffer is physically contiguous only inside one page of its backing (ordinary pages
//    are contiguous by luck), so a backing other than `prefer` is tried only when one of
//    its pages holds the buffer, and huge pages only for a buffer that fills at least half
//    of one; when that leaves no backing whose page holds the buffer, the smallest huge
//    page `prefer` allows that does is added (a 64 KiB buffer preferring 2 MiB pages gets
//    one 2 MiB page, not 16 ordinary pages).
//  - A bus alignment above 4 KiB takes pages at least that large, among those `prefer`
//    allows; not_supported (saying to allow huge pages) when there are none.
//  - Below a DMA limit, a buffer of at most 2 MiB ends with a 2 MiB page, even preferring
//    ordinary pages: those come from wherever the kernel has them (high memory first),
//    huge pages reserved at boot lie low.
// Never empty when it succeeds.
Result<std::vector<DmaMemoryStep>> physical_memory_plan(std::size_t size, DmaBacking prefer,
                                                        const DmaMapRequest& request, unsigned pieces);

// How make_physical_dma_backend() finds physical addresses and holds the memory.
struct PhysicalDmaOptions {
  // Where the physical address of each page is read (proc(5), Documentation/admin-guide/
  // mm/pagemap.rst); tests point it at a file of their own.
  std::string pagemap_path = "/proc/self/pagemap";
  // How many pieces of memory to try, per page size, when pages lie above the device's DMA
  // limit or are not contiguous (1 to 64; 0 counts as 1, more as 64). The rejected memory
  // is held while trying, so that the kernel hands out different pages, unlocked (it does
  // not count against RLIMIT_MEMLOCK), and freed afterwards.
  unsigned attempts = 8;
  // Lock the pages (mlock(2)) so that they are never swapped out from under the device.
  // Hugetlbfs pages are never swapped, and moved only by memory offlining or contiguous
  // allocations; locked 4 KiB pages can still be migrated by compaction
  // (vm.compact_unevictable_allowed=0 stops that): use huge pages for anything a device
  // keeps using.
  bool lock = true;
};

// The physical-address backend; its memory_plan is physical_memory_plan() with
// options.attempts pieces a step. Errors of map(): permission_denied when pagemap shows a
// PFN of 0 (it hides PFNs from processes without CAP_SYS_ADMIN) or mlock is refused,
// not_supported for pages that are not physically contiguous (use huge pages),
// out_of_range above the DMA limit, malformed for a pagemap entry of a page not present.
std::shared_ptr<DmaBackend> make_physical_dma_backend(DeviceMayReachAllMemory acknowledgement,
                                                      const PhysicalDmaOptions& options = {});

}  // namespace pcie
