// Runs inside the test VM, built with ThreadSanitizer (library included: //:pcie_tsan): the
// threading contract of pcie/vfio.h and pcie/dma.h, exercised from several threads at once.
//  - every DmaAllocator of a container (and every copy of one) shares the container's IOVA
//    space: no two live buffers overlap, whichever thread and allocator made them;
//  - a VfioContainer opens devices from several threads;
//  - a DmaPool may be shared;
//  - of two threads enabling the same interrupt kind, exactly one succeeds.
// Any data race inside the library makes ThreadSanitizer fail the program (halt_on_error).
// The VM binds edus 00:03.0 and 00:06.0 (two IOMMU groups) to vfio-pci.
#include <gtest/gtest.h>

#include <atomic>
#include <cstdlib>
#include <map>
#include <mutex>
#include <thread>
#include <vector>

#include "pcie/dma.h"
#include "pcie/vfio.h"

namespace pcie {
namespace {

const Bdf kEduA{0, 0, 3, 0};
const Bdf kEduB{0, 0, 6, 0};
constexpr std::uint64_t kEduDmaLimit = dma_mask_limit(28);

VfioContainer open_container() {
  auto container = VfioContainer::open();
  if (!container) {
    ADD_FAILURE() << container.error().message();
    std::abort();
  }
  return std::move(*container);
}

// Live bus-address ranges; records any overlap between two of them.
class OverlapChecker {
 public:
  void add(std::uint64_t start, std::uint64_t size) {
    std::lock_guard lock(mutex_);
    auto next = live_.lower_bound(start);
    if (next != live_.end() && next->first < start + size) ++overlaps_;
    if (next != live_.begin() && std::prev(next)->second > start) ++overlaps_;
    live_[start] = start + size;
  }
  void remove(std::uint64_t start) {
    std::lock_guard lock(mutex_);
    live_.erase(start);
  }
  int overlaps() const {
    std::lock_guard lock(mutex_);
    return overlaps_;
  }

 private:
  mutable std::mutex mutex_;
  std::map<std::uint64_t, std::uint64_t> live_;
  int overlaps_ = 0;
};

// Rounds of: allocate `per_round` buffers, check them in, free them. Returns failures.
int churn(const DmaAllocator& allocator, OverlapChecker& checker, int rounds, int per_round) {
  int failures = 0;
  for (int round = 0; round < rounds; ++round) {
    std::vector<DmaBuffer> held;
    for (int i = 0; i < per_round; ++i) {
      auto buffer = allocator.allocate(4096, {.dma_limit = kEduDmaLimit, .prefer = DmaBacking::pages});
      if (!buffer) {
        ++failures;
        continue;
      }
      checker.add(buffer->iova().value, 4096);
      held.push_back(std::move(*buffer));
    }
    for (DmaBuffer& buffer : held) checker.remove(buffer.iova().value);
    held.clear();
  }
  return failures;
}

TEST(GuestThreads, AllocatorsOfOneContainerShareOneIovaSpace) {
  VfioContainer container = open_container();
  auto device = container.open_device(kEduB);
  ASSERT_TRUE(device) << device.error().message();
  OverlapChecker checker;
  std::atomic<int> failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      auto allocator = DmaAllocator::create(container);  // one allocator per thread
      if (!allocator) {
        ++failures;
        return;
      }
      failures += churn(*allocator, checker, 50, 8);
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures, 0) << "allocations failed: allocators handed out addresses another one held";
  EXPECT_EQ(checker.overlaps(), 0);
  auto allocator = DmaAllocator::create(container);
  ASSERT_TRUE(allocator);
  EXPECT_EQ(allocator->mapped_bytes(), 0u) << "every buffer was unmapped";
}

TEST(GuestThreads, CopiesOfOneAllocatorAreSafe) {
  VfioContainer container = open_container();
  auto device = container.open_device(kEduB);
  ASSERT_TRUE(device) << device.error().message();
  auto allocator = DmaAllocator::create(container);
  ASSERT_TRUE(allocator);
  OverlapChecker checker;
  std::atomic<int> failures = 0;
  std::vector<std::thread> threads;
  for (int t = 0; t < 2; ++t) {
    const DmaAllocator copy = *allocator;
    threads.emplace_back([&failures, &checker, copy] { failures += churn(copy, checker, 50, 8); });
  }
  failures += churn(*allocator, checker, 50, 8);  // and the original, at the same time
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(checker.overlaps(), 0);
}

TEST(GuestThreads, DevicesOpenFromTwoThreadsOnOneContainer) {
  VfioContainer container = open_container();
  std::atomic<int> failures = 0;
  std::string first_error;
  std::mutex error_mutex;
  auto open_repeatedly = [&](const Bdf& bdf) {
    for (int round = 0; round < 20; ++round) {
      auto device = container.open_device(bdf);
      if (!device) {
        std::lock_guard lock(error_mutex);
        if (first_error.empty()) first_error = device.error().message();
        ++failures;
        continue;
      }
      auto bar = device->open_region(kVfioBar0Region);
      if (!bar || bar->read(Width::bits32, 0).value_or(0) != 0x010000ed) ++failures;
    }
  };
  std::thread a(open_repeatedly, kEduA);
  std::thread b(open_repeatedly, kEduB);
  a.join();
  b.join();
  EXPECT_EQ(failures, 0) << first_error;
  EXPECT_EQ(container.attached_groups().size(), 2u);
}

TEST(GuestThreads, APoolSharedByTwoThreadsNeverHandsOutASliceTwice) {
  VfioContainer container = open_container();
  auto device = container.open_device(kEduB);
  ASSERT_TRUE(device) << device.error().message();
  auto allocator = DmaAllocator::create(container);
  ASSERT_TRUE(allocator);
  auto pool = DmaPool::create(*allocator, {.dma_limit = kEduDmaLimit, .prefer = DmaBacking::pages});
  ASSERT_TRUE(pool);
  OverlapChecker checker;
  std::atomic<int> failures = 0;
  auto use_pool = [&] {
    for (int round = 0; round < 10; ++round) {
      std::vector<DmaSlice> slices;
      for (int i = 0; i < 100; ++i) {
        auto slice = pool->allocate(64, 64);
        if (!slice) {
          ++failures;
          continue;
        }
        checker.add(slice->iova().value, slice->size());
        slices.push_back(std::move(*slice));
      }
      for (DmaSlice& slice : slices) checker.remove(slice.iova().value);
    }
  };
  std::thread a(use_pool);
  std::thread b(use_pool);
  a.join();
  b.join();
  EXPECT_EQ(failures, 0);
  EXPECT_EQ(checker.overlaps(), 0);
}

TEST(GuestThreads, OfTwoThreadsEnablingOneInterruptKindExactlyOneWins) {
  VfioContainer container = open_container();
  auto device = container.open_device(kEduB);
  ASSERT_TRUE(device) << device.error().message();
  for (int round = 0; round < 20; ++round) {
    std::optional<VfioInterrupts> first, second;
    std::optional<Error> first_error, second_error;
    auto enable = [&](std::optional<VfioInterrupts>& won, std::optional<Error>& lost) {
      auto irqs = VfioInterrupts::enable(*device, IrqKind::msi);
      if (irqs) {
        won.emplace(std::move(*irqs));
      } else {
        lost = irqs.error();
      }
    };
    std::thread a([&] { enable(first, first_error); });
    std::thread b([&] { enable(second, second_error); });
    a.join();
    b.join();
    ASSERT_EQ(first.has_value() + second.has_value(), 1) << "round " << round;
    const Error& lost = first_error ? *first_error : *second_error;
    EXPECT_EQ(lost.code, Errc::busy) << lost.message();
  }
}

}  // namespace
}  // namespace pcie
