// The IOVA allocator: I/O virtual addresses (pcie/bus_address.h) handed out from the ranges
// the IOMMU translates (VfioContainer::iova_ranges()), below the device's DMA mask, aligned,
// never overlapping.
#pragma once

#include <cstdint>
#include <map>
#include <vector>

#include "pcie/bus_address.h"
#include "pcie/error.h"

namespace pcie {

// First-fit allocator over the usable IOVA ranges. Not thread-safe; one per container.
class IovaAllocator {
 public:
  // Addresses below `reserved_low` are never handed out (default 64 KiB): a bus address of
  // 0 hides the classic "descriptor never written" bug.
  explicit IovaAllocator(const std::vector<IovaRange>& ranges, std::uint64_t reserved_low = 64 * 1024);

  // `size` bytes at an address that is a multiple of `alignment` (a power of two) and whose
  // last byte is at most `limit` (e.g. dma_mask_limit(28)). Fails with invalid_argument on
  // a zero size or a bad alignment, and out_of_range when no space is left below `limit`.
  Result<Iova> allocate(std::uint64_t size, std::uint64_t alignment, std::uint64_t limit);

  // Gives back [iova, iova + size), which must be exactly what allocate() returned; the
  // part of it that restrict_to() has since taken out of the usable ranges stays out.
  void release(Iova iova, std::uint64_t size);

  // Narrows the free space to what lies inside `ranges` (sorted, disjoint): when another
  // device attached to the same IOMMU context reserves IOVAs of its own (its MSI window,
  // RMRRs), the kernel reports fewer usable ranges. Addresses handed out stay handed out:
  // the kernel refuses such an attach when a mapping lies in the newly reserved space, but
  // one released later (a failed map undone) does not come back into the free space.
  void restrict_to(const std::vector<IovaRange>& ranges);

  // Free bytes in all, for bookkeeping checks.
  std::uint64_t free_bytes() const;

 private:
  void add_free(std::uint64_t start, std::uint64_t last);

  std::map<std::uint64_t, std::uint64_t> free_;  // start -> last (inclusive), disjoint, coalesced
  std::vector<IovaRange> usable_;                // where addresses may be handed out, sorted
};

}  // namespace pcie
