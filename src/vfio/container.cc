// VfioContainer: the IOMMU context (type1: /dev/vfio/vfio and the groups attached to it;
// iommufd: /dev/iommu and its IOAS; no-IOMMU), and opening devices in it. What differs
// between the modes is in the mode object (src/vfio/iommu_mode.h).
#include <fmt/format.h>

#include <utility>

#include "pcie/config_space.h"
#include "pcie/vfio.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/backend_choice.h"
#include "src/vfio/iommu_mode.h"
#include "src/vfio/state.h"

namespace pcie {

VfioContainer::VfioContainer(std::shared_ptr<detail::VfioContainerState> state) : state_(std::move(state)) {}
VfioContainer::VfioContainer(VfioContainer&&) noexcept = default;
VfioContainer& VfioContainer::operator=(VfioContainer&&) noexcept = default;
VfioContainer::~VfioContainer() = default;

Result<VfioContainer> VfioContainer::open(const VfioPaths& paths, const VfioContainerOptions& options) {
  auto chosen = detail::choose_backend(paths, options);
  if (!chosen) return std::unexpected(chosen.error());
  auto state = std::make_shared<detail::VfioContainerState>();
  state->paths = paths;
  state->requested = chosen->requested;
  state->choice = chosen->choice;
  if (chosen->iommufd) {
    state->fd = std::move(chosen->iommufd->fd);
    state->ioas = chosen->iommufd->ioas;
    state->mode = detail::make_iommufd_mode();
    return VfioContainer(std::move(state));
  }
  auto fd = detail::open_type1_container(paths);
  if (!fd) return std::unexpected(fd.error());
  state->fd = std::move(*fd);
  state->mode = detail::make_type1_mode();
  return VfioContainer(std::move(state));
}

namespace {

// VFIO's group no-IOMMU model: /dev/vfio/vfio, buffers from the pagemap backend.
Result<std::shared_ptr<detail::VfioContainerState>> open_group_without_iommu(DeviceMayReachAllMemory acknowledgement,
                                                                            const VfioPaths& paths,
                                                                            const PhysicalDmaOptions& dma,
                                                                            detail::ChosenBackend& chosen) {
  const std::string node = paths.dev_vfio + "/vfio";
  auto fd = detail::open_container_node(paths);
  if (!fd) return std::unexpected(fd.error());
  auto noiommu = sys::vfio::check_extension(fd->get(), VFIO_NOIOMMU_IOMMU);
  if (!noiommu) return std::unexpected(noiommu.error());
  if (!*noiommu) {
    return std::unexpected(make_error(
        Errc::not_supported, "open VFIO container without an IOMMU", node, "the kernel offers no no-IOMMU model",
        "it needs a kernel built with CONFIG_VFIO_NOIOMMU (no Debian kernel is) and no-IOMMU mode enabled before "
        "binding (vfio.enable_unsafe_noiommu_mode=1, or echo 1 > /sys/module/vfio/parameters/"
        "enable_unsafe_noiommu_mode); without it, uio_pci_generic with physical DMA buffers does the same"));
  }
  auto state = std::make_shared<detail::VfioContainerState>();
  state->paths = paths;
  state->fd = std::move(*fd);
  state->mode = detail::make_noiommu_mode(make_physical_dma_backend(acknowledgement, dma));
  state->requested = chosen.requested;
  state->choice = std::move(chosen.choice);
  state->backend_fixed = true;
  return state;
}

}  // namespace

Result<VfioContainer> VfioContainer::open_without_iommu(DeviceMayReachAllMemory acknowledgement, const VfioPaths& paths,
                                                       const PhysicalDmaOptions& dma,
                                                       const VfioContainerOptions& options) {
  auto chosen = detail::choose_noiommu_backend(paths, options);
  if (!chosen) return std::unexpected(chosen.error());
  if (!chosen->iommufd) {
    auto state = open_group_without_iommu(acknowledgement, paths, dma, *chosen);
    if (!state) return std::unexpected(state.error());
    return VfioContainer(std::move(*state));
  }
  auto state = std::make_shared<detail::VfioContainerState>();
  state->paths = paths;
  state->fd = std::move(chosen->iommufd->fd);
  state->ioas = chosen->iommufd->ioas;
  state->mode = detail::make_iommufd_noiommu_mode(dma);
  state->requested = chosen->requested;
  state->choice = chosen->choice;
  state->backend_fixed = true;
  return VfioContainer(std::move(state));
}

bool VfioContainer::without_iommu() const { return state_ && state_->mode->without_iommu(); }

VfioIommuBackend VfioContainer::backend() const {
  if (!state_) return VfioIommuBackend::automatic;
  std::lock_guard lock(state_->mutex);
  return state_->choice.backend;
}

VfioBackendChoice VfioContainer::backend_choice() const {
  if (!state_) return {};
  std::lock_guard lock(state_->mutex);
  return state_->choice;
}

std::optional<std::uint32_t> VfioContainer::ioas_id() const {
  if (!state_) return std::nullopt;
  std::lock_guard lock(state_->mutex);
  if (state_->choice.backend != VfioIommuBackend::iommufd) return std::nullopt;
  return state_->ioas;
}

std::vector<IovaRange> VfioContainer::iova_ranges() const {
  if (!state_) return {};
  std::lock_guard lock(state_->mutex);
  return state_->iova_ranges;
}

std::vector<int> VfioContainer::attached_groups() const {
  if (!state_) return {};
  std::lock_guard lock(state_->mutex);
  std::vector<int> numbers(state_->device_groups.begin(), state_->device_groups.end());
  for (const auto& group : state_->groups) numbers.push_back(group.number);
  return numbers;
}

int VfioContainer::fd() const {
  if (!state_) return -1;
  std::lock_guard lock(state_->mutex);
  return state_->fd.get();
}

namespace {

// Opens the device in the container and records it as open there.
Result<void> open_and_register(detail::VfioContainerState& state, detail::VfioDeviceState& device) {
  // One thread at a time attaches groups and sets the IOMMU model.
  std::lock_guard lock(state.mutex);
  if (state.open_devices.contains(device.bdf)) {
    return std::unexpected(make_error(Errc::busy, "open through VFIO", device.bdf.to_string(),
                                      "the device is already open in this container",
                                      "use the VfioDevice that is open (it may be shared between threads), or "
                                      "destroy it and everything opened from it first"));
  }
  if (auto opened = state.mode->open_device(state, device); !opened) return opened;
  state.backend_fixed = true;
  state.open_devices.insert(device.bdf);
  device.registered = true;
  return {};
}

// A new owner must not inherit a device still doing what a previous (perhaps killed)
// owner started: reset it when it can be, and leave bus mastering off until the driver
// has set the device up (DPDK resets on setup too).
Result<void> quiesce_for_new_owner(VfioDevice& opened, const VfioDeviceOptions& options) {
  if (options.reset_on_open && opened.reset_supported()) {
    if (auto reset = opened.reset(); !reset) {
      Error error = reset.error();
      error.operation = "reset on open: " + error.operation;
      error.hint = "the device may still be busy with a previous owner's work; retry, or check dmesg";
      return std::unexpected(error);
    }
  }
  return opened.enable_bus_master(false);
}

}  // namespace

Result<VfioDevice> VfioContainer::open_device(const Bdf& bdf, const VfioDeviceOptions& options) {
  if (!state_) {
    return std::unexpected(make_error(Errc::invalid_argument, "open through VFIO", bdf.to_string(),
                                      "the container is empty (default-constructed or moved from)",
                                      "open one with VfioContainer::open and move it in"));
  }
  const std::string name = bdf.to_string();
  auto device = std::make_shared<detail::VfioDeviceState>();
  device->container = state_;
  device->bdf = bdf;
  if (auto registered = open_and_register(*state_, *device); !registered) return std::unexpected(registered.error());
  auto queried = sys::vfio::device_info(device->fd.get(), name);
  if (!queried) return std::unexpected(queried.error());
  const vfio_device_info info = *queried;
  if (!(info.flags & VFIO_DEVICE_FLAGS_PCI)) {
    return std::unexpected(make_error(Errc::not_supported, "open through VFIO", name, "not a vfio-pci device"));
  }
  VfioDevice opened(std::move(device), info.num_regions, info.num_irqs, (info.flags & VFIO_DEVICE_FLAGS_RESET) != 0);
  if (auto quiet = quiesce_for_new_owner(opened, options); !quiet) return std::unexpected(quiet.error());
  return opened;
}

}  // namespace pcie
