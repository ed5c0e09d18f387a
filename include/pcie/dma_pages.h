// DMA memory in equal pages, for devices that need no contiguity beyond a page: NVMe data
// and PRP lists, a NIC's packet buffers, a descriptor engine's scatter lists. Behind an
// IOMMU one buffer with contiguous bus addresses is taken; without one (VFIO no-IOMMU,
// UIO) bus addresses are physical and ordinary pages are rarely adjacent, so the
// allocator refuses more than a page (not_supported) and the pages are taken one buffer
// each. A driver indexes pages and never cares which it got:
//
//   auto pages = pcie::DmaPages::allocate(*allocator, 64).value();   // 64 x 4 KiB
//   std::memcpy(pages.page(3), data, 4096);
//   descriptor.address = pages.bus(3).value;
//
// Move-only; the pages are unmapped and freed with it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "pcie/dma.h"
#include "pcie/error.h"

namespace pcie {

// DMA memory as count() pages of page_size() bytes, held in one or more DmaBuffers, which
// the device reaches page by page; the driver indexes them and need not know how they lie.
class DmaPages {
 public:
  // No pages: count() is 0.
  DmaPages() = default;
  // Moved from, a DmaPages holds no pages (count() 0).
  DmaPages(DmaPages&& other) noexcept;
  // Frees the pages held, then takes `other`'s, which is left with none.
  DmaPages& operator=(DmaPages&& other) noexcept;

  // `count` pages of `page_size` bytes (a power of two from 4 KiB to 2 MiB) that `allocator`'s
  // device can reach, each page's bus address aligned to page_size, zeroed. One buffer when
  // the backend gives contiguous bus addresses for all of them (contiguous() is then true),
  // else one buffer per page. `options.prefer` and `dma_limit` are honoured; the bus
  // alignment is page_size. Fails with invalid_argument for a count of 0, a page size out of
  // range or a total that overflows, and with the allocator's error otherwise (ENOMEM,
  // RLIMIT_MEMLOCK, IOVA space) — the pages taken so far are given back.
  static Result<DmaPages> allocate(const DmaAllocator& allocator, std::size_t count, std::size_t page_size = 4096,
                                   const DmaBufferOptions& options = {.prefer = DmaBacking::pages});

  // The number of pages (0 when empty or moved from).
  std::size_t count() const { return count_; }
  // Each page's size in bytes (0 when empty or moved from).
  std::size_t page_size() const { return page_size_; }
  // Whether all pages are one buffer, consecutive in bus addresses too.
  bool contiguous() const { return buffers_.size() == 1; }
  // Page `index`'s memory and bus address; nullptr and bus address 0 for an index not
  // below count() (an empty or moved-from DmaPages included).
  std::byte* page(std::size_t index) const;
  // As above: page `index`'s bus address, to hand the device (BusAddress{0} out of range).
  BusAddress bus(std::size_t index) const;
  // Byte `offset` of the pages taken as one area; nullptr and bus address 0 for an offset
  // not below count() * page_size().
  std::byte* at(std::size_t offset) const {
    std::byte* start = page_size_ == 0 ? nullptr : page(offset / page_size_);
    return start == nullptr ? nullptr : start + offset % page_size_;
  }
  // As above: the bus address of byte `offset` (BusAddress{0} out of range). Only within a
  // page is the next byte's bus address the next one, unless contiguous().
  BusAddress bus_at(std::size_t offset) const {
    if (page_size_ == 0 || offset / page_size_ >= count_) return BusAddress{0};
    return BusAddress{bus(offset / page_size_).value + offset % page_size_};
  }
  // Cache maintenance for non-coherent hosts, on every page (see DmaBuffer).
  void sync_for_device() const;
  // As above, before the CPU reads what the device wrote (DmaBuffer::sync_for_cpu).
  void sync_for_cpu() const;
  // The same for the buffer that holds page `index` (all pages when contiguous()); nothing
  // for an index not below count().
  void sync_page_for_device(std::size_t index) const;
  // As above, before the CPU reads what the device wrote into page `index`.
  void sync_page_for_cpu(std::size_t index) const;

 private:
  // The buffer that holds page `index`; nullptr for an index not below count().
  const DmaBuffer* holder(std::size_t index) const;

  std::vector<DmaBuffer> buffers_;
  std::size_t count_ = 0;
  std::size_t page_size_ = 0;
};

}  // namespace pcie
