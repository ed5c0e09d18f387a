#include "src/vfio/backend_choice.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <cstdlib>

#include "src/pci/sysfs_links.h"
#include "src/sys/iommufd_ioctls.h"
#include "src/sys/syscalls.h"
#include "src/vfio/cdev_device.h"

namespace pcie {

std::string_view to_string(VfioIommuBackend backend) {
  switch (backend) {
    case VfioIommuBackend::automatic:
      return "auto";
    case VfioIommuBackend::type1:
      return "type1";
    case VfioIommuBackend::iommufd:
      return "iommufd";
  }
  return "?";
}

Result<VfioIommuBackend> parse_vfio_iommu_backend(std::string_view text) {
  if (text == "auto" || text == "automatic") return VfioIommuBackend::automatic;
  if (text == "type1") return VfioIommuBackend::type1;
  if (text == "iommufd") return VfioIommuBackend::iommufd;
  return std::unexpected(make_error(Errc::invalid_argument, "choose VFIO backend", std::string(text),
                                    "not a VFIO IOMMU backend", "use auto, type1 or iommufd"));
}

namespace detail {
namespace {

// The kernel gives vfio-pci devices cdevs (CONFIG_VFIO_DEVICE_CDEV, Linux 6.6): the
// vfio-dev class exists and its devices have device numbers ("dev"). Linux 6.1 to 6.5
// already list VFIO devices in that class, without numbers or nodes. With no VFIO device
// bound there is nothing to tell by; the first open_device finds out.
bool kernel_has_device_cdevs(const VfioPaths& paths) {
  if (!sys::path_exists(paths.vfio_dev_class)) return false;
  auto entries = sys::list_directory(paths.vfio_dev_class);
  if (!entries || entries->empty()) return true;
  return sys::path_exists(paths.vfio_dev_class + "/" + entries->front() + "/dev");
}

Error no_device_cdevs(const VfioPaths& paths) {
  return make_error(Errc::not_supported, "open iommufd", paths.vfio_dev_class,
                    "the kernel gives VFIO devices no cdevs (before Linux 6.6, no CONFIG_VFIO_DEVICE_CDEV, or vfio "
                    "not loaded), and iommufd reaches devices only through them",
                    "load vfio-pci (modprobe vfio-pci), or use the type1 backend (PCIE_VFIO_BACKEND=type1)");
}

}  // namespace

Result<IommufdContext> open_iommufd(const VfioPaths& paths) {
  auto fd = sys::open_file(paths.dev_iommu, O_RDWR, "open iommufd");
  if (!fd) {
    Error error = fd.error();
    if (error.code == Errc::not_found) {
      error.hint = "the kernel has no iommufd (CONFIG_IOMMUFD, Linux 6.2 or later) or its module is not loaded "
                   "(modprobe iommufd); the type1 backend (PCIE_VFIO_BACKEND=type1) works without it";
    } else if (error.code == Errc::permission_denied) {
      error.hint = fmt::format("{} is root's unless a udev rule gives it out: run as root, or use the type1 backend "
                               "(PCIE_VFIO_BACKEND=type1), whose group node root can give you (sudo pciectl vfio "
                               "grant BDF $USER)",
                               paths.dev_iommu);
    }
    return std::unexpected(error);
  }
  auto ioas = sys::iommufd::ioas_alloc(fd->get());
  if (!ioas) {
    Error error = ioas.error();
    error.object = paths.dev_iommu;
    if (error.sys_errno == ENOTTY) error.reason += " (not an iommufd node)";
    return std::unexpected(error);
  }
  return IommufdContext{std::move(*fd), *ioas};
}

bool may_fall_back_to_type1(const VfioPaths& paths, const Bdf& bdf, const Error& cdev_error) {
  const bool cdev_unusable = cdev_error.code == Errc::permission_denied || cdev_error.code == Errc::not_found ||
                             cdev_error.code == Errc::not_supported;
  return cdev_unusable && sysfs::device_driver(paths.sysfs, bdf).value_or(std::nullopt) == "vfio-pci";
}

namespace {

struct BackendRequest {
  VfioIommuBackend backend;
  std::string asked_by;  // who asked: the option, or the environment variable with its value
};

// options.backend, or where that is automatic, PCIE_VFIO_BACKEND when set and not empty.
Result<BackendRequest> requested_backend(const VfioContainerOptions& options) {
  BackendRequest request{options.backend, "VfioContainerOptions::backend"};
  if (request.backend != VfioIommuBackend::automatic) return request;
  const char* value = std::getenv(kVfioBackendVariable);
  if (value == nullptr || *value == '\0') return request;
  auto parsed = parse_vfio_iommu_backend(value);
  if (!parsed) {
    Error error = parsed.error();
    error.object = fmt::format("{}={}", kVfioBackendVariable, value);
    return std::unexpected(error);
  }
  return BackendRequest{*parsed, fmt::format("{}={}", kVfioBackendVariable, value)};
}

// Nothing asked for: iommufd where the kernel gives VFIO devices cdevs and /dev/iommu
// opens, type1 otherwise (saying why).
void choose_automatically(const VfioPaths& paths, ChosenBackend& chosen) {
  if (!kernel_has_device_cdevs(paths)) {
    chosen.choice = {VfioIommuBackend::type1,
                     fmt::format("type1: the kernel gives VFIO devices no cdevs (none in {}), which iommufd needs",
                                 paths.vfio_dev_class)};
    return;
  }
  auto context = open_iommufd(paths);
  if (!context) {
    chosen.choice = {VfioIommuBackend::type1, fmt::format("type1: iommufd unusable ({}: {})", context.error().object,
                                                              context.error().reason)};
    return;
  }
  chosen.iommufd = std::move(*context);
  chosen.choice = {VfioIommuBackend::iommufd,
                   fmt::format("iommufd: {} opens and the kernel gives VFIO devices cdevs", paths.dev_iommu)};
}

}  // namespace

Result<ChosenBackend> choose_backend(const VfioPaths& paths, const VfioContainerOptions& options) {
  auto request = requested_backend(options);
  if (!request) return std::unexpected(request.error());
  ChosenBackend chosen;
  chosen.requested = request->backend;
  switch (chosen.requested) {
    case VfioIommuBackend::type1:
      chosen.choice = {VfioIommuBackend::type1, fmt::format("type1: asked for ({})", request->asked_by)};
      return chosen;
    case VfioIommuBackend::iommufd: {
      auto context = open_iommufd(paths);
      if (!context) return std::unexpected(context.error());
      if (!kernel_has_device_cdevs(paths)) return std::unexpected(no_device_cdevs(paths));
      chosen.iommufd = std::move(*context);
      chosen.choice = {VfioIommuBackend::iommufd, fmt::format("iommufd: asked for ({})", request->asked_by)};
      return chosen;
    }
    case VfioIommuBackend::automatic:
      break;
  }
  choose_automatically(paths, chosen);
  return chosen;
}

Result<ChosenBackend> choose_noiommu_backend(const VfioPaths& paths, const VfioContainerOptions& options) {
  auto request = requested_backend(options);
  if (!request) return std::unexpected(request.error());
  ChosenBackend chosen;
  chosen.requested = request->backend;
  if (chosen.requested == VfioIommuBackend::type1) {
    chosen.choice = {VfioIommuBackend::type1,
                     fmt::format("type1: VFIO's group no-IOMMU mode (VFIO_NOIOMMU_IOMMU), asked for ({})",
                                 request->asked_by)};
    return chosen;
  }
  auto context = open_iommufd(paths);
  // Asked with length 0, a kernel that knows IOMMU_IOAS_NOIOMMU_GET_PA answers EINVAL (or
  // EPERM without CAP_SYS_RAWIO, which opening the device will report); one that does not
  // answers ENOTTY, or EOPNOTSUPP where it is built without iommufd's no-IOMMU mode.
  std::optional<Error> unusable;
  if (!context) {
    unusable = context.error();
  } else if (!kernel_has_device_cdevs(paths)) {
    unusable = no_device_cdevs(paths);
  } else if (auto probe = sys::iommufd::ioas_noiommu_physical(context->fd.get(), context->ioas, 0, 0);
             !probe && probe.error().code == Errc::not_supported) {
    unusable = probe.error();
  }
  if (!unusable) {
    chosen.iommufd = std::move(*context);
    chosen.choice = {VfioIommuBackend::iommufd,
                     chosen.requested == VfioIommuBackend::iommufd
                         ? fmt::format("iommufd without an IOMMU: asked for ({})", request->asked_by)
                         : fmt::format("iommufd without an IOMMU: {} opens and tells physical addresses "
                                       "(IOMMU_IOAS_NOIOMMU_GET_PA), and its IOAS pins buffers",
                                       paths.dev_iommu)};
    return chosen;
  }
  if (chosen.requested == VfioIommuBackend::iommufd) return std::unexpected(*unusable);
  chosen.choice = {VfioIommuBackend::type1,
                   fmt::format("type1: VFIO's group no-IOMMU mode (VFIO_NOIOMMU_IOMMU); iommufd cannot do without an "
                               "IOMMU here ({}: {})",
                               unusable->operation, unusable->reason)};
  return chosen;
}

}  // namespace detail

Result<VfioBackendChoice> choose_vfio_backend(const VfioPaths& paths, const VfioContainerOptions& options) {
  auto chosen = detail::choose_backend(paths, options);
  if (!chosen) return std::unexpected(chosen.error());
  return chosen->choice;
}

namespace {

// Whether vfio-pci has the device in no-IOMMU mode: its cdev is noiommu-vfioN, or its IOMMU
// group is the one VFIO made for it (drivers/vfio/group.c names it "vfio-noiommu").
bool in_noiommu_mode(const Bdf& bdf, const VfioPaths& paths) {
  if (auto node = detail::find_device_cdev(paths, bdf); node && detail::is_noiommu_cdev(*node)) return true;
  const std::optional<int> group = sysfs::device_iommu_group(paths.sysfs, bdf);
  if (!group) return false;
  auto name = sys::read_text_file(fmt::format("{}/{}/name", paths.iommu_groups, *group), 64);
  return name && (*name == "vfio-noiommu\n" || *name == "vfio-noiommu");
}

}  // namespace

Result<VfioBackendChoice> choose_vfio_backend_for(const Bdf& bdf, const VfioPaths& paths,
                                                  const VfioContainerOptions& options) {
  if (in_noiommu_mode(bdf, paths)) {
    auto chosen = detail::choose_noiommu_backend(paths, options);
    if (!chosen) return std::unexpected(chosen.error());
    chosen->choice.reason = fmt::format("{} (the device is in VFIO's no-IOMMU mode: VfioContainer::open_without_iommu)",
                                        chosen->choice.reason);
    return chosen->choice;
  }
  auto chosen = detail::choose_backend(paths, options);
  if (!chosen) return std::unexpected(chosen.error());
  if (chosen->requested != VfioIommuBackend::automatic || chosen->choice.backend != VfioIommuBackend::iommufd) {
    return chosen->choice;
  }
  // The same test as VfioContainer::open_device's fall back, without opening the node.
  auto usable = [&]() -> Result<void> {
    auto node = detail::find_device_cdev(paths, bdf);
    if (!node) return std::unexpected(node.error());
    return sys::check_read_write_access(*node, "open VFIO device cdev");
  }();
  if (!usable && detail::may_fall_back_to_type1(paths, bdf, usable.error())) {
    return VfioBackendChoice{
        VfioIommuBackend::type1,
        fmt::format("type1: iommufd would be chosen, but the device's cdev cannot be opened ({}: {})",
                    usable.error().object, usable.error().reason)};
  }
  return chosen->choice;
}

Result<std::string> vfio_device_cdev(const Bdf& bdf, const VfioPaths& paths) {
  return detail::find_device_cdev(paths, bdf);
}

}  // namespace pcie
