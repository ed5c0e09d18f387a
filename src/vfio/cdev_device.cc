#include "src/vfio/cdev_device.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <algorithm>

#include "src/pci/sysfs_links.h"
#include "src/sys/iommufd_ioctls.h"
#include "src/sys/syscalls.h"
#include "src/vfio/diagnosis.h"

namespace pcie::detail {
namespace {

constexpr std::string_view kNoiommuPrefix = "noiommu-";

// "vfio12", or "noiommu-vfio12" for a device in VFIO's no-IOMMU mode: the cdev's name as
// <device>/vfio-dev/ lists it (drivers/vfio/vfio_main.c names it).
bool is_cdev_name(std::string_view name) {
  if (name.starts_with(kNoiommuPrefix)) name.remove_prefix(kNoiommuPrefix.size());
  return name.size() > 4 && name.starts_with("vfio") &&
         std::all_of(name.begin() + 4, name.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string group_node(const VfioContainerState& state, int group) {
  return state.paths.dev_vfio + "/" + std::to_string(group);
}

// Why IOMMUFD_DEVICE_BIND refused the device: a group that is not viable, or an owner already.
Error explain_bind_failure(const VfioContainerState& state, const Bdf& bdf, const Error& raw) {
  const int code = raw.sys_errno;
  const VfioFailureContext context = vfio_detail::failure_context(state.paths, bdf);
  const bool viable = std::all_of(context.members.begin(), context.members.end(), vfio_member_allows_viability);
  if (!viable) {
    // iommufd claims DMA ownership of the whole group (iommu_device_claim_dma_owner),
    // which a device bound to a kernel driver in the same group forbids (EPERM on 6.12).
    return explain_vfio_failure(raw, "viable", context);
  }
  if (code == EBUSY || code == EINVAL) {
    // EINVAL: the device is open through another cdev (vfio_df_open allows one opener
    // there); EBUSY: its group node is open (vfio_device_block_group).
    Error error = raw;
    error.code = Errc::busy;
    error.reason = fmt::format("{} is already open (another process, or another container in this one, holds it "
                               "through its cdev or its group)",
                               bdf.to_string());
    error.hint = fmt::format("a device has one owner; find the holder with `fuser {}/devices/* {}`",
                             state.paths.dev_vfio,
                             context.group ? group_node(state, *context.group) : state.paths.dev_vfio + "/*");
    return error;
  }
  return raw;
}

Error explain_attach_failure(Error error) {
  if (error.sys_errno == EADDRINUSE) {
    error.reason = "the device reserves IOVAs that buffers mapped in this container already use";
    error.hint = "open every device of the container before allocating DMA buffers";
  }
  return error;
}

// Reads the IOAS's usable IOVA ranges into `state`, and keeps its IOVA allocator within them.
Result<void> take_iova_ranges(VfioContainerState& state) {
  auto ranges = sys::iommufd::ioas_iova_ranges(state.fd.get(), state.ioas);
  if (!ranges) return std::unexpected(ranges.error());
  state.iova_ranges = ranges->ranges;
  state.iova_alignment = ranges->alignment;
  if (state.iovas) {
    state.iovas->restrict_to(state.iova_ranges);
  } else if (!state.iova_ranges.empty()) {
    state.iovas.emplace(state.iova_ranges);
  }
  return {};
}

}  // namespace

bool is_noiommu_cdev(std::string_view node) {
  const std::size_t slash = node.rfind('/');
  return node.substr(slash == std::string_view::npos ? 0 : slash + 1).starts_with(kNoiommuPrefix);
}

Result<std::string> find_device_cdev(const VfioPaths& paths, const Bdf& bdf) {
  const std::string name = bdf.to_string();
  const std::string device_dir = paths.sysfs.device_dir(bdf);
  if (!sys::path_exists(device_dir)) {
    return std::unexpected(make_error(Errc::not_found, "open through VFIO", name, "no such device"));
  }
  const VfioFailureContext context = vfio_detail::failure_context(paths, bdf);
  if (!context.group) {
    return std::unexpected(
        explain_vfio_failure(make_error(Errc::not_supported, "open through VFIO", name, ""), "group", context));
  }
  auto entries = sys::list_directory(device_dir + "/vfio-dev");
  std::vector<std::string> cdevs;
  if (entries) std::copy_if(entries->begin(), entries->end(), std::back_inserter(cdevs), is_cdev_name);
  if (cdevs.size() != 1) {
    if (context.driver.value_or("") != "vfio-pci") {
      return std::unexpected(explain_vfio_failure(
          make_error(Errc::not_found, "open through VFIO", name, "no VFIO cdev"), "device", context));
    }
    return std::unexpected(make_error(
        Errc::not_supported, "open through VFIO (iommufd)", name,
        cdevs.empty() ? fmt::format("vfio-pci gives the device no cdev ({}/vfio-dev/ is missing or empty): the kernel "
                                    "is built without VFIO_DEVICE_CDEV",
                                    device_dir)
                      : fmt::format("sysfs names {} cdevs for the device in {}/vfio-dev/", cdevs.size(), device_dir),
        "use the type1 backend (PCIE_VFIO_BACKEND=type1)"));
  }
  if (!sys::path_exists(device_dir + "/vfio-dev/" + cdevs.front() + "/dev")) {
    // Linux 6.1 to 6.5 list the VFIO device in sysfs without a device number or node.
    return std::unexpected(make_error(Errc::not_supported, "open through VFIO (iommufd)", name,
                                      fmt::format("the kernel gives {} no cdev ({}/vfio-dev/{} has no device number): "
                                                  "device cdevs need Linux 6.6 or later with VFIO_DEVICE_CDEV",
                                                  name, device_dir, cdevs.front()),
                                      "use the type1 backend (PCIE_VFIO_BACKEND=type1)"));
  }
  return paths.dev_vfio + "/devices/" + cdevs.front();
}

Result<UniqueFd> open_device_cdev(const VfioContainerState& state, const Bdf& bdf, bool without_iommu) {
  const std::string name = bdf.to_string();
  auto found = find_device_cdev(state.paths, bdf);
  if (!found) return std::unexpected(found.error());
  const std::string& node = *found;
  if (is_noiommu_cdev(node) != without_iommu) {
    return std::unexpected(
        without_iommu
            ? make_error(Errc::invalid_argument, "open through VFIO without an IOMMU", name,
                         fmt::format("the device is behind an IOMMU ({} is not a noiommu- cdev)", node),
                         "open it in a container with an IOMMU (VfioContainer::open)")
            : make_error(Errc::invalid_argument, "open through VFIO (iommufd)", name,
                         fmt::format("the device has no IOMMU: it is in VFIO's no-IOMMU mode ({})", node),
                         "open it in a container from VfioContainer::open_without_iommu, accepting that it can "
                         "reach all of memory"));
  }
  auto fd = sys::open_file(node, O_RDWR, "open VFIO device cdev");
  if (fd) return std::move(*fd);
  Error error = fd.error();
  error.object = fmt::format("{} ({})", node, name);
  if (error.code == Errc::not_found) {
    error.hint = fmt::format("sysfs names the cdev but {} has no node for it: is /dev a devtmpfs?",
                             state.paths.dev_vfio + "/devices");
  } else if (error.code == Errc::permission_denied && is_noiommu_cdev(node)) {
    // vfio_device_fops_cdev_open: a device without an IOMMU is for CAP_SYS_RAWIO alone.
    error.hint = "a device in VFIO's no-IOMMU mode can reach all of memory: only root (CAP_SYS_RAWIO) may open it";
  } else if (error.code == Errc::permission_denied) {
    error.hint = fmt::format("run as root, or have root give you both {} and {} (chown); or use the type1 backend "
                             "(PCIE_VFIO_BACKEND=type1) with the group given to you: sudo pciectl vfio grant {} $USER",
                             node, state.paths.dev_iommu, name);
  } else if (error.code == Errc::busy) {
    error.reason = fmt::format("{} is already open (another process holds it)", name);
    const std::optional<int> group = sysfs::device_iommu_group(state.paths.sysfs, bdf);
    error.hint = fmt::format("find the holder with `fuser {} {}`", node,
                             group ? group_node(state, *group) : state.paths.dev_vfio + "/*");
  }
  return std::unexpected(error);
}

Result<std::uint32_t> bind_and_attach(VfioContainerState& state, int device_fd, const Bdf& bdf,
                                      std::uint32_t* owned_page_table) {
  const std::string name = bdf.to_string();
  auto device_id = sys::iommufd::device_bind(device_fd, state.fd.get(), name);
  if (!device_id) return std::unexpected(explain_bind_failure(state, bdf, device_id.error()));
  if (owned_page_table != nullptr && *owned_page_table == 0) {
    auto made = sys::iommufd::hwpt_alloc(state.fd.get(), *device_id, state.ioas, name);
    if (!made) return std::unexpected(made.error());
    *owned_page_table = *made;
  }
  auto attached = sys::iommufd::device_attach(device_fd, owned_page_table != nullptr ? *owned_page_table : state.ioas,
                                              name);
  if (!attached) return std::unexpected(explain_attach_failure(attached.error()));
  if (auto ranges = take_iova_ranges(state); !ranges) return std::unexpected(ranges.error());
  return *device_id;
}

Result<void> take_device_cdev(VfioContainerState& state, VfioDeviceState& device, UniqueFd fd,
                              std::uint32_t* owned_page_table) {
  auto device_id = bind_and_attach(state, fd.get(), device.bdf, owned_page_table);
  if (!device_id) return std::unexpected(device_id.error());
  device.fd = std::move(fd);
  device.iommufd_device_id = *device_id;
  device.group = sysfs::device_iommu_group(state.paths.sysfs, device.bdf).value_or(-1);
  if (device.group >= 0) state.device_groups.insert(device.group);
  return {};
}

}  // namespace pcie::detail
