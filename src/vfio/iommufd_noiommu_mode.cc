// iommufd without an IOMMU (Documentation/driver-api/vfio.rst, "VFIO NOIOMMU mode"): the
// devices are in VFIO's no-IOMMU mode and opened through their noiommu-vfioN cdevs, bound
// to /dev/iommu and attached to the container's IOAS, whose software page table pins
// buffers and tells their physical addresses (IOMMU_IOAS_NOIOMMU_GET_PA).
#include <utility>

#include "src/vfio/cdev_device.h"
#include "src/vfio/iommu_mode.h"
#include "src/vfio/iommufd_noiommu_backend.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"

namespace pcie::detail {
namespace {

class IommufdNoiommuMode final : public IommuMode {
 public:
  explicit IommufdNoiommuMode(PhysicalDmaOptions options) : options_(std::move(options)) {}

  bool without_iommu() const override { return true; }

  Result<void> open_device(VfioContainerState& state, VfioDeviceState& device) override {
    auto fd = open_device_cdev(state, device.bdf, /*without_iommu=*/true);
    if (!fd) return std::unexpected(fd.error());
    return take_device_cdev(state, device, std::move(*fd), &page_table_);
  }

  Result<std::shared_ptr<DmaBackend>> dma_backend(const std::shared_ptr<VfioContainerState>& state) override {
    if (!state->iovas) return std::unexpected(no_iova_ranges_error());
    // A backend per allocator, as the other modes make: each unmaps what it mapped (a
    // buffer keeps the backend that mapped it). Cached here it would keep `state`, which
    // owns this mode, alive for good.
    return make_iommufd_noiommu_backend(state, options_);
  }

  Result<std::unique_ptr<PeerMapping>> map_peer_window(const std::shared_ptr<VfioContainerState>& state,
                                                       const PeerWindowRequest& request) override {
    return map_bar_by_bus_address(*state, request);
  }

 private:
  PhysicalDmaOptions options_;
  // The IOAS's page table this container owns (0 until the first device): its software
  // page table holds the buffers' pins, and it must outlive every device, since the
  // IOAS's automatic one is destroyed with the last device that detaches, unpinning every
  // buffer while the buffers keep their physical addresses. /dev/iommu's close frees it.
  std::uint32_t page_table_ = 0;
};

}  // namespace

std::unique_ptr<IommuMode> make_iommufd_noiommu_mode(const PhysicalDmaOptions& options) {
  return std::make_unique<IommufdNoiommuMode>(options);
}

}  // namespace pcie::detail
