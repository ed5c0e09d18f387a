#include "pcie/dma.h"

#include <linux/memfd.h>
#include <sys/mman.h>

#include <fmt/format.h>

#include <cstring>
#include <utility>
#include <vector>

#include <mutex>
#include <sstream>

#include "pcie/barriers.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/state.h"

namespace pcie {

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

// What the kernel counts against RLIMIT_MEMLOCK for this process: VmLck in
// /proc/self/status (kB), where vfio_iommu_type1 accounts pinned pages (locked_vm), with
// every other mlock of the process; nullopt when it cannot be read.
std::optional<std::uint64_t> process_locked_bytes() {
  auto status = sys::read_text_file("/proc/self/status", 64 * 1024);
  if (!status) return std::nullopt;
  std::istringstream lines(*status);
  for (std::string line; std::getline(lines, line);) {
    if (!line.starts_with("VmLck:")) continue;
    std::istringstream fields(line.substr(6));
    std::uint64_t kilobytes = 0;
    if (fields >> kilobytes) return kilobytes * 1024;
  }
  return std::nullopt;
}

Error explain_map_failure(const Error& raw, std::uint64_t bytes) {
  Error error = raw;
  error.operation = "map DMA buffer";
  if (raw.sys_errno == ENOMEM) {
    const std::uint64_t limit = sys::memlock_limit();
    const auto locked = process_locked_bytes();
    const std::uint64_t already = locked.value_or(0);
    error.code = Errc::permission_denied;
    error.reason = fmt::format("the kernel refused to pin {} bytes: RLIMIT_MEMLOCK is {} bytes and this process "
                               "has {} locked already{}",
                               bytes, limit, locked ? std::to_string(already) + " bytes" : "an unknown amount",
                               locked ? " (VmLck, all its DMA buffers and mlocks)" : "");
    error.hint = fmt::format("raise it to at least {} bytes (ulimit -l {}, or LimitMEMLOCK= for a service), "
                             "or run with CAP_IPC_LOCK",
                             already + bytes, (already + bytes + 1023) / 1024);
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
  std::lock_guard lock(container.state_->mutex);
  if (!container.state_->iovas) {
    return std::unexpected(make_error(Errc::not_supported, "create DMA allocator", "VFIO container",
                                      "no IOVA ranges known",
                                      "open a device in the container first; if one is open, the kernel "
                                      "does not report IOVA ranges (Linux 5.4 or later does)"));
  }
  return DmaAllocator(container.state_);
}

std::uint64_t DmaAllocator::mapped_bytes() const {
  std::lock_guard lock(container_->mutex);
  return container_->mapped_bytes;
}

Result<DmaBuffer> DmaAllocator::allocate(std::size_t size, const DmaBufferOptions& options) const {
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
    // Aligned to the page size, so the IOMMU can use large pages for it too. The address is
    // taken under the container's lock; the (slow) memory and the ioctl come after it.
    const auto give_back = [&](Iova iova) {
      std::lock_guard lock(container_->mutex);
      container_->iovas->release(iova, rounded);
    };
    Result<Iova> iova = [&] {
      std::lock_guard lock(container_->mutex);
      return container_->iovas->allocate(rounded, page, options.dma_limit);
    }();
    if (!iova) {
      last_error = iova.error();
      continue;
    }
    auto mapping = allocate_memory(rounded, backing);
    if (!mapping) {
      give_back(*iova);
      last_error = mapping.error();
      continue;
    }
    // A child process must not share pages the device writes into (after fork they would be
    // copy-on-write, and the parent could end up with a copy the device never sees).
    if (auto advised = sys::advise(*mapping, MADV_DONTFORK, "DMA buffer"); !advised) {
      give_back(*iova);
      return std::unexpected(advised.error());
    }
    auto mapped = sys::vfio::map_dma(container_->fd.get(), reinterpret_cast<std::uint64_t>(mapping->data()),
                                     iova->value, rounded, options.device_reads, options.device_writes);
    if (!mapped) {
      give_back(*iova);
      return std::unexpected(explain_map_failure(mapped.error(), rounded));
    }
    {
      std::lock_guard lock(container_->mutex);
      container_->mapped_bytes += rounded;
    }
    return DmaBuffer(container_, std::move(*mapping), size, *iova, backing);
  }
  return std::unexpected(last_error);
}
DmaBuffer& DmaBuffer::operator=(DmaBuffer&& other) noexcept {
  if (this != &other) {
    (void)release();
    container_ = std::move(other.container_);
    memory_ = std::move(other.memory_);
    size_ = std::exchange(other.size_, 0);
    iova_ = other.iova_;
    backing_ = other.backing_;
  }
  return *this;
}

DmaBuffer::~DmaBuffer() { (void)release(); }

Result<void> DmaBuffer::release() {
  if (!container_ || !memory_.valid()) return {};
  const std::uint64_t length = memory_.size();
  auto unmapped = sys::vfio::unmap_dma(container_->fd.get(), iova_.value, length);
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
    std::lock_guard lock(container_->mutex);
    container_->iovas->release(iova_, length);
    container_->mapped_bytes -= std::min(container_->mapped_bytes, length);
  }
  // The memory goes after the IOMMU mapping. If the unmap failed, the kernel still holds
  // its pins on these pages, so the device cannot reach memory that is reused; the IOVA
  // stays out of the allocator, since the kernel may still translate it.
  memory_ = Mapping();
  container_.reset();
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
  std::mutex mutex;  // guards `chunks` and each chunk's free space
  std::vector<Chunk> chunks;
};
}  // namespace detail

Result<DmaPool> DmaPool::create(const DmaAllocator& allocator, const DmaBufferOptions& options, std::size_t chunk_size) {
  if (chunk_size < kPage || chunk_size % kPage != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "create DMA pool", fmt::format("chunks of {} bytes", chunk_size),
                                      "the chunk size must be a multiple of 4096"));
  }
  auto state = std::make_shared<detail::DmaPoolState>(allocator);
  state->options = options;
  state->chunk_size = chunk_size;
  return DmaPool(std::move(state));
}

std::size_t DmaPool::chunk_count() const {
  std::lock_guard lock(state_->mutex);
  return state_->chunks.size();
}

Result<DmaSlice> DmaPool::allocate(std::size_t size, std::size_t alignment) {
  if (size == 0 || size > state_->chunk_size || alignment == 0 || alignment > kPage || (alignment & (alignment - 1))) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate from DMA pool",
                                      fmt::format("{} bytes aligned to {}", size, alignment),
                                      fmt::format("the size must be 1 to {} bytes and the alignment a power of two up to 4096",
                                                  state_->chunk_size),
                                      "use DmaAllocator::allocate for large buffers"));
  }
  std::lock_guard lock(state_->mutex);
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
  {
    std::lock_guard lock(pool_->mutex);
    pool_->chunks[chunk_].free.release(Iova{offset_}, size_);
  }
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
