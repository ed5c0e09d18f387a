// DmaPages: pages a device can reach, contiguous where the backend allows.
#include "pcie/dma_pages.h"

#include <fmt/format.h>

#include <cassert>
#include <cstring>

namespace pcie {

namespace {
constexpr std::size_t kMinPage = 4096;
constexpr std::size_t kMaxPage = std::size_t{2} << 20;
}  // namespace

Result<DmaPages> DmaPages::allocate(const DmaAllocator& allocator, std::size_t count, std::size_t page_size,
                                   const DmaBufferOptions& options) {
  const std::string object = fmt::format("{} DMA pages of {:#x} bytes", count, page_size);
  if (count == 0) return std::unexpected(make_error(Errc::invalid_argument, "allocate", object, "no pages asked for"));
  if (page_size < kMinPage || page_size > kMaxPage || (page_size & (page_size - 1)) != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate", object,
                                      "the page size is not a power of two from 4 KiB to 2 MiB"));
  }
  std::size_t total = 0;
  if (__builtin_mul_overflow(count, page_size, &total)) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate", object, "the total size overflows"));
  }
  DmaBufferOptions aligned = options;
  aligned.bus_alignment = page_size;
  DmaPages pages;
  pages.count_ = count;
  pages.page_size_ = page_size;
  auto whole = allocator.allocate(total, aligned);
  if (whole) {
    std::memset(whole->data(), 0, total);
    pages.buffers_.push_back(std::move(*whole));
    return pages;
  }
  // not_supported: the backend cannot give contiguous bus addresses for this much (physical
  // addresses without an IOMMU). Any other error would come again page by page.
  if (whole.error().code != Errc::not_supported || count == 1) return std::unexpected(whole.error());
  pages.buffers_.reserve(count);
  for (std::size_t i = 0; i < count; ++i) {
    auto page = allocator.allocate(page_size, aligned);
    if (!page) return std::unexpected(page.error());
    std::memset(page->data(), 0, page_size);
    pages.buffers_.push_back(std::move(*page));
  }
  return pages;
}

std::byte* DmaPages::page(std::size_t index) const {
  assert(index < count_);
  if (buffers_.size() == 1) return buffers_[0].data() + index * page_size_;
  return buffers_[index].data();
}

BusAddress DmaPages::bus(std::size_t index) const {
  assert(index < count_);
  if (buffers_.size() == 1) return BusAddress{buffers_[0].bus_address().value + index * page_size_};
  return buffers_[index].bus_address();
}

void DmaPages::sync_for_device() const {
  for (const DmaBuffer& buffer : buffers_) buffer.sync_for_device();
}

void DmaPages::sync_for_cpu() const {
  for (const DmaBuffer& buffer : buffers_) buffer.sync_for_cpu();
}

}  // namespace pcie
