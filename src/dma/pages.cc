// DmaPages: pages a device can reach, contiguous where the backend allows.
#include "pcie/dma_pages.h"

#include <fmt/format.h>

#include <cstring>
#include <utility>

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

DmaPages::DmaPages(DmaPages&& other) noexcept
    : buffers_(std::move(other.buffers_)), count_(std::exchange(other.count_, 0)), page_size_(std::exchange(other.page_size_, 0)) {
  other.buffers_.clear();
}

DmaPages& DmaPages::operator=(DmaPages&& other) noexcept {
  if (this != &other) {
    buffers_ = std::move(other.buffers_);
    other.buffers_.clear();
    count_ = std::exchange(other.count_, 0);
    page_size_ = std::exchange(other.page_size_, 0);
  }
  return *this;
}

const DmaBuffer* DmaPages::holder(std::size_t index) const {
  if (index >= count_) return nullptr;
  return &buffers_[buffers_.size() == 1 ? 0 : index];
}

std::byte* DmaPages::page(std::size_t index) const {
  const DmaBuffer* buffer = holder(index);
  if (!buffer) return nullptr;
  return buffers_.size() == 1 ? buffer->data() + index * page_size_ : buffer->data();
}

BusAddress DmaPages::bus(std::size_t index) const {
  const DmaBuffer* buffer = holder(index);
  if (!buffer) return BusAddress{0};
  return buffers_.size() == 1 ? BusAddress{buffer->bus_address().value + index * page_size_} : buffer->bus_address();
}

void DmaPages::sync_page_for_device(std::size_t index) const {
  if (const DmaBuffer* buffer = holder(index)) buffer->sync_for_device();
}

void DmaPages::sync_page_for_cpu(std::size_t index) const {
  if (const DmaBuffer* buffer = holder(index)) buffer->sync_for_cpu();
}

void DmaPages::sync_for_device() const {
  for (const DmaBuffer& buffer : buffers_) buffer.sync_for_device();
}

void DmaPages::sync_for_cpu() const {
  for (const DmaBuffer& buffer : buffers_) buffer.sync_for_cpu();
}

}  // namespace pcie
