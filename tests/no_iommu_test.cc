// The no-IOMMU world on the host, without a device: pagemap entries of every shape, the
// physical-address backend over a fake pagemap file, the allocator's choice of backings
// over a backend double, /proc/iomem texts (real, hidden, hostile), UIO devices in a fake
// sysfs tree (interrupt counts, Interrupt Disable, bus mastering, refusals), /dev/mem
// windows over a plain file, and wait_any across backends. The real kernel paths run in
// the VM (tests/vm/guest_noiommu_test.cc).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/inotify.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "pcie/config_space.h"
#include "pcie/dma.h"
#include "pcie/dma_backend.h"
#include "pcie/dma_pages.h"
#include "pcie/interrupts.h"
#include "pcie/iomem.h"
#include "pcie/physical_window.h"
#include "pcie/testing/fake_sysfs.h"
#include "pcie/uio.h"
#include "src/dma/pagemap.h"
#include "tests/cli_helpers.h"
#include "tests/empty_handles.h"

namespace pcie {
namespace {

namespace fs = std::filesystem;
using pagemap::kPresent;
using pagemap::kSwapped;

std::string temp_dir() {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string pattern = std::string(base ? base : "/tmp") + "/noiommu.XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return "/tmp";
  return pattern;
}

// --- pagemap entries ---

struct PagemapCase {
  const char* name;
  std::vector<std::uint64_t> entries;
  std::optional<std::uint64_t> address;  // expected physical address, or nullopt
  Errc code = Errc::io_error;            // expected error otherwise
  const char* reason_part = "";
};

TEST(Pagemap, EntriesOfEveryShape) {
  const std::uint64_t pfn = 0x12345;
  const std::vector<PagemapCase> cases = {
      {"one present page", {kPresent | pfn}, pfn * 4096},
      {"contiguous pages", {kPresent | pfn, kPresent | (pfn + 1), kPresent | (pfn + 2)}, pfn * 4096},
      {"soft-dirty and exclusive bits ignored", {kPresent | (1ull << 55) | (1ull << 56) | pfn}, pfn * 4096},
      {"PFN 0: hidden without CAP_SYS_ADMIN", {kPresent}, std::nullopt, Errc::permission_denied, "CAP_SYS_ADMIN"},
      {"PFN 0 on a later page", {kPresent | pfn, kPresent}, std::nullopt, Errc::permission_denied, "CAP_SYS_ADMIN"},
      {"not present", {pfn}, std::nullopt, Errc::io_error, "not present"},
      {"swapped out", {kPresent | kSwapped | pfn}, std::nullopt, Errc::io_error, "swapped out"},
      {"a gap", {kPresent | pfn, kPresent | (pfn + 2)}, std::nullopt, Errc::not_supported, "not physically contiguous"},
      {"backwards", {kPresent | (pfn + 1), kPresent | pfn}, std::nullopt, Errc::not_supported, "not physically contiguous"},
      {"the highest PFN with a 64-bit address", {kPresent | ((1ull << 52) - 2)}, ((1ull << 52) - 2) * 4096},
      {"a PFN beyond 64-bit addresses", {kPresent | pagemap::kPfnMask}, std::nullopt, Errc::out_of_range, "beyond"},
      {"a later PFN 0 after the highest", {kPresent | pagemap::kPfnMask, kPresent}, std::nullopt,
       Errc::permission_denied, ""},
      {"no pages", {}, std::nullopt, Errc::invalid_argument, "no pages"},
  };
  for (const PagemapCase& c : cases) {
    SCOPED_TRACE(c.name);
    auto address = pagemap::contiguous_physical_address(c.entries, "test buffer");
    if (c.address) {
      ASSERT_TRUE(address) << address.error().message();
      EXPECT_EQ(*address, *c.address);
    } else {
      ASSERT_FALSE(address) << std::hex << *address;
      EXPECT_EQ(address.error().code, c.code) << address.error().message();
      EXPECT_NE(address.error().message().find(c.reason_part), std::string::npos) << address.error().message();
    }
  }
}

// --- the physical backend over a fake pagemap ---

// Page-aligned anonymous memory owned by a Mapping, and a sparse pagemap file whose
// entries for it the test writes.
struct FakePagemap {
  std::string dir = temp_dir();
  std::string path = dir + "/pagemap";
  Mapping memory;
  explicit FakePagemap(std::size_t pages) {
    void* address = mmap(nullptr, pages * 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
    memory = Mapping(address == MAP_FAILED ? nullptr : address, pages * 4096);
    std::ofstream(path).flush();
  }
  void write_entries(const std::vector<std::uint64_t>& entries) const {
    const int fd = ::open(path.c_str(), O_WRONLY);
    const auto offset = static_cast<off_t>(reinterpret_cast<std::uintptr_t>(memory.data()) / 4096 * 8);
    EXPECT_EQ(pwrite(fd, entries.data(), entries.size() * 8, offset), static_cast<ssize_t>(entries.size() * 8));
    ::close(fd);
  }
};

TEST(PhysicalBackend, MapsContiguousPagesToTheirPhysicalAddress) {
  FakePagemap fake(4);
  ASSERT_TRUE(fake.memory.valid());
  fake.write_entries({kPresent | 0x1000, kPresent | 0x1001, kPresent | 0x1002, kPresent | 0x1003});
  auto backend = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged,
                                           {.pagemap_path = fake.path, .lock = false});
  EXPECT_TRUE(backend->bus_addresses_are_physical());
  auto address = backend->map(fake.memory, {});
  ASSERT_TRUE(address) << address.error().message();
  EXPECT_EQ(address->value, 0x1000u * 4096);
  EXPECT_EQ(backend->mapped_bytes(), 4u * 4096);
  EXPECT_TRUE(backend->unmap(*address, fake.memory));
  EXPECT_EQ(backend->mapped_bytes(), 0u);
}

TEST(PhysicalBackend, DmaLimitIsCheckedOnTheLastByte) {
  FakePagemap fake(2);
  // Pages at 0x0fffe000 and 0x0ffff000: the last byte is exactly 2^28 - 1.
  fake.write_entries({kPresent | 0xfffe, kPresent | 0xffff});
  auto backend = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged,
                                           {.pagemap_path = fake.path, .lock = false});
  EXPECT_TRUE(backend->map(fake.memory, {.dma_limit = dma_mask_limit(28)}));
  auto above = backend->map(fake.memory, {.dma_limit = dma_mask_limit(28) - 1});
  ASSERT_FALSE(above);
  EXPECT_EQ(above.error().code, Errc::out_of_range);
  EXPECT_TRUE(backend->retry_with_other_memory(above.error()));
  EXPECT_NE(above.error().message().find("0xfffe000-0xfffffff"), std::string::npos) << above.error().message();
}

TEST(PhysicalBackend, BusAlignmentIsCheckedOnThePhysicalAddress) {
  FakePagemap fake(4);
  // 0x1010000: aligned to 64 KiB, not to 128 KiB.
  fake.write_entries({kPresent | 0x1010, kPresent | 0x1011, kPresent | 0x1012, kPresent | 0x1013});
  auto backend = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged,
                                           {.pagemap_path = fake.path, .lock = false});
  auto aligned = backend->map(fake.memory, {.bus_alignment = 64 << 10});
  ASSERT_TRUE(aligned) << aligned.error().message();
  EXPECT_EQ(aligned->value, 0x1010000u);
  EXPECT_TRUE(backend->unmap(*aligned, fake.memory));
  auto misaligned = backend->map(fake.memory, {.bus_alignment = 128 << 10});
  ASSERT_FALSE(misaligned);
  EXPECT_EQ(misaligned.error().code, Errc::not_supported);
  EXPECT_TRUE(backend->retry_with_other_memory(misaligned.error())) << "other memory may be aligned";
  EXPECT_NE(misaligned.error().reason.find("0x1010000 is not aligned to 0x20000"), std::string::npos)
      << misaligned.error().message();
  EXPECT_EQ(backend->mapped_bytes(), 0u);
}

TEST(PhysicalBackend, RefusalsOfTheFakePagemap) {
  FakePagemap fake(2);
  auto backend = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged,
                                           {.pagemap_path = fake.path, .lock = false});
  // Nothing written: the file is shorter than the entries (a short read), never zeros.
  auto short_read = backend->map(fake.memory, {});
  ASSERT_FALSE(short_read);
  EXPECT_EQ(short_read.error().code, Errc::io_error) << short_read.error().message();
  fake.write_entries({kPresent, kPresent});
  auto hidden = backend->map(fake.memory, {});
  ASSERT_FALSE(hidden);
  EXPECT_EQ(hidden.error().code, Errc::permission_denied);
  EXPECT_FALSE(backend->retry_with_other_memory(hidden.error())) << "other pages are hidden as well";
  fake.write_entries({kPresent | 5, kPresent | 9});
  auto scattered = backend->map(fake.memory, {});
  ASSERT_FALSE(scattered);
  EXPECT_EQ(scattered.error().code, Errc::not_supported);
  EXPECT_NE(scattered.error().hint.find("huge pages"), std::string::npos);
  auto missing = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged,
                                           {.pagemap_path = fake.dir + "/none", .lock = false})
                     ->map(fake.memory, {});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_EQ(backend->mapped_bytes(), 0u);
}

TEST(PhysicalBackend, RealPagemapGivesAnAddressOrSaysWhy) {
  // This machine's own pagemap, read-only: root sees frame numbers, others a refusal.
  const DmaAllocator allocator = DmaAllocator::create_physical(DeviceMayReachAllMemory::acknowledged);
  auto buffer = allocator.allocate(4096, {.prefer = DmaBacking::pages});
  if (geteuid() == 0) {
    if (!buffer) {
      // Root may still be refused the lock (RLIMIT_MEMLOCK in a container): then it says so.
      EXPECT_EQ(buffer.error().code, Errc::permission_denied) << buffer.error().message();
      return;
    }
    ASSERT_TRUE(buffer->physical_address());
    EXPECT_NE(*buffer->physical_address(), 0u);
    EXPECT_EQ(buffer->physical_address(), buffer->bus_address().value);
    EXPECT_EQ(buffer->backend_name(), "physical addresses (no IOMMU)");
  } else {
    ASSERT_FALSE(buffer);
    EXPECT_EQ(buffer.error().code, Errc::permission_denied) << buffer.error().message();
  }
}

// --- the allocator's choice of backings, over a backend double ---

class RecordingBackend final : public DmaBackend {
 public:
  explicit RecordingBackend(bool physical, std::function<Result<BusAddress>(const Mapping&, const DmaMapRequest&)> answer)
      : physical_(physical), answer_(std::move(answer)) {}
  std::string_view name() const override { return "recording"; }
  bool bus_addresses_are_physical() const override { return physical_; }
  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    page_sizes.push_back(request.page_size);
    bus_alignments.push_back(request.bus_alignment);
    auto result = answer_(memory, request);
    if (result) mapped += memory.size();
    return result;
  }
  bool retry_with_other_memory(const Error& error) const override {
    return error.code == Errc::out_of_range || error.code == Errc::not_supported;
  }
  Result<void> unmap(BusAddress, const Mapping& memory) override {
    mapped -= memory.size();
    ++unmaps;
    return {};
  }
  std::uint64_t mapped_bytes() const override { return mapped; }
  // The interface's default plan, as any backend of a user's own gets (the physical policy
  // where bus addresses are physical), or that policy with `attempts` pieces a step.
  Result<std::vector<DmaMemoryStep>> memory_plan(std::size_t size, DmaBacking prefer,
                                                 const DmaMapRequest& request) const override {
    if (empty_plan) return std::vector<DmaMemoryStep>{};
    if (physical_ && attempts != 0) return physical_memory_plan(size, prefer, request, attempts);
    return DmaBackend::memory_plan(size, prefer, request);
  }

  unsigned attempts = 0;  // 0: the interface's default
  bool empty_plan = false;
  std::vector<std::uint64_t> page_sizes;
  std::vector<std::uint64_t> bus_alignments;
  std::uint64_t mapped = 0;
  int unmaps = 0;

 private:
  bool physical_;
  std::function<Result<BusAddress>(const Mapping&, const DmaMapRequest&)> answer_;
};

Result<BusAddress> refuse_above_limit(const Mapping&, const DmaMapRequest& request) {
  return std::unexpected(make_error(Errc::out_of_range, "map", "", "above the limit " + std::to_string(request.dma_limit)));
}

TEST(DmaAllocatorOverBackends, PhysicalTriesOtherPagesThenGivesUpWithTheBackendsReason) {
  auto backend = std::make_shared<RecordingBackend>(true, refuse_above_limit);
  const DmaAllocator allocator = DmaAllocator::create(backend);
  auto buffer = allocator.allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_FALSE(buffer);
  EXPECT_EQ(buffer.error().code, Errc::out_of_range);
  EXPECT_EQ(backend->page_sizes, std::vector<std::uint64_t>(8, 4096)) << "eight tries of other ordinary pages";
  EXPECT_EQ(backend->mapped, 0u);
}

// A pool carves one mapped chunk into aligned slices with matching bus addresses, maps a
// new chunk only when the first is full, and a moved-from pool fails instead of crashing.
TEST(DmaPoolOverABackend, SlicesAreAlignedAndAMovedFromPoolFailsCleanly) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    static std::uint64_t next = 0x10000000;
    next += 0x100000;
    return BusAddress{next};
  });
  const DmaAllocator allocator = DmaAllocator::create(backend);
  auto pool = DmaPool::create(allocator, {}, 8192);
  ASSERT_TRUE(pool) << pool.error().message();
  auto a = pool->allocate(100);
  auto b = pool->allocate(200, 256);
  ASSERT_TRUE(a && b);
  EXPECT_EQ(pool->chunk_count(), 1u);
  EXPECT_EQ(b->bus_address().value % 256, 0u);
  EXPECT_EQ(b->bus_address().value - a->bus_address().value,
            static_cast<std::uint64_t>(b->data() - a->data())) << "CPU and bus offsets agree";
  auto big = pool->allocate(8000);
  ASSERT_TRUE(big);
  EXPECT_EQ(pool->chunk_count(), 2u) << "no room left in the first chunk";
  EXPECT_FALSE(pool->allocate(0));
  EXPECT_FALSE(pool->allocate(8193));
  EXPECT_FALSE(pool->allocate(64, 3));
  DmaPool moved = std::move(*pool);
  EXPECT_EQ(pool->chunk_count(), 0u);
  auto from_empty = pool->allocate(64);
  ASSERT_FALSE(from_empty);
  EXPECT_EQ(from_empty.error().code, Errc::invalid_argument);
  EXPECT_TRUE(moved.allocate(64));
}

TEST(DmaAllocatorOverBackends, TriesAsManyPiecesAsTheBackendSays) {
  for (const unsigned attempts : {1u, 3u, 20u}) {
    auto backend = std::make_shared<RecordingBackend>(true, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
      return std::unexpected(make_error(Errc::not_supported, "map", "", "not physically contiguous"));
    });
    backend->attempts = attempts;
    auto buffer = DmaAllocator::create(backend).allocate(8192, {.prefer = DmaBacking::pages});
    ASSERT_FALSE(buffer);
    EXPECT_EQ(buffer.error().code, Errc::not_supported);
    EXPECT_EQ(backend->page_sizes, std::vector<std::uint64_t>(attempts, 4096)) << attempts << " attempts";
  }
}

TEST(PhysicalBackend, AttemptsComeFromTheOptionsWithinOneTo64) {
  const std::pair<unsigned, unsigned> cases[] = {{0, 1}, {1, 1}, {5, 5}, {8, 8}, {64, 64}, {1000, 64}};
  for (auto [asked, used] : cases) {
    auto plan = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged, {.attempts = asked})
                    ->memory_plan(4096, DmaBacking::pages, {});
    ASSERT_TRUE(plan) << plan.error().message();
    ASSERT_EQ(plan->size(), 1u) << asked;
    EXPECT_EQ(plan->front().pieces, used) << asked;
  }
  auto plan = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged)->memory_plan(4096, DmaBacking::pages, {});
  ASSERT_TRUE(plan);
  EXPECT_EQ(plan->front().pieces, 8u) << "the default";
}

// Where each backend looks for a buffer's memory: a table of sizes, preferences, DMA
// limits and bus alignments against the steps of each plan.
struct PlanCase {
  const char* name;
  std::size_t size;
  DmaBacking prefer;
  std::uint64_t dma_limit;
  std::uint64_t bus_alignment;
  std::vector<DmaBacking> iommu;     // the interface's plan (behind an IOMMU)
  std::vector<DmaBacking> physical;  // the physical backend's; empty: not_supported
};

TEST(DmaMemoryPlan, EachBackendLooksWhereItsAddressesCanBeMet) {
  using enum DmaBacking;
  constexpr std::uint64_t kNoLimit = ~std::uint64_t{0};
  constexpr std::size_t kMiB = 1 << 20;
  const std::vector<PlanCase> cases = {
      {"a page, pages asked", 4096, pages, kNoLimit, 0, {pages}, {pages}},
      {"a page, 2 MiB preferred: too small for huge pages", 4096, huge_2m, kNoLimit, 0, {pages}, {pages}},
      {"64 KiB preferring 2 MiB: one huge page holds it", 64 << 10, huge_2m, kNoLimit, 0, {pages}, {huge_2m}},
      {"64 KiB preferring 1 GiB: the smallest that holds it", 64 << 10, huge_1g, kNoLimit, 0, {pages}, {huge_2m}},
      {"64 KiB preferring pages: as asked", 64 << 10, pages, kNoLimit, 0, {pages}, {pages}},
      {"4 MiB preferring 1 GiB: only 1 GiB holds it", 4 * kMiB, huge_1g, kNoLimit, 0, {huge_2m, pages}, {huge_1g}},
      {"1 MiB fills half a 2 MiB page", 1 * kMiB, huge_2m, kNoLimit, 0, {huge_2m, pages}, {huge_2m}},
      {"3 MiB: no 2 MiB page holds it", 3 * kMiB, huge_2m, kNoLimit, 0, {huge_2m, pages}, {huge_2m}},
      {"64 MiB preferring pages", 64 * kMiB, pages, kNoLimit, 0, {pages}, {pages}},
      {"512 MiB preferring 1 GiB", 512 * kMiB, huge_1g, kNoLimit, 0, {huge_1g, huge_2m, pages}, {huge_1g}},
      {"1 MiB preferring 1 GiB", 1 * kMiB, huge_1g, kNoLimit, 0, {huge_2m, pages}, {huge_2m}},
      {"a page below a limit: 2 MiB last", 4096, pages, dma_mask_limit(32), 0, {pages}, {pages, huge_2m}},
      {"1 MiB below a limit", 1 * kMiB, huge_2m, dma_mask_limit(32), 0, {huge_2m, pages}, {huge_2m}},
      {"4 MiB below a limit: no 2 MiB page holds it", 4 * kMiB, pages, dma_mask_limit(32), 0, {pages}, {pages}},
      {"4 KiB alignment is any page's", 4096, pages, kNoLimit, 4096, {pages}, {pages}},
      {"64 KiB alignment, pages only", 4096, pages, kNoLimit, 64 << 10, {pages}, {}},
      {"64 KiB alignment, 2 MiB allowed", 4096, huge_2m, kNoLimit, 64 << 10, {pages}, {huge_2m}},
      {"64 KiB alignment, 1 GiB allowed", 4096, huge_1g, kNoLimit, 64 << 10, {pages}, {huge_2m, huge_1g}},
      {"4 MiB alignment, 2 MiB allowed", 4096, huge_2m, kNoLimit, 4 << 20, {pages}, {}},
      {"4 MiB alignment, 1 GiB allowed", 4096, huge_1g, kNoLimit, 4 << 20, {pages}, {huge_1g}},
  };
  const RecordingBackend iommu(false, refuse_above_limit);
  auto physical = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged);
  // A backend of a user's own whose bus addresses are physical gets the physical policy.
  const RecordingBackend own_physical(true, refuse_above_limit);
  const auto backings = [](const std::vector<DmaMemoryStep>& steps) {
    std::vector<DmaBacking> out;
    for (const DmaMemoryStep& step : steps) out.push_back(step.backing);
    return out;
  };
  for (const PlanCase& c : cases) {
    SCOPED_TRACE(c.name);
    const DmaMapRequest request{.dma_limit = c.dma_limit, .bus_alignment = c.bus_alignment};
    auto behind_iommu = iommu.memory_plan(c.size, c.prefer, request);
    ASSERT_TRUE(behind_iommu) << behind_iommu.error().message();
    EXPECT_EQ(backings(*behind_iommu), c.iommu);
    for (const DmaMemoryStep& step : *behind_iommu) EXPECT_EQ(step.pieces, 1u) << "other memory lands at the same IOVA";
    auto without_iommu = physical->memory_plan(c.size, c.prefer, request);
    auto own = own_physical.memory_plan(c.size, c.prefer, request);
    ASSERT_EQ(own.has_value(), without_iommu.has_value());
    if (own) {
      EXPECT_EQ(backings(*own), backings(*without_iommu)) << "a user's physical backend plans alike";
    }
    if (c.physical.empty()) {
      ASSERT_FALSE(without_iommu);
      EXPECT_EQ(without_iommu.error().code, Errc::not_supported);
      EXPECT_NE(without_iommu.error().hint.find("huge"), std::string::npos) << without_iommu.error().message();
    } else {
      ASSERT_TRUE(without_iommu) << without_iommu.error().message();
      EXPECT_EQ(backings(*without_iommu), c.physical);
      for (const DmaMemoryStep& step : *without_iommu) EXPECT_EQ(step.pieces, 8u) << "the default attempts";
    }
  }
}

// A plan that names nothing fails the allocation with not_supported, taking no memory.
TEST(DmaAllocatorOverBackends, AnEmptyPlanIsNotSupported) {
  auto backend = std::make_shared<RecordingBackend>(false, refuse_above_limit);
  backend->empty_plan = true;
  auto buffer = DmaAllocator::create(backend).allocate(4096);
  ASSERT_FALSE(buffer);
  EXPECT_EQ(buffer.error().code, Errc::not_supported) << buffer.error().message();
  EXPECT_TRUE(backend->page_sizes.empty());
}

// The locked memory of this process, from /proc/self/status (VmLck, in kB).
std::uint64_t locked_kib() {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.starts_with("VmLck:")) return std::strtoull(line.c_str() + 6, nullptr, 10);
  }
  return ~std::uint64_t{0};
}

// Refused pages are held by the allocator while it tries others: they must not stay
// locked, or a few tries use up RLIMIT_MEMLOCK and "not contiguous" turns into "raise the
// limit".
TEST(PhysicalBackend, ARefusedMapLeavesThePagesUnlocked) {
  FakePagemap fake(4);
  ASSERT_TRUE(fake.memory.valid());
  auto backend = make_physical_dma_backend(DeviceMayReachAllMemory::acknowledged, {.pagemap_path = fake.path, .lock = true});
  const std::uint64_t before = locked_kib();
  ASSERT_NE(before, ~std::uint64_t{0}) << "no VmLck in /proc/self/status";
  fake.write_entries({kPresent | 5, kPresent | 9, kPresent | 10, kPresent | 11});
  auto scattered = backend->map(fake.memory, {});
  ASSERT_FALSE(scattered);
  EXPECT_EQ(scattered.error().code, Errc::not_supported);
  EXPECT_EQ(locked_kib(), before) << "refused pages left locked";
  auto above = backend->map(fake.memory, {.dma_limit = 0xfff});
  ASSERT_FALSE(above);
  EXPECT_EQ(locked_kib(), before) << "refused pages left locked";
  fake.write_entries({kPresent | 8, kPresent | 9, kPresent | 10, kPresent | 11});
  auto mapped = backend->map(fake.memory, {});  // 16 KiB: within any RLIMIT_MEMLOCK
  ASSERT_TRUE(mapped) << mapped.error().message();
  EXPECT_EQ(locked_kib(), before + 16) << "a mapped buffer is locked";
  EXPECT_TRUE(backend->unmap(*mapped, fake.memory));
}

TEST(DmaAllocatorOverBackends, PhysicalWithALimitEndsOnAHugePageWhereOneIsReserved) {
  auto backend = std::make_shared<RecordingBackend>(true, [](const Mapping& memory, const DmaMapRequest& request) -> Result<BusAddress> {
    if (request.page_size == 4096) return refuse_above_limit(memory, request);
    return BusAddress{0x200000};
  });
  const DmaAllocator allocator = DmaAllocator::create(backend);
  auto buffer = allocator.allocate(4096, {.dma_limit = dma_mask_limit(28), .prefer = DmaBacking::pages});
  if (!buffer) {
    // No 2 MiB pages reserved on this machine: the last resort was tried or could not be.
    EXPECT_EQ(buffer.error().code, Errc::out_of_range) << buffer.error().message();
    return;
  }
  EXPECT_EQ(buffer->backing(), DmaBacking::huge_2m);
  EXPECT_EQ(buffer->physical_address(), 0x200000u);
  EXPECT_EQ(backend->page_sizes.back(), 2u << 20);
}

TEST(DmaAllocatorOverBackends, PhysicalNeverPopulatesPagesThatCannotBeContiguous) {
  auto backend = std::make_shared<RecordingBackend>(true, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{1ull << 30};
  });
  const DmaAllocator allocator = DmaAllocator::create(backend);
  // 64 MiB preferring 2 MiB pages: no 2 MiB page holds it, and ordinary pages are never
  // tried for it (they were not asked for).
  auto buffer = allocator.allocate(64 << 20, {.prefer = DmaBacking::huge_2m});
  if (buffer) {
    EXPECT_EQ(buffer->backing(), DmaBacking::huge_2m);
  }
  for (const std::uint64_t page : backend->page_sizes) EXPECT_NE(page, 4096u);
}

TEST(DmaAllocatorOverBackends, IommuBackendFallsBackToSmallerPagesAsBefore) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x10000};
  });
  const DmaAllocator allocator = DmaAllocator::create(backend);
  auto buffer = allocator.allocate(3 << 20, {.prefer = DmaBacking::huge_2m});
  ASSERT_TRUE(buffer) << buffer.error().message();
  EXPECT_EQ(buffer->bus_address().value, 0x10000u);
  EXPECT_FALSE(buffer->physical_address()) << "behind an IOMMU the device never sees physical addresses";
  EXPECT_EQ(allocator.mapped_bytes(), buffer->data() ? backend->mapped : 0u);
  EXPECT_TRUE(buffer->release());
  EXPECT_EQ(backend->unmaps, 1);
  EXPECT_EQ(buffer->backend_name(), "released");
}

TEST(DmaAllocatorOverBackends, BusAlignmentReachesTheBackendOrIsRefusedUpFront) {
  auto iommu = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x100000};
  });
  const DmaAllocator behind_iommu = DmaAllocator::create(iommu);
  // Behind an IOMMU, ordinary pages at any alignment: the IOVA is aligned, not the memory.
  ASSERT_TRUE(behind_iommu.allocate(4096, {.prefer = DmaBacking::pages, .bus_alignment = 64 << 10}));
  EXPECT_EQ(iommu->page_sizes, std::vector<std::uint64_t>{4096});
  EXPECT_EQ(iommu->bus_alignments, std::vector<std::uint64_t>{64 << 10});
  ASSERT_TRUE(behind_iommu.allocate(4096, {.prefer = DmaBacking::pages}));
  EXPECT_EQ(iommu->bus_alignments.back(), 0u) << "0: the backing's page";
  // Hostile alignments are refused before any memory is taken.
  for (std::uint64_t alignment : {3ull, 4097ull, 2ull << 30, 1ull << 63, ~0ull}) {
    auto refused = behind_iommu.allocate(4096, {.bus_alignment = alignment});
    ASSERT_FALSE(refused) << alignment;
    EXPECT_EQ(refused.error().code, Errc::invalid_argument) << alignment;
  }
  EXPECT_EQ(iommu->page_sizes.size(), 2u);

  // Physical addresses: only pages as large as the alignment can give it.
  auto physical = std::make_shared<RecordingBackend>(true, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x40000000};
  });
  const DmaAllocator without_iommu = DmaAllocator::create(physical);
  auto pages_only = without_iommu.allocate(4096, {.prefer = DmaBacking::pages, .bus_alignment = 64 << 10});
  ASSERT_FALSE(pages_only);
  EXPECT_EQ(pages_only.error().code, Errc::not_supported);
  EXPECT_NE(pages_only.error().hint.find("huge pages"), std::string::npos) << pages_only.error().message();
  EXPECT_TRUE(physical->page_sizes.empty()) << "no memory taken for a request that cannot be met";
  auto huge = without_iommu.allocate(4096, {.prefer = DmaBacking::huge_2m, .bus_alignment = 64 << 10});
  for (const std::uint64_t page : physical->page_sizes) EXPECT_NE(page, 4096u) << "4 KiB pages were tried";
  if (huge) {
    EXPECT_EQ(huge->backing(), DmaBacking::huge_2m);  // where 2 MiB pages are reserved
  }
  // Small alignments need nothing special.
  ASSERT_TRUE(without_iommu.allocate(4096, {.prefer = DmaBacking::pages, .bus_alignment = 4096}));
}

TEST(DevicePages, ListsEachPageARangeTouchesFromItsOwnStart) {
  std::array<std::uint64_t, 8> out{};
  // A 16 KiB buffer at 0x10000: 100 bytes from offset 0x0ff0 cross into the second page.
  auto count = device_pages(BusAddress{0x10000}, 0x4000, 0x0ff0, 100, 4096, out);
  ASSERT_TRUE(count) << count.error().message();
  EXPECT_EQ(*count, 2u);
  EXPECT_EQ(out[0], 0x10ff0u);
  EXPECT_EQ(out[1], 0x11000u);
  // The whole buffer: four pages from its start; with 8 KiB device pages, two.
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 0x4000, 4096, out).value(), 4u);
  EXPECT_EQ(out[3], 0x13000u);
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 0x4000, 8192, out).value(), 2u);
  EXPECT_EQ(out[1], 0x12000u);
  // One byte, the last one.
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0x3fff, 1, 4096, out).value(), 1u);
  EXPECT_EQ(out[0], 0x13fffu);
  // A buffer whose bus address is not page-aligned (a pool slice): pages are the device's.
  EXPECT_EQ(device_pages(BusAddress{0x20040}, 0x1000, 0, 0x1000, 4096, out).value(), 2u);
  EXPECT_EQ(out[0], 0x20040u);
  EXPECT_EQ(out[1], 0x21000u);
}

TEST(DevicePages, RefusesWhatIsNotInsideOrCannotBeListed) {
  std::array<std::uint64_t, 2> out{};
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 0x4000, 4096, out).error().code, Errc::out_of_range)
      << "4 entries needed, room for 2";
  EXPECT_NE(device_pages(BusAddress{0x10000}, 0x4000, 0, 0x4000, 4096, out).error().hint.find("4 entries"),
            std::string::npos);
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0x4000, 1, 4096, out).error().code, Errc::out_of_range);
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 1, ~std::size_t{0}, 4096, out).error().code,
            Errc::out_of_range);
  EXPECT_EQ(device_pages(BusAddress{~0ull - 10}, 0x4000, 0, 100, 4096, out).error().code, Errc::out_of_range);
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 0, 4096, out).error().code, Errc::invalid_argument);
  for (std::uint64_t page : {0ull, 256ull, 3000ull, 4097ull, 2ull << 30}) {
    EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 1, page, out).error().code, Errc::invalid_argument) << page;
  }
  EXPECT_EQ(device_pages(BusAddress{0x10000}, 0x4000, 0, 1, 4096, {}).error().code, Errc::out_of_range);
}

TEST(DmaAllocatorOverBackends, BufferKeepsItsBackendAliveAfterTheAllocatorGoes) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x10000};
  });
  std::weak_ptr<RecordingBackend> watch = backend;
  std::optional<DmaBuffer> buffer;
  {
    const DmaAllocator allocator = DmaAllocator::create(std::move(backend));
    auto made = allocator.allocate(4096, {.prefer = DmaBacking::pages});
    ASSERT_TRUE(made);
    buffer.emplace(std::move(*made));
  }
  ASSERT_FALSE(watch.expired()) << "the buffer holds its backend";
  EXPECT_EQ(watch.lock()->unmaps, 0);
  buffer.reset();
  EXPECT_TRUE(watch.expired()) << "and lets it go with its unmap";
}

// An empty buffer is empty whichever way it got so (default-constructed, moved from, moved
// over, released): no memory, size 0, bus address 0, an empty span. A released or moved-from
// buffer once kept its size, so bytes() was a span of that many bytes at nullptr.
TEST(DmaAllocatorOverBackends, EveryEmptyBufferHasSizeZeroAndNoBusAddress) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x10000};
  });
  const DmaAllocator allocator = DmaAllocator::create(std::move(backend));
  const auto expect_empty = [](const DmaBuffer& buffer, const char* how) {
    SCOPED_TRACE(how);
    EXPECT_FALSE(buffer.valid());
    EXPECT_EQ(buffer.data(), nullptr);
    EXPECT_EQ(buffer.size(), 0u);
    EXPECT_TRUE(buffer.bytes().empty());
    EXPECT_EQ(buffer.bus_address().value, 0u);
    EXPECT_EQ(buffer.backing(), DmaBacking::pages);
  };
  expect_empty(DmaBuffer(), "default-constructed");
  auto released = allocator.allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(released);
  ASSERT_TRUE(released->release());
  expect_empty(*released, "released");
  auto moved_from = allocator.allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(moved_from);
  const DmaBuffer taker(std::move(*moved_from));
  EXPECT_EQ(taker.size(), 4096u);
  EXPECT_EQ(taker.bus_address().value, 0x10000u);
  expect_empty(*moved_from, "moved from (construction)");
  auto assigned_from = allocator.allocate(4096, {.prefer = DmaBacking::pages});
  ASSERT_TRUE(assigned_from);
  DmaBuffer assignee;
  assignee = std::move(*assigned_from);
  expect_empty(*assigned_from, "moved from (assignment)");
}

// --- /proc/iomem ---

constexpr const char* kIomem =
    "00000000-00000fff : Reserved\n"
    "00001000-0009fbff : System RAM\n"
    "00100000-7ffdffff : System RAM\n"
    "  05000000-05ffffff : Kernel code\n"
    "b0000000-bfffffff : PCI MMCONFIG 0000 [bus 00-ff]\n"
    "c0000000-febfffff : PCI Bus 0000:00\n"
    "  fe600000-fe7fffff : PCI Bus 0000:01\n"
    "    fe600000-fe603fff : 0000:01:00.0\n"
    "      fe600000-fe603fff : nvme\n"
    "  fe800000-fe8fffff : 0000:00:03.0\n"
    "  fe900000-fe9fffff : 0000:00:06.0\n"
    "    fe900000-fe9fffff : vfio-pci\n"
    "100000000-17fffffff : System RAM\n";

TEST(Iomem, ParsesTheTreeAndNamesOwners) {
  auto tree = parse_iomem(kIomem);
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_FALSE(tree->addresses_hidden);
  ASSERT_EQ(tree->ranges.size(), 6u);
  EXPECT_EQ(tree->ranges[5].start, 0x100000000u) << "addresses wider than 32 bits";

  const IomemOwner nvme = iomem_owner(*tree, 0xfe600010);
  EXPECT_EQ(nvme.device, (Bdf{0, 1, 0, 0}));
  EXPECT_EQ(nvme.claimed, "nvme");
  EXPECT_EQ(nvme.description, "0000:01:00.0 (claimed by nvme)");
  const IomemOwner free_edu = iomem_owner(*tree, 0xfe800000);
  EXPECT_EQ(free_edu.device, (Bdf{0, 0, 3, 0}));
  EXPECT_FALSE(free_edu.claimed);
  EXPECT_EQ(iomem_owner(*tree, 0xfe9fffff).claimed, "vfio-pci");
  const IomemOwner ram = iomem_owner(*tree, 0x05000010);
  EXPECT_TRUE(ram.ram);
  EXPECT_EQ(ram.description, "Kernel code in System RAM");
  EXPECT_EQ(iomem_owner(*tree, 0xfec00000).description, "no range of the kernel's resource tree");
  EXPECT_EQ(iomem_ranges_at(*tree, 0xfe600000).size(), 4u);
  EXPECT_FALSE(iomem_owner(*tree, 0xc0000000).device) << "a bus is not a device";
}

TEST(Iomem, NonRootSeesZerosAndIsToldSo) {
  auto tree = parse_iomem(
      "00000000-00000000 : Reserved\n"
      "00000000-00000000 : System RAM\n"
      "  00000000-00000000 : Kernel code\n");
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_TRUE(tree->addresses_hidden);
  EXPECT_TRUE(iomem_ranges_at(*tree, 0).empty()) << "zeros are not addresses";
  EXPECT_NE(iomem_owner(*tree, 0).description.find("only to root"), std::string::npos);
}

TEST(Iomem, HostileTextIsRefusedNamingTheLine) {
  struct Case {
    const char* text;
    const char* reason;
  };
  const std::vector<Case> cases = {
      {"zzzz-ffff : RAM\n", "not hex"},
      {"00001000-00000fff : Backwards\n", "ends before it starts"},
      {"00000000-0000ffff : A\n   00000000-00000fff : odd\n", "odd indentation"},
      {"  00000000-00000fff : orphan\n", "indented past its parent"},
      {"00000000-0000ffff : A\n  00010000-0001ffff : outside\n", "outside its parent"},
      {"00000000-0000ffff\n", "not START-END : NAME"},
      {"00000000-00000000000000000 : too wide\n", "not hex"},
      {"00000000-0000ffff : \x1b[31mred\n  x-y : \x1b[2J\n", "not hex"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto tree = parse_iomem(c.text);
    ASSERT_FALSE(tree);
    EXPECT_EQ(tree.error().code, Errc::malformed);
    EXPECT_NE(tree.error().message().find(c.reason), std::string::npos) << tree.error().message();
    EXPECT_EQ(tree.error().message().find('\x1b'), std::string::npos) << "escapes are printed, not sent";
  }
  // Nested deeper than any kernel nests: bounded.
  std::string deep;
  for (int depth = 0; depth < 20; ++depth) deep += std::string(2 * depth, ' ') + "00000000-ffffffff : level\n";
  auto tree = parse_iomem(deep);
  ASSERT_FALSE(tree);
  EXPECT_NE(tree.error().message().find("nested too deep"), std::string::npos);
}

TEST(Iomem, ThisMachinesTableParses) {
  auto tree = read_iomem();
  ASSERT_TRUE(tree) << tree.error().message();
  EXPECT_FALSE(tree->ranges.empty());
  // Root with CAP_SYS_ADMIN in the initial namespace sees addresses; anyone else (a
  // sandbox's user namespace included) sees zeros, and the tree says so.
  bool any_address = false;
  for (const IomemRange& range : tree->ranges) any_address = any_address || range.last != 0;
  EXPECT_EQ(tree->addresses_hidden, !any_address);
}

// --- UIO in a fake tree ---

struct FakeUio {
  testing::FakeSysfs sysfs = std::move(*testing::FakeSysfs::create());
  Bdf bdf{0, 0, 3, 0};
  std::string dev = temp_dir();
  UioPaths paths() const { return {sysfs.paths(), dev}; }
  std::string uio_dir() const { return sysfs.paths().device_dir(bdf) + "/uio/uio0"; }

  explicit FakeUio(std::optional<std::string> driver = "uio_pci_generic", std::uint8_t pin = 1) {
    testing::FakeDevice device = testing::qemu_edu(bdf);
    device.interrupt_pin = pin;
    device.driver = driver;
    EXPECT_TRUE(sysfs.add_device(device));
    if (driver == "uio_pci_generic") {
      fs::create_directories(uio_dir());
      std::ofstream(uio_dir() + "/event") << "7\n";
      std::ofstream(dev + "/uio0").flush();
    }
  }
  // What the kernel would return on the next reads of /dev/uio0: 32-bit event totals.
  void queue_counts(const std::vector<std::uint32_t>& totals) const {
    std::ofstream out(dev + "/uio0", std::ios::binary | std::ios::app);
    out.write(reinterpret_cast<const char*>(totals.data()), static_cast<std::streamsize>(totals.size() * 4));
  }
  std::uint16_t command() const {
    auto config = ConfigSpace::open(sysfs.paths(), bdf);
    return config ? *config->read16(cfg::kCommand) : 0xffff;
  }
};

TEST(Uio, OpensCountsInterruptsAndRearmsThroughTheCommandRegister) {
  FakeUio fake;
  auto device = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ(device->uio_number(), 0);
  EXPECT_EQ(device->backend_name(), "UIO (uio_pci_generic)");
  EXPECT_EQ(*device->vector_count(IrqKind::intx), 1u);
  EXPECT_EQ(*device->vector_count(IrqKind::msi), 0u);
  EXPECT_EQ(*device->vector_count(IrqKind::msix), 0u);

  ASSERT_TRUE(device->enable_bus_master());
  EXPECT_EQ(fake.command() & (cfg::kCommandBusMaster | cfg::kCommandMemorySpace),
            cfg::kCommandBusMaster | cfg::kCommandMemorySpace);
  auto irq = device->enable_intx();
  ASSERT_TRUE(irq) << irq.error().message();
  EXPECT_EQ(fake.command() & cfg::kCommandInterruptDisable, 0) << "enabled: Interrupt Disable clear";
  auto second = device->enable_interrupts(IrqKind::intx);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code, Errc::busy);

  // The sysfs event count was 7 at enable: totals of 9, then 9 + 1 are 2 and 1 new ones;
  // a total that wrapped past 2^32 still counts right.
  fake.queue_counts({9, 10, 0xffffffff, 1});
  EXPECT_EQ(*irq->wait(0, std::chrono::milliseconds(100)), 2u);
  EXPECT_EQ(*irq->consume(0), 1u);
  EXPECT_EQ(*irq->consume(0), 0xffffffffu - 10);
  EXPECT_EQ(*irq->consume(0), 2u) << "0xffffffff -> 1 is two interrupts";
  EXPECT_EQ(*irq->fd(0), *irq->fd(0));
  EXPECT_FALSE(irq->fd(1)) << "INTx has one vector";

  // The kernel's handler set Interrupt Disable; rearm clears it, touching nothing else.
  auto config = ConfigSpace::open(fake.sysfs.paths(), fake.bdf, ConfigSpace::Mode::read_write);
  ASSERT_TRUE(config->write16(cfg::kCommand, static_cast<std::uint16_t>(fake.command() | cfg::kCommandInterruptDisable)));
  const std::uint16_t before = fake.command();
  ASSERT_TRUE(irq->rearm(0));
  EXPECT_EQ(fake.command(), before & ~cfg::kCommandInterruptDisable);
  // mask/unmask: the same bit, on demand; twice is harmless; vector 1 does not exist.
  ASSERT_TRUE(irq->mask(0));
  EXPECT_EQ(fake.command(), before | cfg::kCommandInterruptDisable);
  ASSERT_TRUE(irq->mask(0));
  ASSERT_TRUE(irq->unmask(0));
  EXPECT_EQ(fake.command(), before & ~cfg::kCommandInterruptDisable);
  EXPECT_EQ(irq->mask(1).error().code, Errc::out_of_range);
  EXPECT_EQ(irq->unmask(1).error().code, Errc::out_of_range);
  auto more = irq->add_vectors(1);
  ASSERT_FALSE(more);
  EXPECT_EQ(more.error().code, Errc::not_supported) << "INTx has one vector";
  ASSERT_TRUE(irq->disable());
  EXPECT_TRUE(fake.command() & cfg::kCommandInterruptDisable) << "disabled: masked";
  EXPECT_TRUE(device->enable_intx()) << "INTx is free again";
}

TEST(Uio, RefusalsSayWhatToDo) {
  FakeUio unbound(std::nullopt);
  auto device = UioDevice::open(unbound.bdf, {}, unbound.paths());
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::not_supported);
  EXPECT_NE(device.error().message().find("uio_pci_generic"), std::string::npos) << device.error().message();

  FakeUio other_driver("nvme");
  device = UioDevice::open(other_driver.bdf, {}, other_driver.paths());
  ASSERT_FALSE(device);
  EXPECT_NE(device.error().message().find("bound to nvme"), std::string::npos) << device.error().message();

  auto missing = UioDevice::open(Bdf{0, 9, 0, 0}, {}, unbound.paths());
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);

  FakeUio fake;
  fs::create_directories(fake.sysfs.paths().device_dir(fake.bdf) + "/uio/uio1");
  auto two = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_FALSE(two);
  EXPECT_EQ(two.error().code, Errc::malformed);

  FakeUio no_node;
  fs::remove(no_node.dev + "/uio0");
  auto gone = UioDevice::open(no_node.bdf, {}, no_node.paths());
  ASSERT_FALSE(gone);
  EXPECT_EQ(gone.error().code, Errc::not_found);
}

// A second UioDevice of the same device would clear Bus Master Enable under the first when
// it closes (uio_pci_generic does so on every release) and its interrupt handle would mask
// the first's INTx: refused with busy, as VFIO refuses a second open, until the first goes.
TEST(Uio, ASecondOpenOfTheSameDeviceIsBusyUntilTheFirstCloses) {
  FakeUio fake;
  auto first = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_TRUE(first) << first.error().message();
  ASSERT_TRUE(first->enable_bus_master());
  // uio_pci_generic clears Bus Master Enable on every close of the node: a refused open
  // must never have opened it (watched through inotify).
  const UniqueFd watch(::inotify_init1(IN_NONBLOCK | IN_CLOEXEC));
  ASSERT_TRUE(watch.valid());
  ASSERT_GE(::inotify_add_watch(watch.get(), (fake.dev + "/uio0").c_str(), IN_OPEN), 0);
  auto second = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_FALSE(second);
  char events[256];
  EXPECT_LT(::read(watch.get(), events, sizeof events), 0) << "the refused open opened /dev/uio0";
  EXPECT_EQ(second.error().code, Errc::busy) << second.error().message();
  EXPECT_NE(second.error().message().find("another UioDevice"), std::string::npos) << second.error().message();
  // In another process too (the lock is the node's, not this process's).
  const int status = pcie::cli::run_in_child([&] {
    auto elsewhere = UioDevice::open(fake.bdf, {}, fake.paths());
    return !elsewhere && elsewhere.error().code == Errc::busy ? 0 : 1;
  });
  EXPECT_EQ(status, 0) << "another process opened the held device";
  EXPECT_NE(fake.command() & cfg::kCommandBusMaster, 0) << "the refused opens left bus mastering alone";
  UioDevice moved = std::move(*first);  // the lock moves with the device
  EXPECT_EQ(UioDevice::open(fake.bdf, {}, fake.paths()).error().code, Errc::busy);
  moved = UioDevice();
  auto again = UioDevice::open(fake.bdf, {}, fake.paths());
  EXPECT_TRUE(again) << "free once the first is gone: " << again.error().message();
}

TEST(Uio, NoPinNoInterruptsAndNoMsiEver) {
  FakeUio fake("uio_pci_generic", 0);
  auto device = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_TRUE(device);
  EXPECT_EQ(*device->vector_count(IrqKind::intx), 0u);
  auto intx = device->enable_intx();
  ASSERT_FALSE(intx);
  EXPECT_EQ(intx.error().code, Errc::out_of_range);
  auto msi = device->enable_interrupts(IrqKind::msi);
  ASSERT_FALSE(msi);
  EXPECT_EQ(msi.error().code, Errc::not_supported);
  EXPECT_NE(msi.error().hint.find("vfio-pci"), std::string::npos);
}

TEST(Uio, DmaNeedsTheAcknowledgement) {
  FakeUio fake;
  {
    auto without = UioDevice::open(fake.bdf, {}, fake.paths());
    ASSERT_TRUE(without);
    auto refused = without->dma_allocator();
    ASSERT_FALSE(refused);
    EXPECT_EQ(refused.error().code, Errc::not_supported);
    EXPECT_NE(refused.error().message().find("all of memory"), std::string::npos);
  }

  auto with = UioDevice::open(fake.bdf, {.dma = DeviceMayReachAllMemory::acknowledged}, fake.paths());
  ASSERT_TRUE(with);
  auto allocator = with->dma_allocator();
  ASSERT_TRUE(allocator) << allocator.error().message();
  EXPECT_TRUE(allocator->backend().bus_addresses_are_physical());
}

// Default-constructed, moved-from and moved-over UIO handles. A moved-from UioDevice read
// its bdf() through a null state before.
TEST(Uio, EmptyMovedFromAndMovedOverHandlesFailCleanly) {
  FakeUio fake;
  auto opened = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_TRUE(opened);
  UioDevice device = testing::expect_moves_leave_empty(*opened, [&](UioDevice& handle) {
    EXPECT_EQ(handle.bdf(), fake.bdf);
    EXPECT_EQ(handle.uio_number(), 0);
  });
  EXPECT_EQ(opened->uio_number(), -1);
  auto intx_of_empty = opened->enable_intx();
  ASSERT_FALSE(intx_of_empty);
  testing::expect_invalid_argument(intx_of_empty.error(), "enable_intx");

  auto intx = device.enable_intx();
  ASSERT_TRUE(intx) << intx.error().message();
  UioInterrupts last = testing::expect_moves_leave_empty(*intx, [&](UioInterrupts& handle) {
    EXPECT_EQ(fake.command() & cfg::kCommandInterruptDisable, 0) << "moving did not disable INTx";
    EXPECT_TRUE(handle.mask(0));
    EXPECT_NE(fake.command() & cfg::kCommandInterruptDisable, 0);
    EXPECT_TRUE(handle.unmask(0));
  });
  ASSERT_TRUE(last.disable());
  testing::expect_empty_interrupts(last);
}

TEST(Uio, BarThroughTheSysfsPath) {
  FakeUio fake;
  auto device = UioDevice::open(fake.bdf, {}, fake.paths());
  ASSERT_TRUE(device);
  const Device& generic = *device;  // the driver API
  auto bar0 = generic.open_bar(0);
  ASSERT_TRUE(bar0) << bar0.error().message();
  ASSERT_TRUE((*bar0)->write(Width::bits32, 0x10, 0xcafef00d));
  auto bytes = fake.sysfs.read_device_bytes(fake.bdf, "resource0", 0x10, 4);
  ASSERT_TRUE(bytes);
  EXPECT_EQ((*bytes)[0], 0x0d);
  EXPECT_FALSE(generic.open_bar(1)) << "no BAR1";
}

// --- /dev/mem windows over a plain file ---

TEST(PhysicalWindow, MapsAnUnalignedRangeWithCheckedAccessors) {
  const std::string dir = temp_dir();
  const std::string dev_mem = dir + "/mem";
  {
    std::ofstream out(dev_mem, std::ios::binary);
    std::vector<std::uint8_t> bytes(3 * 4096);
    for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = static_cast<std::uint8_t>(i * 3);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  auto window = PhysicalWindow::map(0x1ff8, 16, {.dev_mem = dev_mem});  // straddles a page boundary
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_EQ(window->size(), 16u);
  EXPECT_EQ(window->physical_address(), 0x1ff8u);
  EXPECT_EQ(window->memory_type(), MemoryType::uncached);
  EXPECT_EQ(*window->read(Width::bits8, 0), static_cast<std::uint8_t>(0x1ff8 * 3));
  ASSERT_TRUE(window->write(Width::bits64, 8, 0x1122334455667788));
  EXPECT_EQ(window->mmio().read<std::uint64_t>(8), 0x1122334455667788u);
  EXPECT_FALSE(window->read(Width::bits32, 14)) << "misaligned";
  EXPECT_FALSE(window->read(Width::bits32, 16)) << "past the end";

  auto read_only = PhysicalWindow::map(0, 4, {.writable = false, .dev_mem = dev_mem});
  ASSERT_TRUE(read_only);
  EXPECT_EQ(read_only->write(Width::bits32, 0, 1).error().code, Errc::permission_denied);
}

TEST(PhysicalWindow, EmptyMovedFromAndMovedOverWindowsFailCleanly) {
  const std::string dev_mem = temp_dir() + "/mem";
  std::ofstream(dev_mem, std::ios::binary) << std::string(3 * 4096, '\x11');
  auto window = PhysicalWindow::map(0x1ff8, 16, {.dev_mem = dev_mem});  // a page offset of 0xff8
  ASSERT_TRUE(window) << window.error().message();
  testing::expect_moves_leave_empty(*window, [](PhysicalWindow& handle) {
    EXPECT_EQ(handle.read(Width::bits32, 0), 0x11111111u);
    EXPECT_EQ(handle.read(Width::bits32, 12), 0x11111111u);
  });
  EXPECT_EQ(window->mmio().size(), 0u) << "an empty window's view is empty too";
  EXPECT_EQ(window->physical_address(), 0u) << "an empty window names no physical address";
}

TEST(PhysicalWindow, HostileRangesAreRefusedBeforeMapping) {
  EXPECT_EQ(PhysicalWindow::map(0x1000, 0).error().code, Errc::invalid_argument);
  EXPECT_EQ(PhysicalWindow::map(~std::uint64_t{0} - 10, 100).error().code, Errc::invalid_argument);
  EXPECT_FALSE(PhysicalWindow::map(~std::uint64_t{0} - 4095, 4096)) << "past what a file offset holds";
  auto missing = PhysicalWindow::map(0, 4, {.dev_mem = temp_dir() + "/none"});
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_NE(missing.error().hint.find("CONFIG_DEVMEM"), std::string::npos);
}

// --- wait_any across backends ---

// An interrupt source of the test's own on an eventfd: the interface is all wait_any uses.
class FakeInterrupts final : public Interrupts {
 public:
  FakeInterrupts() : fd_(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}
  ~FakeInterrupts() override { ::close(fd_); }
  void fire() const {
    const std::uint64_t one = 1;
    EXPECT_EQ(::write(fd_, &one, sizeof one), 8);
  }
  unsigned count() const override { return 1; }
  IrqKind kind() const override { return IrqKind::msi; }
  const std::string& name() const override { return name_; }
  Result<int> fd(unsigned vector) const override {
    if (vector != 0) return std::unexpected(make_error(Errc::out_of_range, "fd", name_, "one vector"));
    return fd_;
  }
  Result<std::uint64_t> consume(unsigned) const override {
    std::uint64_t count = 0;
    return ::read(fd_, &count, sizeof count) == 8 ? count : 0;
  }
  Result<std::uint64_t> wait(unsigned, std::chrono::milliseconds) const override { return consume(0); }
  Result<void> rearm(unsigned) const override { return {}; }
  Result<void> disable() override { return {}; }

 private:
  int fd_;
  std::string name_ = "fake";
};

// A backend of the user's own that has no per-vector control gets the interface's
// refusals, not a crash.
TEST(Interrupts, PerVectorControlDefaultsToNotSupported) {
  FakeInterrupts fake;
  for (const Error& error : {fake.mask(0).error(), fake.unmask(0).error(), fake.add_vectors(1).error()}) {
    EXPECT_EQ(error.code, Errc::not_supported) << error.message();
    EXPECT_NE(error.message().find("fake"), std::string::npos) << error.message();
  }
}

TEST(WaitAny, FirstToFireAcrossSourcesAndBoundedOtherwise) {
  FakeInterrupts a, b;
  const InterruptVector vectors[] = {{&a, 0}, {&b, 0}};
  auto none = wait_any(vectors, std::chrono::milliseconds(20));
  ASSERT_TRUE(none);
  EXPECT_FALSE(*none);
  b.fire();
  auto fired = wait_any(vectors, std::chrono::milliseconds(1000));
  ASSERT_TRUE(fired && *fired);
  EXPECT_EQ(**fired, 1u);
  EXPECT_FALSE(*wait_any(vectors, std::chrono::milliseconds(0))) << "its count was consumed";
  const InterruptVector bad[] = {{&a, 3}};
  EXPECT_EQ(wait_any(bad, std::chrono::milliseconds(0)).error().code, Errc::out_of_range);
  const InterruptVector null[] = {{nullptr, 0}};
  EXPECT_EQ(wait_any(null, std::chrono::milliseconds(0)).error().code, Errc::invalid_argument);
}


// --- DmaPages over a backend double: one buffer where bus addresses can be contiguous,
// a page at a time where the backend refuses more than a page (physical addresses) ---

Result<BusAddress> one_page_at_a_time(const Mapping& memory, std::uint64_t& next) {
  if (memory.size() > 4096) {
    return std::unexpected(make_error(Errc::not_supported, "map", "", "not physically contiguous"));
  }
  next += 0x10000;  // pages far apart, as ordinary physical pages are
  return BusAddress{next};
}

bool all_zero(std::span<const std::byte> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

TEST(DmaPages, OneBufferWhereTheBackendGivesContiguousBusAddresses) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x7f000000};
  });
  auto pages = DmaPages::allocate(DmaAllocator::create(backend), 4);
  ASSERT_TRUE(pages) << pages.error().message();
  EXPECT_TRUE(pages->contiguous());
  EXPECT_EQ(pages->count(), 4u);
  EXPECT_EQ(backend->mapped, 4u * 4096);
  for (std::size_t i = 0; i < 4; ++i) {
    EXPECT_EQ(pages->bus(i).value, 0x7f000000 + i * 4096);
    EXPECT_EQ(pages->page(i), pages->page(0) + i * 4096);
    EXPECT_TRUE(all_zero({pages->page(i), 4096}));
  }
  EXPECT_EQ(pages->bus_at(3 * 4096 + 17).value, 0x7f000000u + 3 * 4096 + 17);
  EXPECT_EQ(backend->bus_alignments, std::vector<std::uint64_t>{4096}) << "each page aligned on the bus";
}

TEST(DmaPages, APageAtATimeWhereTheBackendRefusesMore) {
  std::uint64_t next = 0x100000;
  auto backend = std::make_shared<RecordingBackend>(true, [&next](const Mapping& memory, const DmaMapRequest&) {
    return one_page_at_a_time(memory, next);
  });
  auto pages = DmaPages::allocate(DmaAllocator::create(backend), 5);
  ASSERT_TRUE(pages) << pages.error().message();
  EXPECT_FALSE(pages->contiguous());
  EXPECT_EQ(pages->count(), 5u);
  EXPECT_EQ(backend->mapped, 5u * 4096);
  std::vector<std::uint64_t> seen;
  for (std::size_t i = 0; i < 5; ++i) {
    seen.push_back(pages->bus(i).value);
    EXPECT_EQ(pages->bus(i).value % 4096, 0u);
    EXPECT_EQ(pages->at(i * 4096 + 9), pages->page(i) + 9) << "an offset lands in its own page";
    EXPECT_EQ(pages->bus_at(i * 4096 + 9).value, pages->bus(i).value + 9);
    EXPECT_TRUE(all_zero({pages->page(i), 4096}));
    std::memset(pages->page(i), static_cast<int>(i + 1), 4096);
  }
  std::sort(seen.begin(), seen.end());
  EXPECT_EQ(std::adjacent_find(seen.begin(), seen.end()), seen.end()) << "five different pages";
  for (std::size_t i = 0; i < 5; ++i) EXPECT_EQ(pages->page(i)[4095], std::byte(i + 1)) << "pages do not overlap";
  pages->sync_page_for_device(4);
  pages->sync_for_cpu();
  // Given back with the object.
  *pages = DmaPages();
  EXPECT_EQ(backend->mapped, 0u);
}

TEST(DmaPages, AFailureHalfWayGivesBackThePagesTakenSoFar) {
  std::uint64_t next = 0x100000;
  int pages_mapped = 0;
  auto backend = std::make_shared<RecordingBackend>(true, [&](const Mapping& memory, const DmaMapRequest&) -> Result<BusAddress> {
    if (memory.size() == 4096 && ++pages_mapped == 3) {
      return std::unexpected(make_error(Errc::permission_denied, "map", "", "RLIMIT_MEMLOCK"));
    }
    return one_page_at_a_time(memory, next);
  });
  auto pages = DmaPages::allocate(DmaAllocator::create(backend), 4);
  ASSERT_FALSE(pages);
  EXPECT_EQ(pages.error().code, Errc::permission_denied) << pages.error().message();
  EXPECT_EQ(backend->mapped, 0u) << "the two pages taken were given back";
}

TEST(DmaPages, RefusesCountsAndPageSizesOutOfRange) {
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x1000000};
  });
  const DmaAllocator allocator = DmaAllocator::create(backend);
  const std::pair<std::size_t, std::size_t> cases[] = {
      {0, 4096}, {1, 0}, {1, 2048}, {1, 12288}, {1, std::size_t{4} << 20}, {SIZE_MAX / 4096 + 1, 4096}, {SIZE_MAX, 2 << 20}};
  for (auto [count, page_size] : cases) {
    auto pages = DmaPages::allocate(allocator, count, page_size);
    ASSERT_FALSE(pages) << count << " x " << page_size;
    EXPECT_EQ(pages.error().code, Errc::invalid_argument) << count << " x " << page_size;
  }
  EXPECT_EQ(backend->mapped, 0u);
  EXPECT_TRUE(backend->page_sizes.empty()) << "nothing was asked of the backend";
}

TEST(DmaPages, EmptyAndMovedFromHoldNoPages) {
  const DmaPages empty;
  EXPECT_EQ(empty.count(), 0u);
  EXPECT_EQ(empty.page(0), nullptr);
  EXPECT_EQ(empty.bus(0).value, 0u);
  empty.sync_page_for_device(0);  // nothing to do, and no crash
  auto backend = std::make_shared<RecordingBackend>(false, [](const Mapping&, const DmaMapRequest&) -> Result<BusAddress> {
    return BusAddress{0x1000000};
  });
  auto pages = DmaPages::allocate(DmaAllocator::create(backend), 2);
  ASSERT_TRUE(pages);
  EXPECT_EQ(pages->page(2), nullptr) << "an index past the end";
  DmaPages taken = std::move(*pages);
  EXPECT_EQ(pages->count(), 0u);
  EXPECT_EQ(pages->page(0), nullptr);
  EXPECT_EQ(taken.count(), 2u);
  EXPECT_NE(taken.page(1), nullptr);
}

}  // namespace
}  // namespace pcie
