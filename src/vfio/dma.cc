#include "pcie/dma.h"

#include <linux/memfd.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include <cstring>
#include <utility>
#include <vector>

#include "pcie/barriers.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"

namespace pcie {

namespace detail {
struct DmaDomain {
  int container_fd = -1;  // owned by the VfioContainer, which outlives every buffer
  IovaAllocator iovas;
  std::uint64_t mapped_bytes = 0;
};
}  // namespace detail

namespace {

constexpr std::uint64_t kPage = 4096;

std::uint64_t page_size_of(DmaBacking backing) {
  switch (backing) {
    case DmaBacking::huge_1g: return 1ull << 30;
    case DmaBacking::huge_2m: return 2ull << 20;
    case DmaBacking::pages: break;
  }
  return kPage;
}

// The backings to try for a buffer of `size`, from `prefer` down. Huge pages only when the
// buffer fills at least half a page of that size, so a 4 KiB descriptor ring does not cost
// 2 MiB.
std::vector<DmaBacking> backings_for(std::size_t size, DmaBacking prefer) {
  std::vector<DmaBacking> order;
  for (DmaBacking backing : {DmaBacking::huge_1g, DmaBacking::huge_2m}) {
    if (static_cast<int>(backing) <= static_cast<int>(prefer) && size >= page_size_of(backing) / 2) order.push_back(backing);
  }
  order.push_back(DmaBacking::pages);
  return order;
}

Result<Mapping> allocate_memory(std::size_t rounded, DmaBacking backing) {
  if (backing == DmaBacking::pages) return sys::map_anonymous(rounded);
  const unsigned flags = MFD_HUGETLB | (backing == DmaBacking::huge_1g ? MFD_HUGE_1GB : MFD_HUGE_2MB);
  return sys::map_memfd(rounded, flags, "pcie-dma");
}

Error explain_map_failure(const Error& raw, std::uint64_t bytes, std::uint64_t already_mapped) {
  Error error = raw;
  error.operation = "map DMA buffer";
  if (raw.sys_errno == ENOMEM) {
    const std::uint64_t limit = sys::memlock_limit();
    error.code = Errc::permission_denied;
    error.reason = fmt::format("the kernel refused to pin {} bytes: RLIMIT_MEMLOCK is {} bytes and this process "
                               "already pins {} through this allocator",
                               bytes, limit, already_mapped);
    error.hint = fmt::format("raise it to at least {} bytes (ulimit -l {}, or LimitMEMLOCK= for a service), "
                             "or run with CAP_IPC_LOCK",
                             already_mapped + bytes, (already_mapped + bytes + 1023) / 1024);
  } else if (raw.sys_errno == ENOSPC) {
    error.code = Errc::busy;
    error.reason = "the kernel's limit on DMA mappings per container is reached";
    error.hint = "use fewer, larger buffers (or pool small ones), or raise vfio_iommu_type1's dma_entry_limit";
  }
  return error;
}

}  // namespace

std::string_view dma_backing_name(DmaBacking backing) {
  switch (backing) {
    case DmaBacking::pages: return "4 KiB pages";
    case DmaBacking::huge_2m: return "2 MiB huge pages";
    case DmaBacking::huge_1g: return "1 GiB huge pages";
  }
  return "?";
}

Result<DmaAllocator> DmaAllocator::create(const VfioContainer& container) {
  if (container.iova_ranges().empty()) {
    return std::unexpected(make_error(Errc::not_supported, "create DMA allocator", "VFIO container",
                                      "no IOVA ranges known",
                                      "open a device in the container first; if one is open, the kernel "
                                      "does not report IOVA ranges (Linux 5.4 or later does)"));
  }
  auto domain = std::make_shared<detail::DmaDomain>(
      detail::DmaDomain{container.fd(), IovaAllocator(container.iova_ranges()), 0});
  return DmaAllocator(std::move(domain));
}

std::uint64_t DmaAllocator::mapped_bytes() const { return domain_->mapped_bytes; }

Result<DmaBuffer> DmaAllocator::allocate(std::size_t size, const DmaBufferOptions& options) {
  if (size == 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate DMA buffer", "0 bytes", "the size is zero"));
  }
  // For each backing: the IOVA first (cheap to give back), then the memory (which may be
  // large and is populated at once), then the IOMMU mapping.
  Error last_error = make_error(Errc::io_error, "allocate DMA buffer", fmt::format("{} bytes", size), "no backing");
  for (DmaBacking backing : backings_for(size, options.prefer)) {
    const std::uint64_t page = page_size_of(backing);
    if (size > ~std::uint64_t{0} - page) break;
    const std::size_t rounded = (size + page - 1) / page * page;
    // Aligned to the page size, so the IOMMU can use large pages for it too.
    auto iova = domain_->iovas.allocate(rounded, page, options.dma_limit);
    if (!iova) {
      last_error = iova.error();
      continue;
    }
    auto mapping = allocate_memory(rounded, backing);
    if (!mapping) {
      domain_->iovas.release(*iova, rounded);
      last_error = mapping.error();
      continue;
    }
    // A child process must not share pages the device writes into (after fork they would be
    // copy-on-write, and the parent could end up with a copy the device never sees).
    if (auto advised = sys::advise(*mapping, MADV_DONTFORK, "DMA buffer"); !advised) {
      domain_->iovas.release(*iova, rounded);
      return std::unexpected(advised.error());
    }
    auto mapped = sys::vfio::map_dma(domain_->container_fd, reinterpret_cast<std::uint64_t>(mapping->data()),
                                     iova->value, rounded, options.device_reads, options.device_writes);
    if (!mapped) {
      domain_->iovas.release(*iova, rounded);
      return std::unexpected(explain_map_failure(mapped.error(), rounded, domain_->mapped_bytes));
    }
    domain_->mapped_bytes += rounded;
    return DmaBuffer(domain_, std::move(*mapping), size, *iova, backing);
  }
  return std::unexpected(last_error);
}
DmaBuffer& DmaBuffer::operator=(DmaBuffer&& other) noexcept {
  if (this != &other) {
    (void)release();
    domain_ = std::move(other.domain_);
    memory_ = std::move(other.memory_);
    size_ = std::exchange(other.size_, 0);
    iova_ = other.iova_;
    backing_ = other.backing_;
  }
  return *this;
}

DmaBuffer::~DmaBuffer() { (void)release(); }

Result<void> DmaBuffer::release() {
  if (!domain_ || !memory_.valid()) return {};
  const std::uint64_t length = memory_.size();
  auto unmapped = sys::vfio::unmap_dma(domain_->container_fd, iova_.value, length);
  Result<void> result;
  if (!unmapped) {
    result = std::unexpected(unmapped.error());
  } else if (*unmapped != length) {
    // 0 means the kernel had nothing mapped there: our bookkeeping and the kernel's differ.
    result = std::unexpected(make_error(Errc::io_error, "unmap DMA buffer", fmt::format("IOVA {:#x}", iova_.value),
                                        fmt::format("the kernel unmapped {} of {} bytes", *unmapped, length)));
  }
  if (unmapped) {
    // Only an IOVA the kernel no longer maps may be handed out again.
    domain_->iovas.release(iova_, length);
    domain_->mapped_bytes -= std::min(domain_->mapped_bytes, length);
  }
  // The memory goes after the IOMMU mapping. If the unmap failed, the kernel still holds
  // its pins on these pages, so the device cannot reach memory that is reused; the IOVA
  // stays out of the allocator, since the kernel may still translate it.
  memory_ = Mapping();
  domain_.reset();
  return result;
}

Result<Iova> DmaBuffer::iova_of(const void* cpu_pointer) const {
  const auto* pointer = static_cast<const std::byte*>(cpu_pointer);
  if (pointer < data() || pointer >= data() + size_) {
    return std::unexpected(make_error(Errc::out_of_range, "translate to IOVA", fmt::format("{}", cpu_pointer),
                                      fmt::format("not inside this DMA buffer ({} bytes at {})", size_,
                                                  static_cast<const void*>(data()))));
  }
  return Iova{iova_.value + static_cast<std::uint64_t>(pointer - data())};
}

namespace detail {
struct DmaPoolState {
  struct Chunk {
    DmaBuffer buffer;
    IovaAllocator free;  // offsets inside the chunk, reusing the IOVA allocator's first fit
  };
  DmaAllocator allocator;
  DmaBufferOptions options;
  std::size_t chunk_size = 0;
  std::vector<Chunk> chunks;
};
}  // namespace detail

Result<DmaPool> DmaPool::create(const DmaAllocator& allocator, const DmaBufferOptions& options, std::size_t chunk_size) {
  if (chunk_size < kPage || chunk_size % kPage != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "create DMA pool", fmt::format("chunks of {} bytes", chunk_size),
                                      "the chunk size must be a multiple of 4096"));
  }
  return DmaPool(std::make_shared<detail::DmaPoolState>(detail::DmaPoolState{allocator, options, chunk_size, {}}));
}

std::size_t DmaPool::chunk_count() const { return state_->chunks.size(); }

Result<DmaSlice> DmaPool::allocate(std::size_t size, std::size_t alignment) {
  if (size == 0 || size > state_->chunk_size || alignment == 0 || alignment > kPage || (alignment & (alignment - 1))) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate from DMA pool",
                                      fmt::format("{} bytes aligned to {}", size, alignment),
                                      fmt::format("the size must be 1 to {} bytes and the alignment a power of two up to 4096",
                                                  state_->chunk_size),
                                      "use DmaAllocator::allocate for large buffers"));
  }
  for (std::size_t index = 0;; ++index) {
    if (index == state_->chunks.size()) {
      auto buffer = state_->allocator.allocate(state_->chunk_size, state_->options);
      if (!buffer) return std::unexpected(buffer.error());
      const std::uint64_t usable = std::min<std::uint64_t>(buffer->size(), state_->chunk_size);
      state_->chunks.push_back({std::move(*buffer), IovaAllocator({{0, usable - 1}}, 0)});
    }
    detail::DmaPoolState::Chunk& chunk = state_->chunks[index];
    auto offset = chunk.free.allocate(size, alignment, ~std::uint64_t{0});
    if (!offset) continue;
    std::byte* data = chunk.buffer.data() + offset->value;
    std::memset(data, 0, size);
    return DmaSlice(state_, index, offset->value, data, size, Iova{chunk.buffer.iova().value + offset->value});
  }
}

void DmaSlice::give_back() {
  if (!pool_) return;
  pool_->chunks[chunk_].free.release(Iova{offset_}, size_);
  pool_.reset();
}

DmaSlice& DmaSlice::operator=(DmaSlice&& other) noexcept {
  if (this != &other) {
    give_back();
    pool_ = std::move(other.pool_);
    chunk_ = other.chunk_;
    offset_ = other.offset_;
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    iova_ = other.iova_;
  }
  return *this;
}

DmaSlice::~DmaSlice() { give_back(); }

Result<Iova> DmaSlice::iova_of(const void* cpu_pointer) const {
  const auto* pointer = static_cast<const std::byte*>(cpu_pointer);
  if (pointer < data_ || pointer >= data_ + size_) {
    return std::unexpected(make_error(Errc::out_of_range, "translate to IOVA", fmt::format("{}", cpu_pointer),
                                      fmt::format("not inside this DMA slice ({} bytes)", size_)));
  }
  return Iova{iova_.value + static_cast<std::uint64_t>(pointer - data_)};
}

void DmaBuffer::sync_for_device() const { barrier_before_doorbell(); }
void DmaBuffer::sync_for_cpu() const { barrier_before_reading_dma_data(); }

}  // namespace pcie
