// The physical-address DMA backend: no IOMMU, the device is handed CPU physical addresses
// (pcie/dma_backend.h says when, and what the user accepts by using it).
#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <vector>

#include "pcie/dma_backend.h"
#include "src/dma/pagemap.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

constexpr std::uint64_t kPage = 4096;

bool allowed(DmaBacking backing, DmaBacking prefer) { return static_cast<int>(backing) <= static_cast<int>(prefer); }

// Without an IOMMU to stitch pages together a buffer must fit in one page of its backing
// to be contiguous (physical_memory_plan in pcie/dma_backend.h says what is tried).
std::vector<DmaBacking> backings_for_contiguity(std::size_t size, DmaBacking prefer, std::uint64_t dma_limit) {
  std::vector<DmaBacking> order;
  for (DmaBacking backing : {DmaBacking::huge_1g, DmaBacking::huge_2m, DmaBacking::pages}) {
    const std::uint64_t page = dma_backing_page_size(backing);
    if (!allowed(backing, prefer)) continue;
    if (backing != DmaBacking::pages && size < page / 2) continue;  // not worth the memory
    if (backing != prefer && size > page) continue;                  // contiguous only by luck
    order.push_back(backing);
  }
  // Where nothing above holds the buffer in one page, the smallest allowed huge page that
  // does: one 2 MiB page for a 64 KiB buffer rather than sixteen ordinary pages by luck.
  const bool one_page_holds_it = std::any_of(order.begin(), order.end(), [&](DmaBacking backing) {
    return size <= dma_backing_page_size(backing);
  });
  if (!one_page_holds_it) {
    for (DmaBacking backing : {DmaBacking::huge_2m, DmaBacking::huge_1g}) {
      if (allowed(backing, prefer) && size <= dma_backing_page_size(backing)) {
        order.push_back(backing);
        break;
      }
    }
  }
  // Below a DMA limit ordinary pages come from wherever the kernel's allocator has them
  // (high memory first, usually), while huge pages reserved at boot lie low: a 2 MiB page
  // is the last resort for a small buffer (a pool carves it up for many small buffers).
  const bool limited = dma_limit != ~std::uint64_t{0};
  if (limited && size <= dma_backing_page_size(DmaBacking::huge_2m) &&
      std::find(order.begin(), order.end(), DmaBacking::huge_2m) == order.end()) {
    order.push_back(DmaBacking::huge_2m);
  }
  return order;
}

// A physical address is aligned beyond its page only by chance: pages at least as large as
// the alignment, among those the caller allows.
Result<std::vector<DmaBacking>> backings_for_alignment(std::size_t size, DmaBacking prefer, std::uint64_t alignment) {
  std::vector<DmaBacking> order;
  for (DmaBacking backing : {DmaBacking::huge_2m, DmaBacking::huge_1g}) {
    if (dma_backing_page_size(backing) >= alignment && allowed(backing, prefer)) order.push_back(backing);
  }
  if (!order.empty()) return order;
  return std::unexpected(make_error(
      Errc::not_supported, "allocate DMA buffer", fmt::format("{} bytes aligned to {:#x}", size, alignment),
      fmt::format("without an IOMMU the bus address is the physical one, which only pages of {:#x} bytes or "
                  "more align so, and {} are not allowed (DmaBufferOptions::prefer)",
                  alignment, alignment > dma_backing_page_size(DmaBacking::huge_2m) ? "1 GiB pages" : "huge pages"),
      "prefer huge pages (DmaBacking::huge_2m or huge_1g) and reserve them"));
}

class PhysicalDmaBackend final : public DmaBackend {
 public:
  explicit PhysicalDmaBackend(PhysicalDmaOptions options) : options_(std::move(options)) {}

  std::string_view name() const override { return "physical addresses (no IOMMU)"; }
  bool bus_addresses_are_physical() const override { return true; }

  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    const auto address = reinterpret_cast<std::uint64_t>(memory.data());
    const std::string object = fmt::format("{} bytes at {}", memory.size(), static_cast<const void*>(memory.data()));
    if (memory.size() == 0 || address % kPage != 0 || memory.size() % kPage != 0) {
      return std::unexpected(make_error(Errc::invalid_argument, "map DMA memory", object, "not whole pages"));
    }
    if (options_.lock) {
      // No IOMMU pins these pages: locking them is what keeps them from being swapped out.
      if (auto locked = sys::lock_memory(memory, "DMA buffer"); !locked) {
        Error error = locked.error();
        if (error.sys_errno == ENOMEM || error.sys_errno == EPERM || error.sys_errno == EAGAIN) {
          error.code = Errc::permission_denied;
          error.hint = fmt::format("RLIMIT_MEMLOCK is {} bytes: raise it (ulimit -l) or run with CAP_IPC_LOCK",
                                   sys::memlock_limit());
        }
        return std::unexpected(error);
      }
    }
    auto located = locate(memory, request, object);
    // Refused pages are held by the allocator while it tries others: unlocked, so that
    // they do not use up RLIMIT_MEMLOCK and turn "not contiguous" into "raise the limit".
    if (!located && options_.lock) (void)sys::unlock_memory(memory, "DMA buffer");
    if (located) mapped_.fetch_add(memory.size());
    return located;
  }

  bool retry_with_other_memory(const Error& error) const override {
    return error.code == Errc::out_of_range || error.code == Errc::not_supported;
  }

  Result<std::vector<DmaMemoryStep>> memory_plan(std::size_t size, DmaBacking prefer,
                                                 const DmaMapRequest& request) const override {
    return physical_memory_plan(size, prefer, request, options_.attempts);
  }

  Result<void> unmap(BusAddress, const Mapping& memory) override {
    // Nothing to undo in an IOMMU; the pages are unlocked when they are unmapped.
    mapped_.fetch_sub(memory.size());  // only ever called for memory map() counted
    return {};
  }

  std::uint64_t mapped_bytes() const override { return mapped_.load(); }

 private:
  // The physical address of `memory` from pagemap, checked against the request's alignment
  // and DMA limit.
  Result<BusAddress> locate(const Mapping& memory, const DmaMapRequest& request, const std::string& object) const {
    const auto address = reinterpret_cast<std::uint64_t>(memory.data());
    auto fd = sys::open_file(options_.pagemap_path, O_RDONLY, "open pagemap");
    if (!fd) {
      Error error = fd.error();
      if (error.code == Errc::permission_denied) {
        error.hint = "physical addresses are for root (CAP_SYS_ADMIN) only; a process that changed its user "
                     "is not dumpable, and then /proc/self is root's";
      }
      return std::unexpected(error);
    }
    // One pread for the whole buffer: a lookup per page costs a system call each (DPDK's
    // rte_mem_virt2phy pays that); this is one per buffer.
    std::vector<std::uint64_t> entries(memory.size() / kPage);
    if (auto read = pagemap::read_entries(fd->get(), options_.pagemap_path, address, entries); !read) {
      return std::unexpected(read.error());
    }
    auto physical = pagemap::contiguous_physical_address(entries, object);
    if (!physical) return std::unexpected(physical.error());
    if (request.bus_alignment != 0 && *physical % request.bus_alignment != 0) {
      return std::unexpected(make_error(Errc::not_supported, "map DMA memory", object,
                                        fmt::format("its physical address {:#x} is not aligned to {:#x} bytes",
                                                    *physical, request.bus_alignment),
                                        "use huge pages at least as large as the alignment"));
    }
    const std::uint64_t last = *physical + (memory.size() - 1);
    if (last > request.dma_limit) {
      return std::unexpected(make_error(Errc::out_of_range, "map DMA memory", object,
                                        fmt::format("its physical addresses {:#x}-{:#x} lie above the device's DMA "
                                                    "limit {:#x}",
                                                    *physical, last, request.dma_limit),
                                        "reserve huge pages early (hugepages= on the kernel command line) so that "
                                        "low memory is still free, or use a device with a wider DMA mask"));
    }
    return BusAddress{*physical};
  }

  PhysicalDmaOptions options_;
  std::atomic<std::uint64_t> mapped_{0};
};

}  // namespace

Result<std::vector<DmaMemoryStep>> physical_memory_plan(std::size_t size, DmaBacking prefer,
                                                        const DmaMapRequest& request, unsigned pieces) {
  auto backings = request.bus_alignment > kPage ? backings_for_alignment(size, prefer, request.bus_alignment)
                                                : backings_for_contiguity(size, prefer, request.dma_limit);
  if (!backings) return std::unexpected(backings.error());
  std::vector<DmaMemoryStep> steps;
  for (DmaBacking backing : *backings) steps.push_back({.backing = backing, .pieces = std::clamp(pieces, 1u, 64u)});
  return steps;
}

std::shared_ptr<DmaBackend> make_physical_dma_backend(DeviceMayReachAllMemory, const PhysicalDmaOptions& options) {
  return std::make_shared<PhysicalDmaBackend>(options);
}

}  // namespace pcie
