// DmaPool on the host, over a backend double that records each chunk's bus address: the
// size classes' slots (aligned in CPU and bus addresses, zeroed when reused, reused before
// new memory), the first-fit path for what no class takes, slices that outlive the pool,
// a randomized sequence checked against a reference of live ranges, threads sharing a pool,
// and the threads' slot caches (given back when a thread exits, reclaimed from idle
// threads when the pool closes, kept apart between pools, safe across fork). Built three
// times: plain (and under --config=asan); against the library built with ThreadSanitizer
// (dma_pool_tsan_test); and in a process whose membarrier(2) calls fail, where threads keep
// no caches (dma_pool_without_membarrier_test).
#include <gtest/gtest.h>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <barrier>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <semaphore>
#include <thread>
#include <vector>

#include "pcie/dma.h"
#include "pcie/dma_backend.h"
#include "src/dma/pool_cache_stats.h"
#include "tests/refuse_membarrier.h"

namespace pcie {
namespace {

// Bus addresses handed out in order from 0x7000'1000 (4 KiB-aligned and no more, so that a
// slot's bus alignment does not come for free), each mapping remembered so that a test can
// find the CPU byte behind a bus address, as the device's DMA would reach it.
class RecordingIommu final : public DmaBackend {
 public:
  std::string_view name() const override { return "recording IOMMU"; }
  bool bus_addresses_are_physical() const override { return false; }
  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    std::lock_guard lock(mutex_);
    if (next_ + memory.size() - 1 > request.dma_limit) {
      return std::unexpected(make_error(Errc::out_of_range, "map", "recording IOMMU", "above the DMA limit"));
    }
    const std::uint64_t bus = next_;
    next_ += memory.size() + 0x1000;  // a hole between chunks: no bus address is shared
    mappings_[bus] = {memory.data(), memory.size()};
    return BusAddress{bus};
  }
  bool retry_with_other_memory(const Error&) const override { return false; }
  Result<void> unmap(BusAddress address, const Mapping&) override {
    std::lock_guard lock(mutex_);
    mappings_.erase(address.value);
    return {};
  }
  std::uint64_t mapped_bytes() const override {
    std::lock_guard lock(mutex_);
    std::uint64_t bytes = 0;
    for (const auto& [bus, mapping] : mappings_) bytes += mapping.size;
    return bytes;
  }
  // The CPU address of bus address `bus` for `length` bytes; null unless one mapping holds
  // them all.
  std::byte* cpu_address(std::uint64_t bus, std::uint64_t length) const {
    std::lock_guard lock(mutex_);
    auto it = mappings_.upper_bound(bus);
    if (it == mappings_.begin()) return nullptr;
    --it;
    const std::uint64_t offset = bus - it->first;
    if (offset >= it->second.size || length > it->second.size - offset) return nullptr;
    return it->second.data + offset;
  }

 private:
  struct Mapped {
    std::byte* data;
    std::uint64_t size;
  };
  mutable std::mutex mutex_;
  std::uint64_t next_ = 0x7000'1000;
  std::map<std::uint64_t, Mapped> mappings_;
};

struct Fixture {
  std::shared_ptr<RecordingIommu> iommu = std::make_shared<RecordingIommu>();
  DmaAllocator allocator = DmaAllocator::create(iommu);
};

bool all_zero(const DmaSlice& slice) {
  return std::all_of(slice.data(), slice.data() + slice.size(), [](std::byte b) { return b == std::byte{0}; });
}

// The slice's bus address reaches its own bytes (first and last), as the device sees them.
void expect_bus_reaches_cpu(const RecordingIommu& iommu, const DmaSlice& slice) {
  EXPECT_EQ(iommu.cpu_address(slice.bus_address().value, slice.size()), slice.data());
}

constexpr std::size_t kSizes[] = {1, 16, 63, 64, 65, 100, 128, 129, 255, 256, 257, 511, 512, 513,
                                  1000, 1024, 1025, 2047, 2048, 2049, 4095, 4096, 4097, 10000};

TEST(DmaPool, EverySizeAndAlignmentIsAlignedInCpuAndBusAddresses) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator);
  ASSERT_TRUE(pool) << pool.error().message();
  std::vector<DmaSlice> live;  // kept, so that each slice is a new slot
  for (std::size_t alignment = 1; alignment <= 4096; alignment *= 2) {
    for (const std::size_t size : kSizes) {
      for (int copy = 0; copy < 3; ++copy) {
        SCOPED_TRACE(testing::Message() << size << " bytes aligned to " << alignment);
        auto slice = pool->allocate(size, alignment);
        ASSERT_TRUE(slice) << slice.error().message();
        EXPECT_EQ(slice->size(), size);
        EXPECT_EQ(reinterpret_cast<std::uintptr_t>(slice->data()) % alignment, 0u);
        EXPECT_EQ(slice->bus_address().value % alignment, 0u);
        expect_bus_reaches_cpu(*f.iommu, *slice);
        EXPECT_TRUE(all_zero(*slice));
        live.push_back(std::move(*slice));
      }
    }
  }
}

TEST(DmaPool, EachClassIsAlignedToItsSizeWithTheDefaultAlignment) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator);
  ASSERT_TRUE(pool);
  std::vector<DmaSlice> live;
  for (std::size_t size = 64; size <= 4096; size *= 2) {
    for (int copy = 0; copy < 5; ++copy) {
      auto slice = pool->allocate(size, size);
      ASSERT_TRUE(slice) << slice.error().message();
      EXPECT_EQ(reinterpret_cast<std::uintptr_t>(slice->data()) % size, 0u) << size;
      EXPECT_EQ(slice->bus_address().value % size, 0u) << size;
      live.push_back(std::move(*slice));
    }
  }
}

// A released slot comes back (most recent first) before any new memory, and zeroed over
// the new slice's size whatever the last one left there.
TEST(DmaPool, AReleasedSlotIsReusedAndZeroed) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator);
  ASSERT_TRUE(pool);
  for (const std::size_t size : {std::size_t{40}, std::size_t{64}, std::size_t{512}, std::size_t{4096},
                                 std::size_t{6000}}) {
    SCOPED_TRACE(size);
    std::byte* first = nullptr;
    {
      auto slice = pool->allocate(size);
      ASSERT_TRUE(slice);
      first = slice->data();
      std::memset(slice->data(), 0xa5, size);
    }
    const std::size_t chunks = pool->chunk_count();
    auto again = pool->allocate(size);
    ASSERT_TRUE(again);
    EXPECT_EQ(again->data(), first);
    EXPECT_TRUE(all_zero(*again));
    EXPECT_EQ(pool->chunk_count(), chunks);
  }
}

TEST(DmaPool, ReleasedSlotsServeTheNextSlicesWithoutNewChunks) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator, {}, 8192);
  ASSERT_TRUE(pool);
  for (int round = 0; round < 50; ++round) {
    std::vector<DmaSlice> slices;
    for (int i = 0; i < 60; ++i) {
      auto slice = pool->allocate(64);
      ASSERT_TRUE(slice) << slice.error().message();
      slices.push_back(std::move(*slice));
    }
  }
  EXPECT_EQ(pool->chunk_count(), 1u) << "60 slots of 64 bytes fit one 8 KiB chunk, round after round";
  EXPECT_EQ(f.iommu->mapped_bytes(), 8192u);
}

// A few small slices of different classes share one chunk: the first runs are small.
TEST(DmaPool, AFewSlicesOfSeveralClassesShareOneSmallChunk) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator, {}, 4096);
  ASSERT_TRUE(pool);
  std::vector<DmaSlice> slices;
  for (const std::size_t size : {100, 200, 16, 1000, 64}) {
    auto slice = pool->allocate(size);
    ASSERT_TRUE(slice) << slice.error().message();
    slices.push_back(std::move(*slice));
  }
  EXPECT_EQ(pool->chunk_count(), 1u);
}

// Above 4 KiB, or aligned beyond the size class, slices are placed first-fit and merged
// back on release: three released slices make room for one that needs all their space.
TEST(DmaPool, TheFirstFitPathMergesReleasedNeighbours) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator, {}, 65536);
  ASSERT_TRUE(pool);
  {
    std::vector<DmaSlice> slices;
    for (int i = 0; i < 3; ++i) {
      auto slice = pool->allocate(20000, 4096);
      ASSERT_TRUE(slice);
      slices.push_back(std::move(*slice));
    }
    auto aligned_beyond_class = pool->allocate(100, 4096);
    ASSERT_TRUE(aligned_beyond_class);
    EXPECT_EQ(aligned_beyond_class->bus_address().value % 4096, 0u);
  }
  auto whole = pool->allocate(65536);
  ASSERT_TRUE(whole) << whole.error().message();
  EXPECT_EQ(pool->chunk_count(), 1u);
  auto more = pool->allocate(4097);
  ASSERT_TRUE(more);
  EXPECT_EQ(pool->chunk_count(), 2u);
}

TEST(DmaPool, ErrorsAreUnchanged) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator, {}, 8192);
  ASSERT_TRUE(pool);
  for (const auto& [size, alignment] : std::vector<std::pair<std::size_t, std::size_t>>{
           {0, 64}, {8193, 64}, {64, 0}, {64, 3}, {64, 8192}}) {
    auto slice = pool->allocate(size, alignment);
    ASSERT_FALSE(slice);
    EXPECT_EQ(slice.error().code, Errc::invalid_argument);
  }
  EXPECT_FALSE(DmaPool::create(f.allocator, {}, 0));
  EXPECT_FALSE(DmaPool::create(f.allocator, {}, 5000));
  // A chunk that cannot be mapped: the allocator's error, on both paths; nothing is left
  // behind (the pool goes cleanly).
  auto refused = DmaPool::create(f.allocator, {.dma_limit = 0xfff});
  ASSERT_TRUE(refused);
  for (const std::size_t size : {64, 5000}) {
    auto slice = refused->allocate(size);
    ASSERT_FALSE(slice);
    EXPECT_EQ(slice.error().code, Errc::out_of_range) << slice.error().message();
  }
  EXPECT_EQ(refused->chunk_count(), 0u);
}

// Slices keep their chunks mapped after every handle of the pool is gone, in any order of
// release; the last one unmaps them.
TEST(DmaPool, SlicesOutliveThePool) {
  Fixture f;
  std::vector<DmaSlice> slices;
  {
    auto pool = DmaPool::create(f.allocator, {}, 8192);
    ASSERT_TRUE(pool);
    DmaPool copy = *pool;
    for (const std::size_t size : {64, 512, 6000, 100, 4096}) {
      auto slice = copy.allocate(size);
      ASSERT_TRUE(slice) << slice.error().message();
      slices.push_back(std::move(*slice));
    }
  }
  const std::uint64_t mapped = f.iommu->mapped_bytes();
  EXPECT_GT(mapped, 0u);
  DmaSlice moved = std::move(slices[1]);
  for (DmaSlice& slice : slices) {
    if (slice.data() == nullptr) continue;  // the moved-from one
    std::memset(slice.data(), 0x5a, slice.size());
    expect_bus_reaches_cpu(*f.iommu, slice);
  }
  slices.erase(slices.begin() + 2);
  slices.erase(slices.begin());
  EXPECT_EQ(f.iommu->mapped_bytes(), mapped);
  slices.clear();
  EXPECT_EQ(f.iommu->mapped_bytes(), mapped) << "the moved slice still holds them";
  moved = DmaSlice(std::move(moved));
  EXPECT_NE(moved.data(), nullptr);
  EXPECT_EQ(f.iommu->mapped_bytes(), mapped);
  { DmaSlice last = std::move(moved); }
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

TEST(DmaPool, APoolWithoutSlicesUnmapsWhenItsLastHandleGoes) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator);
  ASSERT_TRUE(pool);
  { auto slice = pool->allocate(64); }
  DmaPool copy = *pool;
  { DmaPool first = std::move(*pool); }
  EXPECT_GT(f.iommu->mapped_bytes(), 0u);
  { DmaPool last = std::move(copy); }
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

TEST(DmaPool, MoveAssignmentGivesTheOldSliceBack) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator);
  ASSERT_TRUE(pool);
  auto a = pool->allocate(64);
  auto b = pool->allocate(64);
  ASSERT_TRUE(a && b);
  std::byte* old = a->data();
  *a = std::move(*b);
  EXPECT_EQ(b->data(), nullptr);
  EXPECT_EQ(b->size(), 0u);
  EXPECT_EQ(b->bus_address().value, 0u) << "a moved-from slice names no bus address";
  auto c = pool->allocate(64);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->data(), old) << "a's old slot was released by the assignment";
}

// Live ranges, CPU or bus, that must never overlap; fails the test when a new one does.
class Reference {
 public:
  void add(std::uint64_t start, std::uint64_t size) {
    auto next = live_.lower_bound(start);
    if (next != live_.end()) {
      ASSERT_GE(next->first, start + size) << "overlaps the range after it";
    }
    if (next != live_.begin()) {
      auto previous = std::prev(next);
      ASSERT_LE(previous->first + previous->second, start) << "overlaps the range before it";
    }
    live_[start] = size;
  }
  void remove(std::uint64_t start) { live_.erase(start); }

 private:
  std::map<std::uint64_t, std::uint64_t> live_;
};

struct Held {
  DmaSlice slice;
  std::byte tag;
};

// Fills `slice` with a tag of `step` and holds it.
void hold(std::vector<Held>& held, DmaSlice slice, int step) {
  const auto tag = static_cast<std::byte>(1 + step % 255);
  std::memset(slice.data(), static_cast<int>(tag), slice.size());
  held.push_back({std::move(slice), tag});
}

// Releases held[index], whose place the last one takes.
void release(std::vector<Held>& held, std::size_t index) {
  std::swap(held[index], held.back());
  held.pop_back();
}

// Whether a held slice still carries its own tag only: no other slice was handed its bytes.
bool keeps_tag(const Held& held) {
  return std::all_of(held.slice.data(), held.slice.data() + held.slice.size(),
                     [&](std::byte b) { return b == held.tag; });
}

// Releases held[index] after checking that it kept its tag, and forgets its CPU range.
void release_checked(std::vector<Held>& held, std::size_t index, Reference& cpu) {
  ASSERT_TRUE(keeps_tag(held[index]));
  cpu.remove(reinterpret_cast<std::uintptr_t>(held[index].slice.data()));
  release(held, index);
}

// Mixed sizes and alignments, allocated and released at random against references of
// the live CPU and bus ranges; each slice is filled with its own tag, checked at release.
TEST(DmaPool, RandomSequencesNeverHandOutOverlappingSlices) {
  Fixture f;
  auto pool = DmaPool::create(f.allocator, {}, 16384);
  ASSERT_TRUE(pool);
  std::mt19937_64 random(25);
  Reference cpu;
  Reference bus;
  std::vector<Held> held;
  for (int step = 0; step < 20000; ++step) {
    if (held.empty() || random() % 100 < 55) {
      const std::size_t size = random() % 10 == 0 ? 1 + random() % 16384 : 1 + random() % 4096;
      const std::size_t alignment = std::size_t{1} << (random() % 13);
      auto slice = pool->allocate(size, alignment);
      ASSERT_TRUE(slice) << slice.error().message();
      ASSERT_EQ(reinterpret_cast<std::uintptr_t>(slice->data()) % alignment, 0u);
      ASSERT_EQ(slice->bus_address().value % alignment, 0u);
      ASSERT_TRUE(all_zero(*slice)) << "step " << step;
      ASSERT_NO_FATAL_FAILURE(cpu.add(reinterpret_cast<std::uintptr_t>(slice->data()), size));
      ASSERT_NO_FATAL_FAILURE(bus.add(slice->bus_address().value, size));
      ASSERT_EQ(f.iommu->cpu_address(slice->bus_address().value, size), slice->data());
      hold(held, std::move(*slice), step);
    } else {
      const std::size_t index = random() % held.size();
      bus.remove(held[index].slice.bus_address().value);
      ASSERT_NO_FATAL_FAILURE(release_checked(held, index, cpu));
    }
  }
}

// Threads allocating, filling, handing slices to each other and releasing them: no slice
// is handed out twice (each keeps its tag) and the pool ends with all memory unmapped.
TEST(DmaPool, ThreadsShareAPool) {
  Fixture f;
  {
    auto pool = DmaPool::create(f.allocator, {}, 16384);
    ASSERT_TRUE(pool);
    std::mutex exchange_mutex;
    std::vector<Held> exchange;  // slices one thread allocated and another releases
    std::atomic<int> failures = 0;
    auto work = [&](unsigned seed) {
      std::mt19937 random(seed);
      std::vector<Held> mine;
      for (int step = 0; step < 20000; ++step) {
        const std::size_t size = random() % 20 == 0 ? 4097 + random() % 4000 : 1 + random() % 1024;
        auto slice = pool->allocate(size, std::size_t{1} << (random() % 8));
        if (!slice || !all_zero(*slice)) {
          ++failures;
          continue;
        }
        const auto tag = static_cast<std::byte>(seed * 16 + step % 16);
        std::memset(slice->data(), static_cast<int>(tag), size);
        mine.push_back({std::move(*slice), tag});
        if (mine.size() < 32) continue;
        for (Held& held : mine) {
          if (!keeps_tag(held)) ++failures;
        }
        {
          std::lock_guard lock(exchange_mutex);
          std::swap(mine, exchange);  // the other threads' slices, released below
        }
        for (Held& held : mine) {
          if (!keeps_tag(held)) ++failures;
        }
        mine.clear();  // outside the exchange lock: releases from several threads overlap
      }
    };
    std::vector<std::thread> threads;
    for (unsigned seed = 1; seed <= 4; ++seed) threads.emplace_back(work, seed);
    for (std::thread& thread : threads) thread.join();
    EXPECT_EQ(failures, 0);
  }
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

// The last handle and the last slice, dropped in two threads at once, many times: the
// state is deleted exactly once (ASan and TSan builds see a double free or a race).
TEST(DmaPool, TheLastHandleAndTheLastSliceRaceCleanly) {
  Fixture f;
  for (int round = 0; round < 300; ++round) {
    auto pool = DmaPool::create(f.allocator);
    ASSERT_TRUE(pool);
    auto slice = pool->allocate(64);
    ASSERT_TRUE(slice);
    std::thread other([s = std::move(*slice)]() mutable { DmaSlice going = std::move(s); });
    { DmaPool gone = std::move(*pool); }
    other.join();
  }
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

// Pools a thread keeps cache entries for (kCachedPools in src/dma/pool.cc): using one more
// than this gives up an entry.
constexpr std::size_t kCachedPoolsForTest = 4;

// A pool in an optional, which a test resets to drop its last handle; empty on failure.
std::optional<DmaPool> pool_or_nothing(const DmaAllocator& allocator) {
  auto pool = DmaPool::create(allocator);
  if (!pool) return std::nullopt;
  return std::move(*pool);
}

// A thread that released slices (kept in its cache) and then idles, as a worker of a
// thread pool does, does not keep the pool's chunks mapped once the last handle is gone:
// closing reclaims its cache.
TEST(DmaPool, ClosingReclaimsTheSlotsAnIdleThreadKeeps) {
  Fixture f;
  std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
  ASSERT_TRUE(pool);
  std::mutex mutex;
  std::condition_variable changed;
  bool released = false;
  bool finish = false;
  std::atomic<int> failures = 0;
  std::thread worker([&, handle = *pool]() mutable {
    {
      std::vector<DmaSlice> slices;
      for (std::size_t size : {64, 64, 64, 200, 200, 1000, 4096, 4096}) {
        auto slice = handle.allocate(size);
        if (!slice) ++failures; else slices.push_back(std::move(*slice));
      }
    }
    { DmaPool gone = std::move(handle); }
    std::unique_lock lock(mutex);
    released = true;
    changed.notify_all();
    changed.wait(lock, [&] { return finish; });
  });
  {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return released; });
  }
  EXPECT_GT(f.iommu->mapped_bytes(), 0u);
  pool.reset();
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u) << "the idle worker's cached slots kept the chunks mapped";
  {
    std::lock_guard lock(mutex);
    finish = true;
    changed.notify_all();
  }
  worker.join();
  EXPECT_EQ(failures, 0);
}

// Slices a thread releases after the pool's last handle went (its cache was bound to the
// pool, and reclaimed) go back under the lock: the last one unmaps the chunks.
TEST(DmaPool, SlicesReleasedAfterThePoolClosedUnmapItWithTheLast) {
  Fixture f;
  std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
  ASSERT_TRUE(pool);
  std::vector<DmaSlice> slices;
  std::binary_semaphore ready(0);
  std::binary_semaphore closed(0);
  std::atomic<int> failures = 0;
  std::thread worker([&, handle = *pool]() mutable {
    for (int i = 0; i < 40; ++i) {
      auto slice = handle.allocate(i % 2 == 0 ? 64 : 512);
      if (!slice) ++failures; else slices.push_back(std::move(*slice));
    }
    slices.pop_back();  // one into this thread's cache, bound to the pool
    { DmaPool gone = std::move(handle); }
    ready.release();
    closed.acquire();
    while (slices.size() > 1) slices.pop_back();
  });
  ready.acquire();
  pool.reset();
  closed.release();
  worker.join();
  EXPECT_GT(f.iommu->mapped_bytes(), 0u) << "one slice is still held";
  slices.clear();
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
  EXPECT_EQ(failures, 0);
}

// Threads that kept slots and exited gave them back: the pool, closed afterwards, unmaps
// everything.
TEST(DmaPool, ExitingThreadsGiveTheirCachedSlotsBack) {
  Fixture f;
  {
    auto pool = DmaPool::create(f.allocator);
    ASSERT_TRUE(pool);
    for (int round = 0; round < 20; ++round) {
      std::thread([&] {
        for (int i = 0; i < 30; ++i) {
          auto slice = pool->allocate(64 << (i % 7));
          ASSERT_TRUE(slice);
        }
      }).join();
    }
    auto slice = pool->allocate(64);
    ASSERT_TRUE(slice);
    EXPECT_EQ(pool->chunk_count(), 1u) << "the exited threads' slots served the next ones";
  }
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

// One thread allocating from six pools at random (more than a thread's cache keeps, so
// that its entries move between pools), each slice checked against its own pool's IOMMU:
// no slot of one pool is handed out by another, and no slice is handed out twice.
TEST(DmaPool, AThreadUsingSeveralPoolsKeepsTheirSlotsApart) {
  constexpr std::size_t kPools = 6;
  std::vector<Fixture> fixtures(kPools);
  {
    std::vector<DmaPool> pools;
    for (Fixture& fixture : fixtures) {
      auto pool = DmaPool::create(fixture.allocator);
      ASSERT_TRUE(pool);
      pools.push_back(std::move(*pool));
    }
    std::mt19937 random(27);
    Reference cpu;
    std::vector<Held> held;
    for (int step = 0; step < 30000; ++step) {
      if (held.empty() || random() % 100 < 52) {
        // Mostly the first two pools, as a thread serving two queues would; now and then
        // the others.
        const std::size_t which = random() % 4 != 0 ? random() % 2 : random() % kPools;
        const std::size_t size = 1 + random() % 4096;
        auto slice = pools[which].allocate(size);
        ASSERT_TRUE(slice) << slice.error().message();
        ASSERT_TRUE(all_zero(*slice)) << "step " << step;
        ASSERT_EQ(fixtures[which].iommu->cpu_address(slice->bus_address().value, size), slice->data())
            << "step " << step << ": not a slot of pool " << which;
        ASSERT_NO_FATAL_FAILURE(cpu.add(reinterpret_cast<std::uintptr_t>(slice->data()), size));
        hold(held, std::move(*slice), step);
      } else {
        ASSERT_NO_FATAL_FAILURE(release_checked(held, random() % held.size(), cpu));
      }
    }
  }
  for (const Fixture& fixture : fixtures) EXPECT_EQ(fixture.iommu->mapped_bytes(), 0u);
}

// The last handle dropped while other threads, their caches bound to the pool, release
// slices at full speed: each round ends with everything unmapped, whichever side won (the
// sanitizer builds see a double free, a use after free or a race).
TEST(DmaPool, ClosingRacesReleasesIntoThreadCaches) {
  Fixture f;
  constexpr int kWorkers = 3;
  for (int round = 0; round < 150; ++round) {
    std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
    ASSERT_TRUE(pool);
    std::barrier start(kWorkers + 1);
    std::atomic<int> failures = 0;
    std::vector<std::thread> workers;
    for (int w = 0; w < kWorkers; ++w) {
      workers.emplace_back([&, handle = *pool, w]() mutable {
        std::vector<DmaSlice> slices;
        for (int i = 0; i < 24; ++i) {
          auto slice = handle.allocate(64 << ((i + w) % 3));
          if (!slice) ++failures; else slices.push_back(std::move(*slice));
        }
        { DmaPool gone = std::move(handle); }
        start.arrive_and_wait();
        while (!slices.empty()) slices.pop_back();
      });
    }
    start.arrive_and_wait();
    pool.reset();
    for (std::thread& worker : workers) worker.join();
    ASSERT_EQ(failures, 0);
    ASSERT_EQ(f.iommu->mapped_bytes(), 0u) << "round " << round;
  }
}

// A child of fork() has only the forking thread: closing a pool there does not wait on
// the parent's other threads, whose caches the child inherited.
TEST(DmaPool, AForkedChildClosesAPoolWithoutWaitingForOtherThreads) {
  Fixture f;
  std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
  ASSERT_TRUE(pool);
  std::binary_semaphore cached(0);
  std::binary_semaphore finish(0);
  std::thread worker([&, handle = *pool]() mutable {
    { auto slice = handle.allocate(64); }  // kept in this thread's cache
    cached.release();
    finish.acquire();
  });
  cached.acquire();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a hang ends the child with SIGALRM
    pool.reset();
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  finish.release();
  worker.join();
  pool.reset();
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

// The caches are at work wherever membarrier's private expedited command is there (the
// results alone would not show it: the locked path gives the same), and none are kept
// where it is not (dma_pool_without_membarrier_test); closing the pool takes them back.
TEST(DmaPool, ThreadsKeepSlotsWhereverMembarrierAllowsIt) {
  const long commands = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
  const bool available = commands > 0 && (commands & MEMBARRIER_CMD_PRIVATE_EXPEDITED) != 0;
  EXPECT_EQ(detail::dma_pool_thread_caches_enabled(), available);
  Fixture f;
  std::thread([&] {  // a new thread: a cache of its own, empty
    auto pool = DmaPool::create(f.allocator);
    ASSERT_TRUE(pool);
    {
      auto a = pool->allocate(64);
      auto b = pool->allocate(100);
      ASSERT_TRUE(a && b);
    }
    if (available) {
      EXPECT_GE(detail::dma_pool_slots_cached_by_this_thread(), 2u) << "both released slots are kept";
    } else {
      EXPECT_EQ(detail::dma_pool_slots_cached_by_this_thread(), 0u);
    }
    { DmaPool gone = std::move(*pool); }
    EXPECT_EQ(detail::dma_pool_slots_cached_by_this_thread(), 0u) << "closing took them back";
  }).join();
  EXPECT_EQ(f.iommu->mapped_bytes(), 0u);
}

// Allocates a 64-byte slice into `handed` for another thread to release, then drops
// `handle`: the calling thread's cache entry is left bound to the pool, holding no slot.
void hand_over_a_slice(DmaPool handle, std::optional<DmaSlice>& handed) {
  auto slice = handle.allocate(64);
  if (slice) handed.emplace(std::move(*slice));
}

// A thread that allocated a slice (its cache entry bound to the pool, holding no slot),
// handed it over and exits while the slice's new owner releases it and drops the last
// handle: whichever comes first, the pool is deleted once, after both (ASan sees a use
// after free or a double free).
TEST(DmaPool, AThreadExitingWhileThePoolClosesLeavesNothingBehind) {
  Fixture f;
  for (int round = 0; round < 300; ++round) {
    std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
    ASSERT_TRUE(pool);
    std::optional<DmaSlice> handed;
    std::binary_semaphore given(0);
    std::thread worker([&, handle = *pool]() mutable {
      hand_over_a_slice(std::move(handle), handed);
      given.release();
    });
    given.acquire();
    const bool allocated = handed.has_value();
    handed.reset();  // into this thread's cache
    pool.reset();    // while the worker exits
    worker.join();
    ASSERT_TRUE(allocated);
    ASSERT_EQ(f.iommu->mapped_bytes(), 0u) << "round " << round;
  }
}

// membarrier refused only after threads began to cache (a process that sandboxes itself
// late): closing cannot unbind the threads' entries, so an entry bound to the pool, even
// one that holds no slot, pins it: the pool lives on, mapped, until the entry's thread
// gives it up (here by using other pools); then it goes, and nothing refers to it
// afterwards (an entry that did not pin it would be left pointing at a deleted pool). Run in a child, whose filter cannot
// reach the other tests.
// The child's side of the test below: returns 0, or the bits of what went wrong (1: a pool
// closed before the filter stayed mapped; 2: the pool was not pinned; 4: it was, without
// caches; 8: it outlived its last entry; 16: ...as the worker saw it; 32: an allocation
// failed; 100 and up: a step that could not be taken).
int pin_a_pool_with_membarrier_refused(bool caching) {
  int failures = 0;
  {
    Fixture early;  // a pool used and closed while membarrier still answers
    std::optional<DmaPool> pool = pool_or_nothing(early.allocator);
    if (!pool || !pool->allocate(64)) return 100;
    pool.reset();
    if (early.iommu->mapped_bytes() != 0) failures |= 1;
  }
  if (!sandboxing::refuse_membarrier()) return 101;
  Fixture f;
  std::optional<DmaPool> pool = pool_or_nothing(f.allocator);
  if (!pool) return 102;
  std::optional<DmaSlice> handed;
  std::binary_semaphore bound(0);
  std::binary_semaphore closed(0);
  std::atomic<int> worker_failures = 0;
  std::thread worker([&, handle = *pool]() mutable {
    // The main thread keeps no cache in a child of fork: its release empties the pool.
    hand_over_a_slice(std::move(handle), handed);
    bound.release();
    closed.acquire();
    std::vector<Fixture> others(kCachedPoolsForTest + 1);
    for (Fixture& other : others) {
      auto other_pool = DmaPool::create(other.allocator);
      if (!other_pool || !other_pool->allocate(64)) worker_failures |= 32;
    }
    if (f.iommu->mapped_bytes() != 0) worker_failures |= 16;  // its entry was given up
  });
  bound.acquire();
  if (!handed) failures |= 32;
  handed.reset();
  pool.reset();
  if (caching && f.iommu->mapped_bytes() == 0) failures |= 2;  // pinned by the worker's entry
  if (!caching && f.iommu->mapped_bytes() != 0) failures |= 4;
  closed.release();
  worker.join();
  if (f.iommu->mapped_bytes() != 0) failures |= 8;
  return failures | worker_failures;
}

TEST(DmaPool, ABarrierRefusedLateLeavesThePoolPinnedUntilItsThreadsLetGo) {
  // Registers membarrier, and the fork handler that leaves the child's main thread without
  // a cache, before the fork, whichever tests ran before this one.
  const bool caching = detail::dma_pool_thread_caches_enabled();
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(30);  // a hang ends the child with SIGALRM
    _exit(pin_a_pool_with_membarrier_refused(caching));
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "child status " << status << " (exit code bits: pin_a_pool_with_membarrier_refused)";
}

}  // namespace
}  // namespace pcie
