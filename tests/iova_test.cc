// The IOVA allocator: ranges with the MSI hole, DMA masks, alignment, exhaustion, and a
// randomised run checked against a page bitmap for overlaps and lost space.
#include "pcie/iova.h"

#include <gtest/gtest.h>

#include <random>

namespace pcie {
namespace {

// What the emulated Intel IOMMU reports (../shared/VM.md): 39 bits, MSI window excluded.
const std::vector<IovaRange> kVmRanges{{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
constexpr std::uint64_t kPage = 4096;

TEST(IovaAllocator, FirstAllocationSkipsTheLowReserve) {
  IovaAllocator allocator(kVmRanges);
  auto iova = allocator.allocate(kPage, kPage, dma_mask_limit(64));
  ASSERT_TRUE(iova) << iova.error().message();
  EXPECT_EQ(iova->value, 0x10000u);
}

TEST(IovaAllocator, AlignmentIsHonoured) {
  IovaAllocator allocator(kVmRanges);
  ASSERT_TRUE(allocator.allocate(kPage, kPage, dma_mask_limit(64)));
  auto huge = allocator.allocate(2 << 20, 2 << 20, dma_mask_limit(64));
  ASSERT_TRUE(huge);
  EXPECT_EQ(huge->value % (2 << 20), 0u);
  EXPECT_EQ(huge->value, 2u << 20);
  auto small = allocator.allocate(kPage, kPage, dma_mask_limit(64));
  ASSERT_TRUE(small);
  EXPECT_EQ(small->value, 0x11000u) << "the gap before the aligned block is reused";
}

TEST(IovaAllocator, TwentyEightBitMaskKeepsEverythingBelow256MiB) {
  IovaAllocator allocator(kVmRanges);
  const std::uint64_t limit = dma_mask_limit(28);
  std::uint64_t handed_out = 0;
  for (;;) {
    auto iova = allocator.allocate(1 << 20, kPage, limit);
    if (!iova) {
      EXPECT_EQ(iova.error().code, Errc::out_of_range);
      EXPECT_NE(iova.error().reason.find("at or below 0xfffffff"), std::string::npos) << iova.error().message();
      break;
    }
    ASSERT_LE(iova->value + (1 << 20) - 1, limit);
    handed_out += 1 << 20;
  }
  EXPECT_EQ(handed_out, (256u << 20) - (1u << 20)) << "all of it but the first MiB (64 KiB reserve, then 1 MiB blocks)";
  // Space above the mask is still there for a device that can reach it.
  EXPECT_TRUE(allocator.allocate(1 << 20, kPage, dma_mask_limit(32)));
}

TEST(IovaAllocator, TheMsiWindowIsNeverHandedOut) {
  IovaAllocator allocator({{0xfed00000, 0xfedfffff}, {0xfef00000, 0xfeffffff}}, 0);
  auto a = allocator.allocate(1 << 20, kPage, dma_mask_limit(32));
  auto b = allocator.allocate(1 << 20, kPage, dma_mask_limit(32));
  ASSERT_TRUE(a && b);
  EXPECT_EQ(a->value, 0xfed00000u);
  EXPECT_EQ(b->value, 0xfef00000u);
  EXPECT_FALSE(allocator.allocate(kPage, kPage, dma_mask_limit(32))) << "the 1 MiB window between is not free";
}

TEST(IovaAllocator, BadArguments) {
  IovaAllocator allocator(kVmRanges);
  EXPECT_EQ(allocator.allocate(0, kPage, dma_mask_limit(64)).error().code, Errc::invalid_argument);
  EXPECT_EQ(allocator.allocate(kPage, 3000, dma_mask_limit(64)).error().code, Errc::invalid_argument);
  EXPECT_EQ(allocator.allocate(kPage, 0, dma_mask_limit(64)).error().code, Errc::invalid_argument);
  // Sizes that would wrap the address space fail cleanly.
  EXPECT_EQ(allocator.allocate(~std::uint64_t{0}, kPage, dma_mask_limit(64)).error().code, Errc::out_of_range);
}

TEST(IovaAllocator, ReleaseCoalescesBackToTheStart) {
  IovaAllocator allocator(kVmRanges);
  const std::uint64_t before = allocator.free_bytes();
  std::vector<Iova> taken;
  for (int i = 0; i < 8; ++i) taken.push_back(allocator.allocate(kPage, kPage, dma_mask_limit(64)).value());
  for (int i : {3, 0, 7, 5, 1, 6, 2, 4}) allocator.release(taken[static_cast<std::size_t>(i)], kPage);
  EXPECT_EQ(allocator.free_bytes(), before);
  EXPECT_EQ(allocator.allocate(8 * kPage, kPage, dma_mask_limit(64))->value, 0x10000u) << "one block again";
}

// A second device attached to the same IOMMU context may reserve more (its own MSI window,
// an RMRR): the space it takes is never handed out afterwards, whatever was handed out
// before, and every case of overlap (before, inside, across, after a free block) is cut.
TEST(IovaAllocator, RestrictToNarrowerRangesCutsEveryFreeBlock) {
  IovaAllocator allocator({{0, 64 * kPage - 1}}, 0);
  auto early = allocator.allocate(4 * kPage, kPage, dma_mask_limit(64));  // pages 0-3
  ASSERT_TRUE(early);
  ASSERT_EQ(early->value, 0u);
  // Keep pages 0-9 and 20-39 (40-63 reserved now, 10-19 too).
  allocator.restrict_to({{0, 10 * kPage - 1}, {20 * kPage, 40 * kPage - 1}});
  EXPECT_EQ(allocator.free_bytes(), (6 + 20) * kPage) << "pages 4-9 and 20-39";
  std::vector<Iova> pages;
  while (auto page = allocator.allocate(kPage, kPage, dma_mask_limit(64))) pages.push_back(*page);
  ASSERT_EQ(pages.size(), 26u);
  for (const Iova& page : pages) {
    const std::uint64_t index = page.value / kPage;
    EXPECT_TRUE((index >= 4 && index < 10) || (index >= 20 && index < 40)) << "page " << index << " is reserved now";
  }
  allocator.release(*early, 4 * kPage);
  EXPECT_EQ(allocator.free_bytes(), 4 * kPage) << "what was handed out before comes back";
  allocator.restrict_to({});
  EXPECT_EQ(allocator.free_bytes(), 0u);
  EXPECT_FALSE(allocator.allocate(kPage, kPage, dma_mask_limit(64)));
}

// A buffer handed out before another group reserved part of its range (its MSI window):
// when its map fails and the IOVA is given back, the reserved part must not come back into
// the free space, where the next allocation would land on it.
TEST(IovaAllocator, AReleaseAfterARestrictGivesBackOnlyWhatIsStillUsable) {
  IovaAllocator allocator({{0, 64 * kPage - 1}}, 0);
  auto spanning = allocator.allocate(16 * kPage, kPage, dma_mask_limit(64));  // pages 0-15
  ASSERT_TRUE(spanning);
  allocator.restrict_to({{0, 7 * kPage}, {12 * kPage, 64 * kPage - 1}});  // pages 8-11 reserved (page 7 partly)
  allocator.release(*spanning, 16 * kPage);
  EXPECT_EQ(allocator.free_bytes(), (7 + 52) * kPage + 1) << "pages 0-6, page 7's first byte, pages 12-63";
  std::vector<Iova> pages;
  while (auto page = allocator.allocate(kPage, kPage, dma_mask_limit(64))) pages.push_back(*page);
  for (const Iova& page : pages) {
    const std::uint64_t index = page.value / kPage;
    EXPECT_FALSE(index >= 7 && index < 12) << "page " << index << " lies in the reserved range";
  }
  EXPECT_EQ(pages.size(), 64u - 5) << "pages 0-6 and 12-63";
  // Releasing a span that is wholly reserved now gives back nothing.
  allocator.release(Iova{8 * kPage}, 4 * kPage);
  EXPECT_FALSE(allocator.allocate(kPage, kPage, dma_mask_limit(64)));
}

TEST(IovaAllocator, RandomisedNoOverlapNoLeak) {
  constexpr std::uint64_t kPages = 1024;
  IovaAllocator allocator({{0, kPages * kPage - 1}}, 0);
  std::vector<bool> used(kPages, false);
  std::vector<std::pair<Iova, std::uint64_t>> live;
  std::mt19937_64 rng(20261121);
  for (int step = 0; step < 20000; ++step) {
    if (live.empty() || rng() % 3 != 0) {
      const std::uint64_t pages = 1 + rng() % 16;
      const std::uint64_t alignment = kPage << (rng() % 4);
      const std::uint64_t limit = rng() % 2 ? dma_mask_limit(64) : (kPages / 2) * kPage - 1;
      auto iova = allocator.allocate(pages * kPage, alignment, limit);
      if (!iova) continue;
      ASSERT_EQ(iova->value % alignment, 0u);
      ASSERT_LE(iova->value + pages * kPage - 1, limit);
      for (std::uint64_t p = iova->value / kPage; p < iova->value / kPage + pages; ++p) {
        ASSERT_FALSE(used[p]) << "page " << p << " handed out twice";
        used[p] = true;
      }
      live.emplace_back(*iova, pages * kPage);
    } else {
      const std::size_t pick = rng() % live.size();
      const auto [iova, size] = live[pick];
      for (std::uint64_t p = iova.value / kPage; p < (iova.value + size) / kPage; ++p) used[p] = false;
      allocator.release(iova, size);
      live.erase(live.begin() + static_cast<std::ptrdiff_t>(pick));
    }
  }
  for (const auto& [iova, size] : live) allocator.release(iova, size);
  EXPECT_EQ(allocator.free_bytes(), kPages * kPage);
}

}  // namespace
}  // namespace pcie
