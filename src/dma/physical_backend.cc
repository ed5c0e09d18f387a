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
    auto backings = request.bus_alignment > kPage ? backings_for_alignment(size, prefer, request.bus_alignment)
                                                  : backings_for_contiguity(size, prefer, request.dma_limit);
    if (!backings) return std::unexpected(backings.error());
    // Another piece of memory may lie elsewhere: try several, as the options say.
    const unsigned pieces = std::clamp(options_.attempts, 1u, 64u);
    std::vector<DmaMemoryStep> steps;
    for (DmaBacking backing : *backings) steps.push_back({.backing = backing, .pieces = pieces});
    return steps;
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

  // Without an IOMMU to stitch pages together a buffer must fit in one page of its backing
  // to be contiguous: smaller backings are tried only when they can hold it, or when the
  // caller asked for that backing, rather than populating (say) a gigabyte of ordinary
  // pages that are contiguous only by luck. Huge pages only for a buffer that fills at
  // least half of one, as behind an IOMMU.
  static Result<std::vector<DmaBacking>> backings_for_contiguity(std::size_t size, DmaBacking prefer,
                                                                  std::uint64_t dma_limit) {
    std::vector<DmaBacking> order;
    for (DmaBacking backing : {DmaBacking::huge_1g, DmaBacking::huge_2m, DmaBacking::pages}) {
      const std::uint64_t page = dma_backing_page_size(backing);
      if (static_cast<int>(backing) > static_cast<int>(prefer)) continue;
      if (backing != DmaBacking::pages && size < page / 2) continue;
      if (backing != prefer && size > page) continue;
      order.push_back(backing);
    }
    // Below a DMA limit: ordinary pages come from wherever the kernel's allocator has them
    // (high memory first, usually), while huge pages reserved at boot lie low. A 2 MiB page
    // is the last resort for a small buffer that no ordinary page could hold below the
    // limit (a pool carves it up for many small buffers).
    const bool limited = dma_limit != ~std::uint64_t{0};
    if (limited && size <= dma_backing_page_size(DmaBacking::huge_2m) &&
        std::find(order.begin(), order.end(), DmaBacking::huge_2m) == order.end()) {
      order.push_back(DmaBacking::huge_2m);
    }
    return order;
  }

  // A physical address is aligned beyond its page only by chance: take pages at least as
  // large as the alignment, among those the caller allows.
  static Result<std::vector<DmaBacking>> backings_for_alignment(std::size_t size, DmaBacking prefer,
                                                                 std::uint64_t alignment) {
    std::vector<DmaBacking> order;
    for (DmaBacking backing : {DmaBacking::huge_2m, DmaBacking::huge_1g}) {
      if (dma_backing_page_size(backing) >= alignment && static_cast<int>(backing) <= static_cast<int>(prefer)) {
        order.push_back(backing);
      }
    }
    if (!order.empty()) return order;
    return std::unexpected(make_error(
        Errc::not_supported, "allocate DMA buffer", fmt::format("{} bytes aligned to {:#x}", size, alignment),
        fmt::format("without an IOMMU the bus address is the physical one, which only pages of {:#x} bytes or "
                    "more align so, and {} are not allowed (DmaBufferOptions::prefer)",
                    alignment, alignment > dma_backing_page_size(DmaBacking::huge_2m) ? "1 GiB pages" : "huge pages"),
        "prefer huge pages (DmaBacking::huge_2m or huge_1g) and reserve them"));
  }

  PhysicalDmaOptions options_;
  std::atomic<std::uint64_t> mapped_{0};
};

}  // namespace

std::shared_ptr<DmaBackend> make_physical_dma_backend(DeviceMayReachAllMemory, const PhysicalDmaOptions& options) {
  return std::make_shared<PhysicalDmaBackend>(options);
}

}  // namespace pcie
