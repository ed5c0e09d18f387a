// The address vocabulary of DMA, apart from any backend: the bus address a device is given
// (an IOVA behind an IOMMU, a physical address without one), the IOVA ranges an IOMMU
// translates, and the reach of a device's DMA mask. pcie/iova.h hands out IOVAs from such
// ranges; DMA buffers, backends and descriptor rings need only this header.
#pragma once

#include <compare>
#include <cstdint>

namespace pcie {

// An address a device uses on the bus: an I/O virtual address behind an IOMMU, the CPU
// physical address without one (pcie/dma_backend.h). A type of its own, distinct from a
// CPU pointer, so that one is never handed to a device by mistake.
struct Iova {
  std::uint64_t value = 0;  // the address itself, as the device puts it on the bus
  // Orders by address.
  friend auto operator<=>(const Iova&, const Iova&) = default;
};
// The name for an Iova where the address may be physical (no IOMMU): the same type.
using BusAddress = Iova;

// An inclusive range of I/O virtual addresses the IOMMU can translate.
struct IovaRange {
  std::uint64_t start = 0;  // the first address in the range
  std::uint64_t last = 0;   // the last address in the range (inclusive)
  // Equal when both bounds are.
  friend bool operator==(const IovaRange&, const IovaRange&) = default;
};

// The last address a device with an `bits`-bit DMA mask can reach (2^bits - 1; 64 → all).
constexpr std::uint64_t dma_mask_limit(unsigned bits) {
  return bits >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits) - 1;
}

}  // namespace pcie
