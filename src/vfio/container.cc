// VfioContainer: the IOMMU context (type1: /dev/vfio/vfio and the groups attached to it;
// iommufd: /dev/iommu and its IOAS), and opening devices in it.
#include <fcntl.h>
#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "pcie/config_space.h"
#include "pcie/vfio.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/backend_choice.h"
#include "src/vfio/capability_chain.h"
#include "src/vfio/cdev_device.h"
#include "src/vfio/diagnosis.h"
#include "src/vfio/state.h"

namespace pcie {
namespace {

// The IOVA ranges the IOMMU reports; empty when the kernel does not report them (before
// Linux 5.4), an error when the ioctl itself fails.
Result<std::vector<IovaRange>> read_iova_ranges(int container_fd) {
  std::vector<IovaRange> ranges;
  auto info = sys::vfio::iommu_info(container_fd);
  if (!info) return std::unexpected(info.error());
  vfio_iommu_type1_info base;
  std::memcpy(&base, info->data(), sizeof base);
  if (!(base.flags & VFIO_IOMMU_INFO_CAPS)) return ranges;
  const auto at = vfio_detail::find_capability(*info, base.cap_offset, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                                               sizeof(vfio_iommu_type1_info_cap_iova_range));
  if (!at) return ranges;
  vfio_iommu_type1_info_cap_iova_range capability;
  std::memcpy(&capability, info->data() + *at, sizeof capability);
  for (const vfio_iova_range& range :
       vfio_detail::capability_entries<vfio_iova_range>(*info, *at + sizeof capability, capability.nr_iovas)) {
    ranges.push_back({range.start, range.end});
  }
  return ranges;
}

struct AttachedGroup {
  int number = -1;
  int fd = -1;  // owned by the container state
};

// The device's IOMMU group number; the error tells a missing device from one without a group.
Result<int> group_of(const detail::VfioContainerState& state, const Bdf& bdf) {
  const auto group = sysfs::device_iommu_group(state.paths.sysfs, bdf);
  if (group) return *group;
  if (!sys::path_exists(state.paths.sysfs.device_dir(bdf))) {
    return std::unexpected(make_error(Errc::not_found, "open through VFIO", bdf.to_string(), "no such device"));
  }
  return std::unexpected(explain_vfio_failure(make_error(Errc::not_supported, "open through VFIO", bdf.to_string(), ""),
                                              "group", vfio_detail::failure_context(state.paths, bdf)));
}

// No-IOMMU groups have nodes of their own (drivers/vfio/group.c: "noiommu-N"), so that
// no program opens one by mistake.
std::string group_node(const VfioPaths& paths, int group, bool without_iommu) {
  return paths.dev_vfio + "/" + (without_iommu ? "noiommu-" : "") + std::to_string(group);
}

// A group node that would not open: the node of the other kind existing means the user
// picked the wrong container kind, which the hint says how to fix.
Error group_open_error(const detail::VfioContainerState& state, const Bdf& bdf, int group, Error error) {
  const bool without_iommu = state.physical_backend != nullptr;
  const std::string other = group_node(state.paths, group, !without_iommu);
  if (error.code == Errc::not_found && sys::path_exists(other)) {
    error.code = Errc::not_supported;
    error.reason = without_iommu ? "the device is behind an IOMMU (its group is " + other + ")"
                                 : "the device has no IOMMU: its group is the no-IOMMU group " + other;
    error.hint = without_iommu ? "open it with VfioContainer::open(), which keeps the IOMMU between it and memory"
                               : "open it with VfioContainer::open_without_iommu(), accepting that the device "
                                 "can reach all of memory, or boot with the IOMMU on (intel_iommu=on)";
    return error;
  }
  if (error.code == Errc::permission_denied && without_iommu) {
    error.hint = "no-IOMMU groups are root's, and using one needs CAP_SYS_RAWIO: run as root";
    return error;
  }
  if (error.code == Errc::not_found && without_iommu) {
    error.hint = "bind the device to vfio-pci after enabling no-IOMMU mode "
                 "(echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)";
    return error;
  }
  return explain_vfio_failure(error, "group", vfio_detail::failure_context(state.paths, bdf));
}

// Read again for each group: a later one may reserve more (its own MSI window, RMRRs).
Result<void> refresh_iova_ranges(detail::VfioContainerState& state) {
  auto ranges = read_iova_ranges(state.fd.get());
  if (!ranges) return std::unexpected(ranges.error());
  state.iova_ranges = std::move(*ranges);
  if (state.iovas) {
    state.iovas->restrict_to(state.iova_ranges);
  } else if (!state.iova_ranges.empty()) {
    state.iovas.emplace(state.iova_ranges);
  }
  return {};
}

// The IOMMU model is chosen once, after the first group is attached (vfio.rst). Called
// before the new group joins state.groups.
Result<void> set_iommu_model(detail::VfioContainerState& state) {
  if (state.physical_backend != nullptr) {
    if (!state.groups.empty()) return {};
    if (auto set = sys::vfio::set_iommu(state.fd.get(), VFIO_NOIOMMU_IOMMU); !set) {
      Error error = set.error();
      if (error.code == Errc::permission_denied) {
        error.hint = "no-IOMMU mode needs CAP_SYS_RAWIO (run as root)";
      }
      return std::unexpected(error);
    }
    return {};
  }
  if (state.groups.empty()) {
    if (auto set = sys::vfio::set_iommu(state.fd.get(), VFIO_TYPE1v2_IOMMU); !set) return std::unexpected(set.error());
  }
  return refresh_iova_ranges(state);
}

// The device's group, attached to the container (opened now or earlier). Called with the
// state's mutex held.
Result<AttachedGroup> attach_group(detail::VfioContainerState& state, const Bdf& bdf) {
  const auto group = group_of(state, bdf);
  if (!group) return std::unexpected(group.error());
  for (const auto& attached : state.groups) {
    if (attached.number == *group) return AttachedGroup{attached.number, attached.fd.get()};
  }
  const std::string node = group_node(state.paths, *group, state.physical_backend != nullptr);
  auto fd = sys::open_file(node, O_RDWR, "open VFIO group");
  if (!fd) return std::unexpected(group_open_error(state, bdf, *group, fd.error()));

  auto flags = sys::vfio::group_status(fd->get(), node);
  if (!flags) return std::unexpected(flags.error());
  if (!(*flags & VFIO_GROUP_FLAGS_VIABLE)) {
    return std::unexpected(explain_vfio_failure(make_error(Errc::busy, "open VFIO group", node, ""), "viable",
                                                vfio_detail::failure_context(state.paths, bdf)));
  }
  if (auto attached = sys::vfio::group_set_container(fd->get(), state.fd.get(), node); !attached) {
    return std::unexpected(attached.error());
  }
  if (auto model = set_iommu_model(state); !model) return std::unexpected(model.error());
  state.groups.push_back({*group, std::move(*fd)});
  return AttachedGroup{*group, state.groups.back().fd.get()};
}

}  // namespace

VfioContainer::VfioContainer(std::shared_ptr<detail::VfioContainerState> state) : state_(std::move(state)) {}
VfioContainer::VfioContainer(VfioContainer&&) noexcept = default;
VfioContainer& VfioContainer::operator=(VfioContainer&&) noexcept = default;
VfioContainer::~VfioContainer() = default;

namespace {

Result<UniqueFd> open_container_node(const VfioPaths& paths) {
  const std::string node = paths.dev_vfio + "/vfio";
  auto fd = sys::open_file(node, O_RDWR, "open VFIO container");
  if (!fd) {
    Error error = fd.error();
    if (error.code == Errc::not_found) {
      error.hint = "load the VFIO modules: modprobe vfio-pci";
    } else if (error.code == Errc::permission_denied) {
      error.hint = fmt::format("{} is normally open to every user (mode 0666): check it with ls -l {}; then the "
                               "group node /dev/vfio/N must be yours (chown), or run as root",
                               node, node);
    }
    return std::unexpected(error);
  }
  auto version = sys::vfio::get_api_version(fd->get());
  if (!version) return std::unexpected(version.error());
  if (*version != VFIO_API_VERSION) {
    return std::unexpected(make_error(Errc::not_supported, "open VFIO container", node,
                                      fmt::format("VFIO API version {}, expected {}", *version, VFIO_API_VERSION)));
  }
  return std::move(*fd);
}

// /dev/vfio/vfio with the type1v2 IOMMU model on offer.
Result<UniqueFd> open_type1_container(const VfioPaths& paths) {
  const std::string node = paths.dev_vfio + "/vfio";
  auto fd = open_container_node(paths);
  if (!fd) return std::unexpected(fd.error());
  auto type1v2 = sys::vfio::check_extension(fd->get(), VFIO_TYPE1v2_IOMMU);
  if (!type1v2) return std::unexpected(type1v2.error());
  if (!*type1v2) {
    return std::unexpected(make_error(Errc::not_supported, "open VFIO container", node,
                                      "the kernel offers no type1v2 IOMMU model",
                                      "load vfio_iommu_type1 (modprobe vfio_iommu_type1)"));
  }
  return std::move(*fd);
}

}  // namespace

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
    return VfioContainer(std::move(state));
  }
  auto fd = open_type1_container(paths);
  if (!fd) return std::unexpected(fd.error());
  state->fd = std::move(*fd);
  return VfioContainer(std::move(state));
}

Result<VfioContainer> VfioContainer::open_without_iommu(DeviceMayReachAllMemory acknowledgement, const VfioPaths& paths,
                                                       const PhysicalDmaOptions& dma) {
  const std::string node = paths.dev_vfio + "/vfio";
  auto fd = open_container_node(paths);
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
  state->physical_backend = make_physical_dma_backend(acknowledgement, dma);
  state->requested = VfioIommuBackend::type1;
  state->choice = {VfioIommuBackend::type1, "type1: no-IOMMU mode (VFIO_NOIOMMU_IOMMU) is the container's"};
  state->backend_fixed = true;
  return VfioContainer(std::move(state));
}

bool VfioContainer::without_iommu() const { return state_ && state_->physical_backend != nullptr; }

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

// iommufd: the device through its cdev, bound and attached. An automatic choice of
// iommufd that cannot open the first device's cdev (not found, not this user's, none) turns the
// container into a type1 one, which may still reach the device through its group node.
// Returns false when it fell back (the caller goes on with type1). Called with the state's
// mutex held.
Result<bool> open_through_iommufd(detail::VfioContainerState& state, detail::VfioDeviceState& device) {
  const Bdf& bdf = device.bdf;
  auto fd = detail::open_device_cdev(state, bdf);
  if (!fd) {
    const bool may_fall_back = state.requested == VfioIommuBackend::automatic && !state.backend_fixed &&
                               detail::may_fall_back_to_type1(state.paths, bdf, fd.error());
    if (!may_fall_back) return std::unexpected(fd.error());
    auto type1 = open_type1_container(state.paths);
    if (!type1) return std::unexpected(fd.error());
    state.fd = std::move(*type1);
    state.ioas = 0;
    state.choice = {VfioIommuBackend::type1,
                    fmt::format("type1: iommufd was chosen, but the first device's cdev could not be opened ({}: {})",
                                fd.error().object, fd.error().reason)};
    return false;
  }
  auto device_id = detail::bind_and_attach(state, fd->get(), bdf);
  if (!device_id) return std::unexpected(device_id.error());
  device.fd = std::move(*fd);
  device.iommufd_device_id = *device_id;
  device.group = sysfs::device_iommu_group(state.paths.sysfs, bdf).value_or(-1);
  if (device.group >= 0) state.device_groups.insert(device.group);
  return true;
}

// type1: the device through its group, attached to the container first. Called with the
// state's mutex held.
Result<void> open_through_group(detail::VfioContainerState& state, detail::VfioDeviceState& device) {
  auto group = attach_group(state, device.bdf);
  if (!group) return std::unexpected(group.error());
  auto fd = sys::vfio::group_get_device_fd(group->fd, device.bdf.to_string());
  if (!fd) {
    return std::unexpected(explain_vfio_failure(fd.error(), "device", vfio_detail::failure_context(state.paths, device.bdf)));
  }
  device.group = group->number;
  device.fd = std::move(*fd);
  return {};
}

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
  bool opened_through_iommufd = false;
  if (state.choice.backend == VfioIommuBackend::iommufd) {
    auto opened = open_through_iommufd(state, device);
    if (!opened) return std::unexpected(opened.error());
    opened_through_iommufd = *opened;
  }
  if (!opened_through_iommufd) {
    if (auto opened = open_through_group(state, device); !opened) return opened;
  }
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
