// DmaPool and DmaSlice: small DMA buffers carved from chunks of a DmaAllocator, whatever
// its backend.
//
// Two paths. A slice of up to 4 KiB whose alignment is at most its size class (its size
// rounded up to a power of two, at least 64 B) takes a slot of that class from the class's
// free list, and its release puts the slot back: no search, no merging, one short critical
// section each way. A class's slots are carved in runs from a chunk's first-fit allocator,
// the runs doubling up to 4 KiB so that a pool used for a handful of slices does not take
// a chunk per class. A slot of class C lies at a multiple of C in a chunk whose CPU and bus
// addresses are page-aligned, so it is C-aligned in both. Everything else (larger slices,
// alignments above the class) goes through the chunks' first-fit allocators, as all slices
// once did.
//
// The state is shared by the pool's handles (a shared_ptr whose deleter only marks them
// gone) and its slices (a count under the lock, not an atomic reference each): whoever
// leaves it with neither, decided under the lock, deletes it.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <mutex>
#include <optional>
#include <sys/single_threaded.h>
#include <utility>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/dma.h"
#include "pcie/iova.h"

namespace pcie {

namespace {
constexpr std::uint64_t kPage = 4096;
constexpr std::size_t kSmallestClass = 64;
constexpr std::uint32_t kClassCount = 7;          // 64 B, 128 B, ... 4 KiB
constexpr std::uint32_t kFirstFit = kClassCount;  // a slice's class when it has none
constexpr std::uint64_t kLargestRun = 4096;

// The size class of a slice (0 for 64 B up to 6 for 4 KiB), or kFirstFit when its size or
// alignment takes it to the first-fit path.
std::uint32_t size_class_of(std::size_t size, std::size_t alignment) {
  if (size > kPage) return kFirstFit;
  const std::size_t bytes = std::bit_ceil(std::max(size, kSmallestClass));
  if (alignment > bytes) return kFirstFit;
  return static_cast<std::uint32_t>(std::countr_zero(bytes) - std::countr_zero(kSmallestClass));
}

constexpr std::size_t class_bytes(std::uint32_t size_class) { return kSmallestClass << size_class; }

// The pool's lock on the fast path, std::mutex's, skipped while the process has a single
// thread (glibc's __libc_single_threaded, as libstdc++'s reference counts do): no other
// thread can exist before this one starts it, and the sections it guards call nothing
// that could. The slow paths, which call the DMA backend, always lock.
class PoolLock {
 public:
  explicit PoolLock(std::mutex& mutex) : mutex_(__libc_single_threaded != 0 ? nullptr : &mutex) {
    if (mutex_ != nullptr) mutex_->lock();
  }
  ~PoolLock() {
    if (mutex_ != nullptr) mutex_->unlock();
  }
  PoolLock(const PoolLock&) = delete;
  PoolLock& operator=(const PoolLock&) = delete;

 private:
  std::mutex* mutex_;
};
}  // namespace

namespace detail {
struct DmaPoolState {
  struct Chunk {
    DmaBuffer buffer;
    IovaAllocator free;  // offsets inside the chunk, reusing the IOVA allocator's first fit
  };
  struct Slot {
    std::byte* data;
    std::uint64_t iova;
  };
  struct Place {  // a range from a chunk's first-fit allocator
    std::uint32_t chunk;
    std::uint64_t offset;
  };
  struct SizeClass {
    std::vector<Slot> free;  // its capacity holds every slot carved: a release never allocates
    std::uint64_t carved_bytes = 0;
  };

  DmaPoolState(const DmaAllocator& pool_allocator, const DmaBufferOptions& chunk_options, std::size_t chunk_bytes)
      : allocator(pool_allocator), options(chunk_options), chunk_size(chunk_bytes) {}

  DmaAllocator allocator;
  DmaBufferOptions options;
  std::size_t chunk_size = 0;
  std::mutex mutex;  // guards everything below
  std::vector<Chunk> chunks;
  std::array<SizeClass, kClassCount> classes;
  std::size_t live_slices = 0;  // handed out and not given back
  bool handles_gone = false;    // no DmaPool refers to the state any more

  struct Placed {
    Slot slot;
    std::uint32_t chunk;  // for the first-fit path
  };

  Slot slot_at(Place place) const {
    const DmaBuffer& buffer = chunks[place.chunk].buffer;
    return {buffer.data() + place.offset, buffer.iova().value + place.offset};
  }
  // The fast path: a slot of `size_class` from its free list, counted as live; false when
  // the list is empty.
  bool pop(std::uint32_t size_class, Slot& slot) {
    PoolLock lock(mutex);
    std::vector<Slot>& free = classes[size_class].free;
    if (free.empty()) return false;
    slot = free.back();
    free.pop_back();
    ++live_slices;
    return true;
  }
  // Puts a slot back on its free list; true when the state is left with neither a slice
  // nor a handle, for the caller to delete it.
  bool push(std::uint32_t size_class, Slot slot) {
    PoolLock lock(mutex);
    classes[size_class].free.push_back(slot);  // never allocates: see SizeClass
    return --live_slices == 0 && handles_gone;
  }
  std::optional<Place> fit_in_chunks(std::uint64_t size, std::uint64_t alignment);
  Result<Place> fit_in_new_chunk(std::uint64_t size, std::uint64_t alignment);
  Result<Place> first_fit(std::uint64_t size, std::uint64_t alignment);
  Result<void> refill(std::uint32_t size_class);
  // Out of line: allocate()'s fast path then needs no stack for a Result of this.
  [[gnu::noinline]] Result<Placed> allocate_slowly(std::size_t size, std::size_t alignment,
                                                   std::uint32_t size_class);
  bool release_first_fit(std::uint32_t chunk, const std::byte* data, std::size_t size);
};

std::optional<DmaPoolState::Place> DmaPoolState::fit_in_chunks(std::uint64_t size, std::uint64_t alignment) {
  for (std::uint32_t index = 0; index < chunks.size(); ++index) {
    auto offset = chunks[index].free.allocate(size, alignment, ~std::uint64_t{0});
    if (offset) return Place{index, offset->value};
  }
  return std::nullopt;
}

// Maps one more chunk and takes `size` bytes from its start: DmaAllocator::allocate's error
// when the chunk cannot be had.
Result<DmaPoolState::Place> DmaPoolState::fit_in_new_chunk(std::uint64_t size, std::uint64_t alignment) {
  auto buffer = allocator.allocate(chunk_size, options);
  if (!buffer) return std::unexpected(buffer.error());
  const std::uint64_t usable = std::min<std::uint64_t>(buffer->size(), chunk_size);
  chunks.push_back({std::move(*buffer), IovaAllocator({{0, usable - 1}}, 0)});
  auto offset = chunks.back().free.allocate(size, alignment, ~std::uint64_t{0});
  if (!offset) return std::unexpected(offset.error());  // size <= chunk_size: not reached
  return Place{static_cast<std::uint32_t>(chunks.size() - 1), offset->value};
}

Result<DmaPoolState::Place> DmaPoolState::first_fit(std::uint64_t size, std::uint64_t alignment) {
  if (auto place = fit_in_chunks(size, alignment)) return *place;
  return fit_in_new_chunk(size, alignment);
}

// Carves a run of slots for `size_class` (as long as all its runs so far, up to 4 KiB, or
// one slot where no chunk has room for more) and puts them on its free list, lowest first.
Result<void> DmaPoolState::refill(std::uint32_t size_class) {
  SizeClass& sizes = classes[size_class];
  const std::uint64_t slot = class_bytes(size_class);
  const std::uint64_t largest = std::max(slot, std::min<std::uint64_t>(kLargestRun, chunk_size / 4));
  std::uint64_t run = std::clamp(sizes.carved_bytes, slot, largest);
  sizes.free.reserve(std::bit_ceil((sizes.carved_bytes + run) / slot));
  std::optional<Place> place = fit_in_chunks(run, slot);
  if (!place && run > slot) {
    place = fit_in_chunks(slot, slot);
    if (place) run = slot;
  }
  if (!place) {
    auto fresh = fit_in_new_chunk(run, slot);
    if (!fresh) return std::unexpected(fresh.error());
    place = *fresh;
  }
  sizes.carved_bytes += run;
  for (std::uint64_t offset = run; offset != 0; offset -= slot) {
    sizes.free.push_back(slot_at({place->chunk, place->offset + offset - slot}));
  }
  return {};
}

// What pop() could not give: a slot after refilling its class, or a first-fit range.
Result<DmaPoolState::Placed> DmaPoolState::allocate_slowly(std::size_t size, std::size_t alignment,
                                                           std::uint32_t size_class) {
  std::lock_guard lock(mutex);
  Placed placed{};
  if (size_class != kFirstFit) {
    std::vector<Slot>& free = classes[size_class].free;
    if (free.empty()) {
      if (auto refilled = refill(size_class); !refilled) return std::unexpected(refilled.error());
    }
    placed.slot = free.back();
    free.pop_back();
  } else {
    auto place = first_fit(size, alignment);
    if (!place) return std::unexpected(place.error());
    placed = {slot_at(*place), place->chunk};
  }
  ++live_slices;
  return placed;
}

// As push(), for a range of the first-fit path: merged back into its chunk's free space.
bool DmaPoolState::release_first_fit(std::uint32_t chunk, const std::byte* data, std::size_t size) {
  std::lock_guard lock(mutex);
  Chunk& home = chunks[chunk];
  home.free.release(Iova{static_cast<std::uint64_t>(data - home.buffer.data())}, size);
  return --live_slices == 0 && handles_gone;
}

// The deleter of the handles' shared_ptr: the state goes now if no slice is left, else
// with the last slice (DmaSlice::give_back).
void close_pool_handles(DmaPoolState* state) {
  bool last = false;
  {
    std::lock_guard lock(state->mutex);
    state->handles_gone = true;
    last = state->live_slices == 0;
  }
  if (last) delete state;
}
}  // namespace detail

namespace {
// Why allocate() refuses a request: the pool is moved-from, or the size or alignment is
// out of range. Out of allocate()'s body, so that its fast path stays small.
[[gnu::cold]] Error refusal(const detail::DmaPoolState* state, std::size_t size, std::size_t alignment) {
  if (state == nullptr) return empty_object_error("allocate from DMA pool", "DmaPool", "use DmaPool::create");
  return make_error(Errc::invalid_argument, "allocate from DMA pool",
                    fmt::format("{} bytes aligned to {}", size, alignment),
                    fmt::format("the size must be 1 to {} bytes and the alignment a power of two up to 4096",
                                state->chunk_size),
                    "use DmaAllocator::allocate for large buffers");
}
}  // namespace

Result<DmaPool> DmaPool::create(const DmaAllocator& allocator, const DmaBufferOptions& options, std::size_t chunk_size) {
  if (chunk_size < kPage || chunk_size % kPage != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "create DMA pool", fmt::format("chunks of {} bytes", chunk_size),
                                      "the chunk size must be a multiple of 4096"));
  }
  auto* state = new detail::DmaPoolState(allocator, options, chunk_size);
  return DmaPool(std::shared_ptr<detail::DmaPoolState>(state, detail::close_pool_handles));
}

std::size_t DmaPool::chunk_count() const {
  if (!state_) return 0;
  std::lock_guard lock(state_->mutex);
  return state_->chunks.size();
}

Result<DmaSlice> DmaPool::allocate(std::size_t size, std::size_t alignment) {
  if (!state_ || size == 0 || size > state_->chunk_size || alignment == 0 || alignment > kPage ||
      (alignment & (alignment - 1)) != 0) {
    return std::unexpected(refusal(state_.get(), size, alignment));
  }
  const std::uint32_t size_class = size_class_of(size, alignment);
  detail::DmaPoolState::Placed placed{};
  if (size_class == kFirstFit || !state_->pop(size_class, placed.slot)) {
    auto slowly = state_->allocate_slowly(size, alignment, size_class);
    if (!slowly) return std::unexpected(std::move(slowly.error()));
    placed = *slowly;
  }
  std::memset(placed.slot.data, 0, size);  // the slot is this slice's alone: no lock needed
  return DmaSlice(state_.get(), placed.slot.data, size, Iova{placed.slot.iova}, placed.chunk, size_class);
}

void DmaSlice::give_back() {
  detail::DmaPoolState* pool = std::exchange(pool_, nullptr);
  const bool last = size_class_ != kFirstFit ? pool->push(size_class_, {data_, iova_.value})
                                             : pool->release_first_fit(chunk_, data_, size_);
  // No handle and no other slice is left to take the lock: the state can go.
  if (last) delete pool;
}

DmaSlice& DmaSlice::operator=(DmaSlice&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) give_back();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    iova_ = other.iova_;
    chunk_ = other.chunk_;
    size_class_ = other.size_class_;
  }
  return *this;
}

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
