// The modes that attach a device's group to /dev/vfio/vfio (Documentation/driver-api/
// vfio.rst): type1v2, with the IOMMU between the devices and memory, and no-IOMMU, where
// the groups are named noiommu-N and buffers have physical addresses.
#include <fcntl.h>
#include <fmt/format.h>

#include <cstring>
#include <utility>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/capability_chain.h"
#include "src/vfio/diagnosis.h"
#include "src/vfio/iommu_mode.h"
#include "src/vfio/peer_mapping.h"
#include "src/vfio/state.h"
#include "src/vfio/type1_backend.h"

namespace pcie::detail {
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

struct AttachedGroup {
  int number = -1;
  int fd = -1;  // owned by the container state
};

// What the two group modes do differently: the group's node, the IOMMU model set once the
// first group is attached, and the hints of a group node that would not open.
class GroupMode : public IommuMode {
 public:
  Result<void> open_device(VfioContainerState& state, VfioDeviceState& device) final {
    auto group = attach_group(state, device.bdf);
    if (!group) return std::unexpected(group.error());
    auto fd = sys::vfio::group_get_device_fd(group->fd, device.bdf.to_string());
    if (!fd) {
      return std::unexpected(
          explain_vfio_failure(fd.error(), "device", vfio_detail::failure_context(state.paths, device.bdf)));
    }
    device.group = group->number;
    device.fd = std::move(*fd);
    return {};
  }

 protected:
  // The IOMMU model is chosen once, after the first group is attached (vfio.rst). Called
  // before the new group joins state.groups.
  virtual Result<void> set_iommu_model(VfioContainerState& state) = 0;

 private:
  // No-IOMMU groups have nodes of their own (drivers/vfio/group.c: "noiommu-N"), so that
  // no program opens one by mistake.
  std::string group_node(const VfioPaths& paths, int group, bool noiommu_node) const {
    return paths.dev_vfio + "/" + (noiommu_node ? "noiommu-" : "") + std::to_string(group);
  }

  // A group node that would not open: the node of the other kind existing means the user
  // picked the wrong container kind, which the hint says how to fix.
  Error group_open_error(const VfioContainerState& state, const Bdf& bdf, int group, Error error) const {
    const bool noiommu = without_iommu();
    const std::string other = group_node(state.paths, group, !noiommu);
    if (error.code == Errc::not_found && sys::path_exists(other)) {
      error.code = Errc::not_supported;
      error.reason = noiommu ? "the device is behind an IOMMU (its group is " + other + ")"
                             : "the device has no IOMMU: its group is the no-IOMMU group " + other;
      error.hint = noiommu ? "open it with VfioContainer::open(), which keeps the IOMMU between it and memory"
                           : "open it with VfioContainer::open_without_iommu(), accepting that the device "
                             "can reach all of memory, or boot with the IOMMU on (intel_iommu=on)";
      return error;
    }
    if (error.code == Errc::permission_denied && noiommu) {
      error.hint = "no-IOMMU groups are root's, and using one needs CAP_SYS_RAWIO: run as root";
      return error;
    }
    if (error.code == Errc::not_found && noiommu) {
      error.hint = "bind the device to vfio-pci after enabling no-IOMMU mode "
                   "(echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode)";
      return error;
    }
    return explain_vfio_failure(error, "group", vfio_detail::failure_context(state.paths, bdf));
  }

  // The device's group, attached to the container (opened now or earlier).
  Result<AttachedGroup> attach_group(VfioContainerState& state, const Bdf& bdf) {
    const auto group = group_of(state, bdf);
    if (!group) return std::unexpected(group.error());
    for (const auto& attached : state.groups) {
      if (attached.number == *group) return AttachedGroup{attached.number, attached.fd.get()};
    }
    const std::string node = group_node(state.paths, *group, without_iommu());
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
};

// Read again for each group: a later one may reserve more (its own MSI window, RMRRs).
Result<void> refresh_iova_ranges(VfioContainerState& state) {
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

class Type1Mode final : public GroupMode {
 public:
  bool without_iommu() const override { return false; }

  Result<std::shared_ptr<DmaBackend>> dma_backend(const std::shared_ptr<VfioContainerState>& state) override {
    if (!state->iovas) return std::unexpected(no_iova_ranges_error());
    return make_vfio_type1_backend(state);
  }

  Result<std::unique_ptr<PeerMapping>> map_peer_window(const std::shared_ptr<VfioContainerState>& state,
                                                       const PeerWindowRequest& request) override {
    auto backend = [&] {
      const std::lock_guard lock(state->mutex);
      return dma_backend(state);
    }();
    if (!backend) return std::unexpected(backend.error());
    return map_bar_through_iommu(std::move(*backend), request);
  }

 private:
  Result<void> set_iommu_model(VfioContainerState& state) override {
    if (state.groups.empty()) {
      if (auto set = sys::vfio::set_iommu(state.fd.get(), VFIO_TYPE1v2_IOMMU); !set) return std::unexpected(set.error());
    }
    return refresh_iova_ranges(state);
  }
};

class NoIommuMode final : public GroupMode {
 public:
  explicit NoIommuMode(std::shared_ptr<DmaBackend> physical) : physical_(std::move(physical)) {}

  bool without_iommu() const override { return true; }

  Result<std::shared_ptr<DmaBackend>> dma_backend(const std::shared_ptr<VfioContainerState>&) override {
    return physical_;
  }

  Result<std::unique_ptr<PeerMapping>> map_peer_window(const std::shared_ptr<VfioContainerState>& state,
                                                       const PeerWindowRequest& request) override {
    return map_bar_by_bus_address(*state, request);
  }

 private:
  Result<void> set_iommu_model(VfioContainerState& state) override {
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

  std::shared_ptr<DmaBackend> physical_;  // the backend the user acknowledged at open
};

}  // namespace

Error no_iova_ranges_error() {
  return make_error(Errc::not_supported, "create DMA allocator", "VFIO container", "no IOVA ranges known",
                    "open a device in the container first; if one is open, the kernel "
                    "does not report IOVA ranges (Linux 5.4 or later does)");
}

std::unique_ptr<IommuMode> make_type1_mode() { return std::make_unique<Type1Mode>(); }

std::unique_ptr<IommuMode> make_noiommu_mode(std::shared_ptr<DmaBackend> physical) {
  return std::make_unique<NoIommuMode>(std::move(physical));
}

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

}  // namespace pcie::detail
