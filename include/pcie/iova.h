// I/O virtual addresses: the bus addresses a device uses behind an IOMMU, handed out from
// the ranges the IOMMU translates (VfioContainer::iova_ranges()), below the device's DMA
// mask, aligned, never overlapping.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <vector>

#include "pcie/error.h"

namespace pcie {

// An address a device uses on the bus: an I/O virtual address behind an IOMMU, the CPU
// physical address without one (pcie/dma_backend.h). A type of its own, distinct from a
// CPU pointer, so that one is never handed to a device by mistake.
struct Iova {
  std::uint64_t value = 0;
  friend auto operator<=>(const Iova&, const Iova&) = default;
};
using BusAddress = Iova;

// An inclusive range of I/O virtual addresses the IOMMU can translate.
struct IovaRange {
  std::uint64_t start = 0;
  std::uint64_t last = 0;
  friend bool operator==(const IovaRange&, const IovaRange&) = default;
};

// The last address a device with an `bits`-bit DMA mask can reach (2^bits - 1; 64 → all).
constexpr std::uint64_t dma_mask_limit(unsigned bits) {
  return bits >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits) - 1;
}

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
