// The iommufd mode (Documentation/userspace-api/iommufd.rst): /dev/iommu with one IOAS,
// each device opened through its VFIO cdev, bound to the iommufd and attached to the IOAS.
#include <fmt/format.h>

#include <utility>

#include "src/vfio/backend_choice.h"
#include "src/vfio/cdev_device.h"
#include "src/vfio/iommu_mode.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/iommufd_backend.h"
#include "src/vfio/state.h"

namespace pcie::detail {
namespace {

class IommufdMode final : public IommuMode {
 public:
  bool without_iommu() const override { return false; }

  Result<void> open_device(VfioContainerState& state, VfioDeviceState& device) override {
    if (type1_) return type1_->open_device(state, device);
    const Bdf& bdf = device.bdf;
    auto fd = open_device_cdev(state, bdf, /*without_iommu=*/false);
    if (!fd) {
      if (!may_fall_back(state, bdf, fd.error())) return std::unexpected(fd.error());
      auto type1 = open_type1_container(state.paths);
      if (!type1) return std::unexpected(fd.error());
      fall_back_to_type1(state, std::move(*type1), fd.error());
      return type1_->open_device(state, device);
    }
    return take_device_cdev(state, device, std::move(*fd));
  }

  Result<std::shared_ptr<DmaBackend>> dma_backend(const std::shared_ptr<VfioContainerState>& state) override {
    if (type1_) return type1_->dma_backend(state);
    if (!state->iovas) return std::unexpected(no_iova_ranges_error());
    return make_iommufd_backend(state);
  }

  Result<std::unique_ptr<PeerMapping>> map_peer_window(const std::shared_ptr<VfioContainerState>& state,
                                                       const PeerWindowRequest& request) override {
    if (type1_) return type1_->map_peer_window(state, request);
    return map_bar_as_dma_buf(state, request);
  }

 private:
  // An automatic choice of iommufd that cannot open the first device's cdev (not found, not
  // this user's, none) turns the container into a type1 one, which may still reach the
  // device through its group node.
  static bool may_fall_back(const VfioContainerState& state, const Bdf& bdf, const Error& cdev_error) {
    return state.requested == VfioIommuBackend::automatic && !state.backend_fixed &&
           may_fall_back_to_type1(state.paths, bdf, cdev_error);
  }

  // From now on the container is /dev/vfio/vfio, and this mode is the type1 mode.
  void fall_back_to_type1(VfioContainerState& state, UniqueFd container, const Error& cdev_error) {
    state.fd = std::move(container);
    state.ioas = 0;
    state.choice = {VfioIommuBackend::type1,
                    fmt::format("type1: iommufd was chosen, but the first device's cdev could not be opened ({}: {})",
                                cdev_error.object, cdev_error.reason)};
    type1_ = make_type1_mode();
  }

  std::unique_ptr<IommuMode> type1_;  // set once an automatic choice fell back to type1
};

}  // namespace

std::unique_ptr<IommuMode> make_iommufd_mode() { return std::make_unique<IommufdMode>(); }

}  // namespace pcie::detail
