// I/O virtual addresses: the bus addresses a device uses behind an IOMMU, handed out from
// the ranges the IOMMU translates (VfioContainer::iova_ranges()), below the device's DMA
// mask, aligned, never overlapping.
#pragma once

#include <compare>
#include <cstdint>
#include <map>
#include <vector>

#include "pcie/error.h"
#include "pcie/vfio.h"

namespace pcie {

// An address in a device's I/O virtual address space; distinct from a CPU pointer or a
// physical address on purpose.
struct Iova {
  std::uint64_t value = 0;
  friend auto operator<=>(const Iova&, const Iova&) = default;
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

  // Gives back [iova, iova + size), which must be exactly what allocate() returned.
  void release(Iova iova, std::uint64_t size);

  // Free bytes in all, for bookkeeping checks.
  std::uint64_t free_bytes() const;

 private:
  std::map<std::uint64_t, std::uint64_t> free_;  // start -> last (inclusive), disjoint, coalesced
};

}  // namespace pcie
