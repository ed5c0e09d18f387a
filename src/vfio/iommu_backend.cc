#include "src/vfio/iommu_backend.h"

#include <fmt/format.h>

#include <algorithm>
#include <mutex>

namespace pcie::detail {

Result<BusAddress> IommuDmaBackend::map(const Mapping& memory, const DmaMapRequest& request) {
  const std::uint64_t length = memory.size();
  // The address is taken under the container's lock; the kernel call comes after it.
  Result<Iova> iova = [&] {
    std::lock_guard lock(container_->mutex);
    const std::uint64_t alignment =
        std::max({request.page_size, container_->iova_alignment, request.bus_alignment});
    return container_->iovas->allocate(length, alignment, request.dma_limit);
  }();
  if (!iova) return std::unexpected(iova.error());
  auto mapped = map_in_kernel(reinterpret_cast<std::uint64_t>(memory.data()), *iova, length, request);
  std::lock_guard lock(container_->mutex);
  if (!mapped) {
    container_->iovas->release(*iova, length);
    return std::unexpected(mapped.error());
  }
  container_->mapped_bytes += length;
  return *iova;
}

Result<void> IommuDmaBackend::unmap(BusAddress address, const Mapping& memory) {
  const std::uint64_t length = memory.size();
  auto unmapped = unmap_in_kernel(address, length);
  if (!unmapped) return std::unexpected(unmapped.error());
  // Only an IOVA the kernel no longer maps may be handed out again.
  {
    std::lock_guard lock(container_->mutex);
    container_->iovas->release(address, length);
    container_->mapped_bytes -= std::min(container_->mapped_bytes, length);
  }
  if (*unmapped != length) {
    // 0 means the kernel had nothing mapped there: our bookkeeping and the kernel's differ.
    return std::unexpected(make_error(Errc::io_error, "unmap DMA buffer", fmt::format("IOVA {:#x} ({})", address.value, name()),
                                      fmt::format("the kernel unmapped {} of {} bytes", *unmapped, length)));
  }
  return {};
}

std::uint64_t IommuDmaBackend::mapped_bytes() const {
  std::lock_guard lock(container_->mutex);
  return container_->mapped_bytes;
}

}  // namespace pcie::detail
