#include "src/vfio/iommufd_noiommu_backend.h"

#include <fmt/format.h>

#include <map>
#include <mutex>
#include <string>

#include "src/sys/iommufd_ioctls.h"
#include "src/vfio/iommufd_backend.h"

namespace pcie::detail {
namespace {

constexpr std::uint64_t kPage = 4096;

class IommufdNoiommuBackend final : public DmaBackend {
 public:
  IommufdNoiommuBackend(std::shared_ptr<VfioContainerState> container, PhysicalDmaOptions options)
      : container_(std::move(container)), options_(std::move(options)) {}

  std::string_view name() const override { return "physical addresses (iommufd, no IOMMU)"; }
  bool bus_addresses_are_physical() const override { return true; }

  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) override {
    const std::uint64_t length = memory.size();
    const std::string object = fmt::format("{} bytes at {}", length, static_cast<const void*>(memory.data()));
    if (length == 0 || reinterpret_cast<std::uint64_t>(memory.data()) % kPage != 0 || length % kPage != 0) {
      return std::unexpected(make_error(Errc::invalid_argument, "map DMA memory", object, "not whole pages"));
    }
    // The IOVA only names the pinned pages to the IOAS: the device never sees it, so it
    // has no DMA limit or bus alignment of its own.
    auto iova = take_iova(length);
    if (!iova) return std::unexpected(iova.error());
    VfioContainerState& state = *container_;
    auto pinned = sys::iommufd::ioas_map_fixed(state.fd.get(), state.ioas, reinterpret_cast<std::uint64_t>(memory.data()),
                                               iova->value, length, request.device_reads, request.device_writes);
    if (!pinned) {
      give_back_iova(*iova, length, false);
      return std::unexpected(explain_iommufd_map_failure(pinned.error(), state.fd.get(), length));
    }
    auto physical = locate(*iova, length, request, object);
    if (physical) {
      std::lock_guard lock(state.mutex);
      if (iova_of_.emplace(physical->value, *iova).second) {
        state.mapped_bytes += length;
        return *physical;
      }
      physical = std::unexpected(make_error(Errc::io_error, "map DMA memory", object,
                                            fmt::format("physical {:#x} is mapped for another buffer already",
                                                        physical->value)));
    }
    // Refused pages are unpinned at once: the allocator holds them while it tries others.
    // An IOVA the kernel may still map is never handed out again.
    auto unpinned = sys::iommufd::ioas_unmap(state.fd.get(), state.ioas, iova->value, length);
    if (unpinned && *unpinned == length) give_back_iova(*iova, length, false);
    return std::unexpected(physical.error());
  }

  bool retry_with_other_memory(const Error& error) const override {
    return error.code == Errc::out_of_range || error.code == Errc::not_supported;
  }

  Result<std::vector<DmaMemoryStep>> memory_plan(std::size_t size, DmaBacking prefer,
                                                 const DmaMapRequest& request) const override {
    return physical_memory_plan(size, prefer, request, options_.attempts);
  }

  Result<void> unmap(BusAddress address, const Mapping& memory) override {
    const std::uint64_t length = memory.size();
    VfioContainerState& state = *container_;
    std::optional<Iova> iova;
    {
      std::lock_guard lock(state.mutex);
      if (const auto found = iova_of_.find(address.value); found != iova_of_.end()) iova = found->second;
    }
    if (!iova) {
      return std::unexpected(make_error(Errc::invalid_argument, "unmap DMA buffer",
                                        fmt::format("physical {:#x} ({})", address.value, name()),
                                        "this backend did not map it"));
    }
    auto unmapped = sys::iommufd::ioas_unmap(state.fd.get(), state.ioas, iova->value, length);
    if (!unmapped) return std::unexpected(unmapped.error());  // still pinned: the IOVA stays taken
    {
      std::lock_guard lock(state.mutex);
      iova_of_.erase(address.value);
    }
    if (*unmapped != length) {
      // The books disagree with the kernel: the IOVA stays taken rather than be reused while
      // something may still be mapped there.
      return std::unexpected(make_error(Errc::io_error, "unmap DMA buffer",
                                        fmt::format("physical {:#x} ({})", address.value, name()),
                                        fmt::format("the kernel unpinned {} of {} bytes", *unmapped, length)));
    }
    give_back_iova(*iova, length, true);
    return {};
  }

  std::uint64_t mapped_bytes() const override {
    std::lock_guard lock(container_->mutex);
    return container_->mapped_bytes;
  }

 private:
  Result<Iova> take_iova(std::uint64_t length) {
    std::lock_guard lock(container_->mutex);
    if (!container_->iovas) return std::unexpected(no_iova_ranges_error());
    return container_->iovas->allocate(length, std::max(kPage, container_->iova_alignment), ~std::uint64_t{0});
  }

  void give_back_iova(Iova iova, std::uint64_t length, bool was_counted) {
    std::lock_guard lock(container_->mutex);
    container_->iovas->release(iova, length);
    if (was_counted) container_->mapped_bytes -= std::min(container_->mapped_bytes, length);
  }

  // The pinned pages' physical address, from the kernel: one contiguous run of `length`
  // bytes, aligned and below the DMA limit as asked.
  Result<BusAddress> locate(Iova iova, std::uint64_t length, const DmaMapRequest& request,
                            const std::string& object) const {
    auto extent = sys::iommufd::ioas_noiommu_physical(container_->fd.get(), container_->ioas, iova.value, length);
    if (!extent) {
      // Other memory would fare no better (EOPNOTSUPP here is also an IOAS without the
      // no-IOMMU page table): not the not_supported that sends the allocator on.
      Error error = extent.error();
      if (error.code == Errc::not_supported) error.code = Errc::io_error;
      return std::unexpected(error);
    }
    if (extent->contiguous_bytes != length) {
      return std::unexpected(make_error(Errc::not_supported, "map DMA memory", object,
                                        fmt::format("its pages are not physically contiguous (the first {} bytes are, "
                                                    "from {:#x})",
                                                    extent->contiguous_bytes, extent->physical),
                                        "use huge pages (DmaBacking::huge_2m) for buffers larger than a page"));
    }
    if (request.bus_alignment != 0 && extent->physical % request.bus_alignment != 0) {
      return std::unexpected(make_error(Errc::not_supported, "map DMA memory", object,
                                        fmt::format("its physical address {:#x} is not aligned to {:#x} bytes",
                                                    extent->physical, request.bus_alignment),
                                        "use huge pages at least as large as the alignment"));
    }
    const std::uint64_t last = extent->physical + (length - 1);
    if (last < extent->physical || last > request.dma_limit) {
      return std::unexpected(make_error(Errc::out_of_range, "map DMA memory", object,
                                        fmt::format("its physical addresses {:#x}-{:#x} lie above the device's DMA "
                                                    "limit {:#x}",
                                                    extent->physical, last, request.dma_limit),
                                        "reserve huge pages early (hugepages= on the kernel command line) so that "
                                        "low memory is still free, or use a device with a wider DMA mask"));
    }
    return BusAddress{extent->physical};
  }

  std::shared_ptr<VfioContainerState> container_;
  PhysicalDmaOptions options_;
  std::map<std::uint64_t, Iova> iova_of_;  // physical address -> the IOVA that pins it; under container_->mutex
};

}  // namespace

std::shared_ptr<DmaBackend> make_iommufd_noiommu_backend(std::shared_ptr<VfioContainerState> container,
                                                         const PhysicalDmaOptions& options) {
  return std::make_shared<IommufdNoiommuBackend>(std::move(container), options);
}

}  // namespace pcie::detail
