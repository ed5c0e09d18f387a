// DmaPool and DmaSlice: small DMA buffers carved from chunks of a DmaAllocator, whatever
// its backend.
//
// Two paths. A slice of up to 4 KiB whose alignment is at most its size class (its size
// rounded up to a power of two, at least 64 B) takes a slot of that class from the class's
// free list, and its release puts the slot back: no search, no merging. A class's slots are
// carved in runs from a chunk's first-fit allocator, the runs doubling up to 4 KiB so that
// a pool used for a handful of slices does not take a chunk per class. A slot of class C
// lies at a multiple of C in a chunk whose CPU and bus addresses are page-aligned, so it is
// C-aligned in both. Everything else (larger slices, alignments above the class) goes
// through the chunks' first-fit allocators, as all slices once did.
//
// Each thread keeps a few slots of each class of the last pools it used (a
// ThreadSlotCache, as malloc's tcache does): a slice taken from it or released to it takes
// no lock and no atomic read-modify-write, which a thread-shared pool would otherwise pay
// twice per slice (a mutex taken and released, about 4x malloc's whole cost on the
// development machine). The cache moves slots to and from the pool's free lists in
// batches, under the pool's lock.
//
// What a thread's cache holds counts as handed out, so a closing pool must take it back
// from threads that may be idle forever (a pool's chunks hold IOMMU mappings and, through
// its allocator, the VFIO container). The owner of a cache touches it without a lock; the
// closing thread synchronizes with it as in an asymmetric Dekker handshake: the owner
// marks itself busy, fences only against its compiler, then checks whether the pool is
// closing; the closing thread marks the pool closing, then makes every running thread of
// the process execute a full barrier with membarrier(2), then waits until no cache of the
// pool is busy. Either the owner sees "closing" and takes the locked path, or the closing
// thread sees it busy and waits. Where membarrier's private expedited command is missing
// (kernels before 4.14, sandboxes that refuse it) threads keep no caches and every slice
// takes the pool's lock.
//
// The state is shared by the pool's handles (a shared_ptr whose deleter only marks them
// gone), its slices and cached slots (live_slices), and the thread caches' entries bound
// to it (bound_entries: an entry pins its pool even when it holds no slot, so that its
// pointer never dangles), counts under the lock rather than an atomic reference each:
// whoever leaves it with none of them, decided under the lock, deletes it.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <sched.h>
#include <sys/single_threaded.h>
#include <thread>
#include <utility>
#include <vector>

#include "pcie/barriers.h"
#include "pcie/dma.h"
#include "pcie/iova.h"
#include "src/dma/pool_cache_stats.h"
#include "src/sys/syscalls.h"

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
struct PoolSlot {
  std::byte* data;
  std::uint64_t iova;
};

// Slots a thread keeps per class: 16, fewer for the large classes, so that a thread holds
// at most 16 KiB of slots of one class (4 slots of 4 KiB).
constexpr std::uint32_t kCacheDepth = 16;
constexpr std::uint32_t cache_limit(std::uint32_t size_class) {
  return static_cast<std::uint32_t>(std::min<std::size_t>(kCacheDepth, 16384 / class_bytes(size_class)));
}

struct DmaPoolState;

// Pools a thread keeps slots of at once: a thread that serves a few queues, each with its
// own pool, does not move its slots back and forth between them.
constexpr std::uint32_t kCachedPools = 4;

// One thread's slots of the last pools it used. The owning thread reads and writes it
// without a lock on its fast paths; its slow paths, the thread's exit and a closing pool's
// reclaim take `mutex`. Fields another thread reads or writes are atomics (relaxed: the
// handshake in the file comment orders them).
struct ThreadSlotCache {
  struct Class {
    std::atomic<std::uint32_t> count{0};  // a closing pool's reclaim sets it to 0
    std::array<PoolSlot, kCacheDepth> slots{};
  };
  struct Entry {
    // The pool's id (DmaPoolState::id), or 0 for none; the pool itself, under `mutex`.
    std::atomic<std::uint64_t> pool_id{0};
    DmaPoolState* pool = nullptr;
    std::array<Class, kClassCount> classes;

    bool empty() const {
      return std::all_of(classes.begin(), classes.end(),
                         [](const Class& c) { return c.count.load(std::memory_order_relaxed) == 0; });
    }
  };
  std::mutex mutex;
  std::atomic<bool> busy{false};  // the owner is inside a release fast path
  std::array<Entry, kCachedPools> entries;
  std::uint32_t next_victim = 0;  // the entry a new pool takes when none is free, in turn

  // The entry of the pool with id `id`; null when none. Lock-free: the owner's fast paths.
  Entry* find(std::uint64_t id) {
    for (Entry& entry : entries) {
      if (entry.pool_id.load(std::memory_order_relaxed) == id) return &entry;
    }
    return nullptr;
  }
};

struct DmaPoolState {
  struct Chunk {
    DmaBuffer buffer;
    IovaAllocator free;  // offsets inside the chunk, reusing the IOVA allocator's first fit
  };
  using Slot = PoolSlot;
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

  // Never reused in the process: a cache that names a deleted pool cannot name a new one
  // that happens to live at the same address.
  static inline std::atomic<std::uint64_t> next_id{1};
  const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  // Set when the last handle goes, before the caches are reclaimed: from then on a release
  // takes the locked path.
  std::atomic<bool> closing{false};

  DmaAllocator allocator;
  DmaBufferOptions options;
  std::size_t chunk_size = 0;
  std::mutex mutex;  // guards everything below
  std::vector<Chunk> chunks;
  std::array<SizeClass, kClassCount> classes;
  std::size_t live_slices = 0;    // handed out (to a slice or a thread's cache), not given back
  std::size_t bound_entries = 0;  // thread cache entries bound to the pool
  bool handles_gone = false;      // no DmaPool refers to the state any more

  // Whether nothing refers to the state any more, for the caller to delete it. Under the lock.
  bool unused() const { return live_slices == 0 && bound_entries == 0 && handles_gone; }

  struct Placed {
    Slot slot;
    std::uint32_t chunk;  // for the first-fit path
  };

  Slot slot_at(Place place) const {
    const DmaBuffer& buffer = chunks[place.chunk].buffer;
    return {buffer.data() + place.offset, buffer.iova().value + place.offset};
  }
  // A slot of `size_class` from its free list, counted as live; false when the list is
  // empty. Where threads keep no caches.
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
    --live_slices;
    return unused();
  }
  std::optional<Place> fit_in_chunks(std::uint64_t size, std::uint64_t alignment);
  Result<Place> fit_in_new_chunk(std::uint64_t size, std::uint64_t alignment);
  Result<Place> first_fit(std::uint64_t size, std::uint64_t alignment);
  Result<void> refill(std::uint32_t size_class);
  // Out of line: allocate()'s fast path then needs no stack for a Result of this.
  [[gnu::noinline]] Result<Placed> allocate_slowly(std::size_t size, std::size_t alignment,
                                                   std::uint32_t size_class);
  [[gnu::noinline]] Result<std::optional<Slot>> allocate_through_cache(ThreadSlotCache& cache,
                                                                       std::uint32_t size_class);
  [[gnu::noinline]] bool release_slowly(std::uint32_t size_class, Slot slot);
  bool release_first_fit(std::uint32_t chunk, const std::byte* data, std::size_t size);
};

namespace {
// ---- The threads' caches --------------------------------------------------------------

// Every live thread's cache, for a closing pool to reclaim from. Never destroyed: threads
// may still exit (and unregister) while static objects are destroyed.
struct CacheRegistry {
  std::mutex mutex;
  std::vector<ThreadSlotCache*> caches;
};
CacheRegistry& registry() {
  static auto* caches = new CacheRegistry;
  return *caches;
}

// This thread's cache (null until the thread first allocates or releases a slot, and
// always where thread caches are off); a plain pointer, so that the fast paths read it
// without a TLS guard.
thread_local ThreadSlotCache* this_thread_cache = nullptr;
// Set once the thread's cache was flushed at its exit: slices released later (by other
// thread_local objects' destructors) take the locked path rather than make a new cache.
thread_local bool this_thread_exited = false;

// A pool to delete once the caller has let go of its locks: its destructor unmaps chunks
// through the user's DmaBackend, which may release a slice or drop a pool itself and then
// take this thread's cache lock again.
using DoomedPool = std::unique_ptr<DmaPoolState>;

DoomedPool flush_entry(ThreadSlotCache::Entry& entry);

// Flushes and frees the thread's cache when the thread exits.
struct ThreadCacheOwner {
  ThreadSlotCache* cache = nullptr;
  ~ThreadCacheOwner() {
    if (cache == nullptr) return;
    {
      std::lock_guard lock(registry().mutex);
      std::erase(registry().caches, cache);
    }
    std::array<DoomedPool, kCachedPools> doomed;  // deleted at the end, with no lock held
    {
      std::lock_guard lock(cache->mutex);
      for (std::uint32_t i = 0; i < kCachedPools; ++i) doomed[i] = flush_entry(cache->entries[i]);
    }
    this_thread_cache = nullptr;
    this_thread_exited = true;
    delete cache;
  }
};
thread_local ThreadCacheOwner this_thread_cache_owner;

// Whether threads may keep caches: the membarrier command the reclaim needs is there.
bool thread_caches_available() {
  static const bool available = [] {
    if (!sys::register_private_expedited_membarrier()) return false;
    // A child of fork() has only the forking thread, and should exec or _exit (its DMA
    // memory is MADV_DONTFORK). Every cache is abandoned there, the forking thread's too:
    // their slots and entries stay counted in their pools, which the child then never
    // frees; no reclaim waits on a thread that does not exist there; and no cache is
    // flushed at the child's exit, which could wait on a pool lock that a thread of the
    // parent held at the fork.
    ::pthread_atfork([] { registry().mutex.lock(); }, [] { registry().mutex.unlock(); },
                     [] {
                       registry().mutex.unlock();  // locked by this thread before the fork
                       registry().caches.clear();
                       this_thread_cache = nullptr;
                       this_thread_cache_owner.cache = nullptr;
                       this_thread_exited = true;
                     });
    return true;
  }();
  return available;
}

// This thread's cache, made and registered on first use; null where caches are off.
ThreadSlotCache* thread_cache() {
  if (this_thread_cache != nullptr) return this_thread_cache;
  if (this_thread_exited || !thread_caches_available()) return nullptr;
  // Without memory for it, this thread goes on without a cache: this runs in a slice's
  // destructor, which must not throw.
  auto* cache = new (std::nothrow) ThreadSlotCache;
  if (cache == nullptr) return nullptr;
  try {
    std::lock_guard lock(registry().mutex);
    registry().caches.push_back(cache);
  } catch (const std::bad_alloc&) {
    delete cache;
    return nullptr;
  }
  this_thread_cache_owner.cache = cache;
  this_thread_cache = cache;
  return cache;
}

// Gives every slot of `entry` back to its pool and unbinds it; returns the pool when that
// left nothing referring to it, for the caller to delete after its locks. The caller holds
// the cache's mutex.
DoomedPool flush_entry(ThreadSlotCache::Entry& entry) {
  DmaPoolState* pool = std::exchange(entry.pool, nullptr);
  entry.pool_id.store(0, std::memory_order_relaxed);
  if (pool == nullptr) return nullptr;
  bool last = false;
  {
    std::lock_guard lock(pool->mutex);
    for (std::uint32_t size_class = 0; size_class < kClassCount; ++size_class) {
      ThreadSlotCache::Class& cached = entry.classes[size_class];
      const std::uint32_t count = cached.count.exchange(0, std::memory_order_relaxed);
      for (std::uint32_t i = 0; i < count; ++i) pool->classes[size_class].free.push_back(cached.slots[i]);
      pool->live_slices -= count;
    }
    --pool->bound_entries;
    last = pool->unused();
  }
  return DoomedPool(last ? pool : nullptr);
}

// The entry of `pool` in `cache`, bound now if it had none: a free entry, else (when
// `evict`) the next one in turn, whose slots go back to their pool. Null when none is free
// and `evict` is false, or when the pool is closing (read under its lock, after which a
// reclaim that found no entry bound to the pool has decided). An evicted pool left unused
// goes to `doomed`, for the caller to delete after its locks. The caller holds cache.mutex.
ThreadSlotCache::Entry* entry_for(ThreadSlotCache& cache, DmaPoolState* pool, bool evict, DoomedPool& doomed) {
  ThreadSlotCache::Entry* free_entry = nullptr;
  for (ThreadSlotCache::Entry& entry : cache.entries) {
    if (entry.pool == pool) return &entry;
    if (free_entry == nullptr && (entry.pool == nullptr || entry.empty())) free_entry = &entry;
  }
  if (free_entry == nullptr) {
    if (!evict) return nullptr;
    free_entry = &cache.entries[cache.next_victim];
    cache.next_victim = (cache.next_victim + 1) % kCachedPools;
  }
  doomed = flush_entry(*free_entry);
  {
    std::lock_guard lock(pool->mutex);
    if (pool->closing.load(std::memory_order_relaxed)) return nullptr;
    ++pool->bound_entries;
  }
  free_entry->pool = pool;
  free_entry->pool_id.store(pool->id, std::memory_order_relaxed);
  return free_entry;
}

// The slot of `size_class` from this thread's cache of `pool`, taking no lock; false when
// the cache is not `pool`'s or holds none. No reclaim can run meanwhile: the caller
// allocates through a handle of `pool`, which keeps it from closing.
bool take_from_cache(const DmaPoolState* pool, std::uint32_t size_class, PoolSlot& slot) {
  ThreadSlotCache* cache = this_thread_cache;
  if (cache == nullptr) return false;
  ThreadSlotCache::Entry* entry = cache->find(pool->id);
  if (entry == nullptr) return false;
  ThreadSlotCache::Class& cached = entry->classes[size_class];
  const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
  if (count == 0) return false;
  slot = cached.slots[count - 1];
  cached.count.store(count - 1, std::memory_order_relaxed);
  return true;
}

// Keeps a released slot in this thread's cache of `pool`, taking no lock; false when the
// cache is not `pool`'s, is full for the class, or the pool is closing. A slice outlives
// its pool's handles, so a reclaim may run meanwhile: the busy mark and the closing flag
// are the owner's half of the handshake in the file comment.
bool keep_in_cache(const DmaPoolState* pool, std::uint32_t size_class, PoolSlot slot) {
  ThreadSlotCache* cache = this_thread_cache;
  if (cache == nullptr) return false;
  cache->busy.store(true, std::memory_order_relaxed);
  // The closing thread's membarrier(2) supplies the CPU's half of this fence.
  std::atomic_signal_fence(std::memory_order_seq_cst);
  bool kept = false;
  ThreadSlotCache::Entry* entry = cache->find(pool->id);
  if (entry != nullptr && !pool->closing.load(std::memory_order_relaxed)) {
    ThreadSlotCache::Class& cached = entry->classes[size_class];
    const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
    if (count < cache_limit(size_class)) {
      cached.slots[count] = slot;
      cached.count.store(count + 1, std::memory_order_relaxed);
      kept = true;
    }
  }
  cache->busy.store(false, std::memory_order_release);
  return kept;
}

// What reclaim_caches() took back: slots (counted in live_slices) and entries (counted in
// bound_entries).
struct Reclaimed {
  std::size_t slots = 0;
  std::size_t entries = 0;
};

// Waits out a release fast path that began before the barrier: a few stores, unless its
// thread was preempted inside it. Yields first, then sleeps, so that a closing thread of
// a higher real-time priority on the same CPU lets the owner finish.
void wait_until_idle(const ThreadSlotCache& cache) {
  for (int round = 0; cache.busy.load(std::memory_order_acquire); ++round) {
    if (round < 64) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
}

// The closing thread's half: marks the pool closing, then takes every thread's cached slots
// of it back and unbinds their entries. Takes nothing, and makes no barrier, when no entry
// is bound to the pool (checked under its lock: an entry bound later sees `closing` there
// and refuses). The barrier is tried a few times: the kernel can fail it for want of memory
// for a CPU mask (ENOMEM). When it still fails, nothing is taken: the entries pin the pool
// until their threads exit or bind them to other pools.
Reclaimed reclaim_caches(DmaPoolState* pool) {
  pool->closing.store(true, std::memory_order_seq_cst);
  {
    std::lock_guard lock(pool->mutex);
    if (pool->bound_entries == 0) return {};
  }
  bool barrier = false;
  for (int attempt = 0; attempt < 6 && !barrier; ++attempt) {
    if (attempt > 0) std::this_thread::sleep_for(std::chrono::milliseconds(1 << attempt));
    barrier = sys::private_expedited_membarrier().has_value();
  }
  if (!barrier) return {};
  Reclaimed reclaimed;
  std::lock_guard registry_lock(registry().mutex);
  for (ThreadSlotCache* cache : registry().caches) {
    std::lock_guard lock(cache->mutex);
    for (ThreadSlotCache::Entry& entry : cache->entries) {
      if (entry.pool != pool) continue;
      wait_until_idle(*cache);
      for (ThreadSlotCache::Class& cached : entry.classes) {
        reclaimed.slots += cached.count.exchange(0, std::memory_order_relaxed);
      }
      ++reclaimed.entries;
      entry.pool = nullptr;
      entry.pool_id.store(0, std::memory_order_relaxed);
    }
  }
  return reclaimed;
}
}  // namespace

bool dma_pool_thread_caches_enabled() { return thread_caches_available(); }

std::size_t dma_pool_slots_cached_by_this_thread() {
  ThreadSlotCache* cache = this_thread_cache;
  if (cache == nullptr) return 0;
  std::lock_guard lock(cache->mutex);
  std::size_t slots = 0;
  for (const ThreadSlotCache::Entry& entry : cache->entries) {
    for (const ThreadSlotCache::Class& cached : entry.classes) slots += cached.count.load(std::memory_order_relaxed);
  }
  return slots;
}

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
  Placed placed{};
  if (size_class != kFirstFit) {
    if (ThreadSlotCache* cache = thread_cache()) {
      auto slot = allocate_through_cache(*cache, size_class);
      if (!slot) return std::unexpected(std::move(slot.error()));
      if (*slot) {
        placed.slot = **slot;
        return placed;
      }
    }
    if (pop(size_class, placed.slot)) return placed;
  }
  std::lock_guard lock(mutex);
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

// A slot of `size_class` for this thread, whose cache had none of this pool's: binds an
// entry of the cache to the pool (another pool's slots going back when all are taken) and
// moves a batch from the class's free list, refilled when empty, into it, the lowest slot
// for the caller and the next ones on the entry's top. Nullopt when no entry could be bound
// (not reached: the caller holds a handle, so the pool is not closing).
Result<std::optional<DmaPoolState::Slot>> DmaPoolState::allocate_through_cache(ThreadSlotCache& cache,
                                                                               std::uint32_t size_class) {
  DoomedPool doomed;  // declared before the lock: deleted after it is released
  std::lock_guard cache_lock(cache.mutex);
  ThreadSlotCache::Entry* entry = entry_for(cache, this, true, doomed);
  if (entry == nullptr) return std::nullopt;
  ThreadSlotCache::Class& cached = entry->classes[size_class];
  const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
  std::lock_guard lock(mutex);
  std::vector<Slot>& free = classes[size_class].free;
  if (free.empty()) {
    if (auto refilled = refill(size_class); !refilled) return std::unexpected(refilled.error());
  }
  const Slot slot = free.back();
  free.pop_back();
  const std::uint32_t room = cache_limit(size_class) / 2 - std::min(count, cache_limit(size_class) / 2);
  const auto moved = static_cast<std::uint32_t>(std::min<std::size_t>(free.size(), room));
  for (std::uint32_t i = 0; i < moved; ++i) {
    cached.slots[count + moved - 1 - i] = free.back();
    free.pop_back();
  }
  cached.count.store(count + moved, std::memory_order_relaxed);
  live_slices += 1 + moved;
  return slot;
}

// A class slot's release that keep_in_cache() could not keep: into this thread's cache
// (binding an entry that holds nothing to the pool), half of a full class going back with
// it under the pool's lock; else (no such entry), and when the pool is closing, straight
// to the free list. True when the state is left with neither a slice nor a handle.
bool DmaPoolState::release_slowly(std::uint32_t size_class, Slot slot) {
  ThreadSlotCache* cache = closing.load(std::memory_order_relaxed) ? nullptr : thread_cache();
  if (cache != nullptr) {
    DoomedPool doomed;  // declared before the lock: deleted after it is released
    std::lock_guard cache_lock(cache->mutex);
    // Read under the cache's lock: a reclaim that went past this cache set `closing`
    // before, and one still to come will find what is kept here.
    ThreadSlotCache::Entry* entry =
        closing.load(std::memory_order_relaxed) ? nullptr : entry_for(*cache, this, false, doomed);
    if (entry != nullptr) {
      ThreadSlotCache::Class& cached = entry->classes[size_class];
      const std::uint32_t count = cached.count.load(std::memory_order_relaxed);
      const std::uint32_t limit = cache_limit(size_class);
      if (count < limit) {
        cached.slots[count] = slot;
        cached.count.store(count + 1, std::memory_order_relaxed);
        return false;
      }
      const std::uint32_t keep = limit / 2;
      PoolLock lock(mutex);
      std::vector<Slot>& free = classes[size_class].free;
      for (std::uint32_t i = keep; i < count; ++i) free.push_back(cached.slots[i]);
      free.push_back(slot);
      cached.count.store(keep, std::memory_order_relaxed);
      live_slices -= count - keep + 1;
      return unused();
    }
  }
  return push(size_class, slot);
}

// As push(), for a range of the first-fit path: merged back into its chunk's free space.
bool DmaPoolState::release_first_fit(std::uint32_t chunk, const std::byte* data, std::size_t size) {
  std::lock_guard lock(mutex);
  Chunk& home = chunks[chunk];
  home.free.release(Iova{static_cast<std::uint64_t>(data - home.buffer.data())}, size);
  --live_slices;
  return unused();
}

// The deleter of the handles' shared_ptr: the state goes now if no slice is left, else
// with the last slice (DmaSlice::give_back).
void close_pool_handles(DmaPoolState* state) {
  const Reclaimed reclaimed = reclaim_caches(state);
  bool last = false;
  {
    std::lock_guard lock(state->mutex);
    state->live_slices -= reclaimed.slots;
    state->bound_entries -= reclaimed.entries;
    state->handles_gone = true;
    last = state->unused();
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
  if (size_class == kFirstFit || !detail::take_from_cache(state_.get(), size_class, placed.slot)) {
    auto slowly = state_->allocate_slowly(size, alignment, size_class);
    if (!slowly) return std::unexpected(std::move(slowly.error()));
    placed = *slowly;
  }
  std::memset(placed.slot.data, 0, size);  // the slot is this slice's alone: no lock needed
  return DmaSlice(state_.get(), placed.slot.data, size, Iova{placed.slot.iova}, placed.chunk, size_class);
}

void DmaSlice::give_back() {
  detail::DmaPoolState* pool = std::exchange(pool_, nullptr);
  bool last = false;
  if (size_class_ == kFirstFit) {
    last = pool->release_first_fit(chunk_, data_, size_);
  } else if (!detail::keep_in_cache(pool, size_class_, {data_, iova_.value})) {
    last = pool->release_slowly(size_class_, {data_, iova_.value});
  }
  // No handle and no other slice is left to take the lock: the state can go.
  if (last) delete pool;
}

DmaSlice& DmaSlice::operator=(DmaSlice&& other) noexcept {
  if (this != &other) {
    if (pool_ != nullptr) give_back();
    pool_ = std::exchange(other.pool_, nullptr);
    data_ = std::exchange(other.data_, nullptr);
    size_ = std::exchange(other.size_, 0);
    iova_ = std::exchange(other.iova_, Iova{});
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
