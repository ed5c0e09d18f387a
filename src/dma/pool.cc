// DmaPool and DmaSlice: small DMA buffers carved from chunks of a DmaAllocator, whatever
// its backend.
#include <fmt/format.h>

#include <cstring>
#include <mutex>
#include <utility>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/dma.h"
#include "pcie/iova.h"

namespace pcie {

namespace {
constexpr std::uint64_t kPage = 4096;
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
  if (!state_) return 0;
  std::lock_guard lock(state_->mutex);
  return state_->chunks.size();
}

Result<DmaSlice> DmaPool::allocate(std::size_t size, std::size_t alignment) {
  if (!state_) return std::unexpected(empty_object_error("allocate from DMA pool", "DmaPool", "use DmaPool::create"));
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

void DmaSlice::sync_for_device() const { barrier_before_doorbell(); }
void DmaSlice::sync_for_cpu() const { barrier_before_reading_dma_data(); }

}  // namespace pcie
