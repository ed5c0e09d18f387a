#include "src/sys/vfio_ioctls.h"

#include "src/sys/ioctl.h"

#include <fcntl.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>

namespace pcie::sys::vfio {
namespace {

using sys::checked_ioctl;
using sys::ioctl_error;

// Calls an "info with capabilities" ioctl whose structure starts with argsz: once with the
// base size, then again with the size the kernel reported if the capabilities need more.
// The kernel's answer is bounded (64 KiB) since it sizes our allocation.
template <class Info>
Result<std::vector<std::byte>> info_with_capabilities(int fd, unsigned long request, Info base,
                                                      const char* operation, const std::string& object) {
  constexpr std::uint32_t kMaxInfoBytes = 64 * 1024;
  std::vector<std::byte> buffer(sizeof(Info));
  base.argsz = sizeof(Info);
  std::memcpy(buffer.data(), &base, sizeof(Info));
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (const int result = checked_ioctl(fd, request, buffer.data()); result < 0) {
      return std::unexpected(ioctl_error(result, operation, object));
    }
    Info answered;
    std::memcpy(&answered, buffer.data(), sizeof(Info));
    if (answered.argsz <= buffer.size()) return buffer;
    if (answered.argsz > kMaxInfoBytes) {
      return std::unexpected(make_error(Errc::malformed, operation, object,
                                        "the kernel asked for " + std::to_string(answered.argsz) + " bytes"));
    }
    buffer.assign(answered.argsz, std::byte{0});
    base.argsz = answered.argsz;
    std::memcpy(buffer.data(), &base, sizeof(Info));
  }
  return std::unexpected(make_error(Errc::malformed, operation, object, "the info size kept growing"));
}

std::string fmt_iova(std::uint64_t iova, std::uint64_t size) {
  char text[64];
  std::snprintf(text, sizeof text, "IOVA 0x%llx+0x%llx", static_cast<unsigned long long>(iova),
                static_cast<unsigned long long>(size));
  return text;
}

}  // namespace

Result<int> get_api_version(int container_fd) {
  const int result = checked_ioctl(container_fd, VFIO_GET_API_VERSION, 0ul);
  if (result < 0) return std::unexpected(ioctl_error(result, "VFIO_GET_API_VERSION", "/dev/vfio/vfio"));
  return result;
}

Result<bool> check_extension(int container_fd, unsigned long extension) {
  const int result = checked_ioctl(container_fd, VFIO_CHECK_EXTENSION, extension);
  if (result < 0) return std::unexpected(ioctl_error(result, "VFIO_CHECK_EXTENSION", "/dev/vfio/vfio"));
  return result > 0;
}

Result<std::uint32_t> group_status(int group_fd, const std::string& group_name) {
  vfio_group_status status{};
  status.argsz = sizeof status;
  if (const int result = checked_ioctl(group_fd, VFIO_GROUP_GET_STATUS, &status); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_GROUP_GET_STATUS", group_name));
  }
  return status.flags;
}

Result<void> group_set_container(int group_fd, int container_fd, const std::string& group_name) {
  if (const int result = checked_ioctl(group_fd, VFIO_GROUP_SET_CONTAINER, &container_fd); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_GROUP_SET_CONTAINER", group_name));
  }
  return {};
}

Result<void> set_iommu(int container_fd, unsigned long iommu_type) {
  if (const int result = checked_ioctl(container_fd, VFIO_SET_IOMMU, iommu_type); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_SET_IOMMU", "/dev/vfio/vfio"));
  }
  return {};
}

Result<std::vector<std::byte>> iommu_info(int container_fd) {
  return info_with_capabilities(container_fd, VFIO_IOMMU_GET_INFO, vfio_iommu_type1_info{},
                                "VFIO_IOMMU_GET_INFO", "/dev/vfio/vfio");
}

Result<UniqueFd> group_get_device_fd(int group_fd, const std::string& bdf) {
  const int result = checked_ioctl(group_fd, VFIO_GROUP_GET_DEVICE_FD, const_cast<char*>(bdf.c_str()));
  // An open, not an I/O: ENODEV here is "no such device in the group" (not_found).
  if (result < 0) return std::unexpected(make_errno_error(-result, "VFIO_GROUP_GET_DEVICE_FD", bdf));
  return UniqueFd(result);
}

Result<vfio_device_info> device_info(int device_fd, const std::string& bdf) {
  vfio_device_info info{};
  info.argsz = sizeof info;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_GET_INFO, &info); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_GET_INFO", bdf));
  }
  return info;
}

Result<std::vector<std::byte>> region_info(int device_fd, std::uint32_t index, const std::string& bdf) {
  vfio_region_info base{};
  base.index = index;
  return info_with_capabilities(device_fd, VFIO_DEVICE_GET_REGION_INFO, base, "VFIO_DEVICE_GET_REGION_INFO",
                                bdf + " region " + std::to_string(index));
}

Result<vfio_irq_info> irq_info(int device_fd, std::uint32_t index, const std::string& bdf) {
  vfio_irq_info info{};
  info.argsz = sizeof info;
  info.index = index;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_GET_IRQ_INFO, &info); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_GET_IRQ_INFO", bdf + " IRQ index " + std::to_string(index)));
  }
  return info;
}

Result<void> set_irq_eventfds_from(int device_fd, std::uint32_t index, std::uint32_t start,
                                   const std::vector<int>& eventfds, const std::string& bdf) {
  // struct vfio_irq_set ends in a flexible array of eventfds.
  std::vector<std::byte> buffer(sizeof(vfio_irq_set) + eventfds.size() * sizeof(std::int32_t));
  vfio_irq_set set{};
  set.argsz = static_cast<std::uint32_t>(buffer.size());
  set.flags = (eventfds.empty() ? VFIO_IRQ_SET_DATA_NONE : VFIO_IRQ_SET_DATA_EVENTFD) | VFIO_IRQ_SET_ACTION_TRIGGER;
  set.index = index;
  set.start = start;
  set.count = static_cast<std::uint32_t>(eventfds.size());
  std::memcpy(buffer.data(), &set, sizeof set);
  for (std::size_t i = 0; i < eventfds.size(); ++i) {
    const std::int32_t fd = eventfds[i];
    std::memcpy(buffer.data() + sizeof set + i * sizeof fd, &fd, sizeof fd);
  }
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_SET_IRQS, buffer.data()); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_SET_IRQS", bdf + " IRQ index " + std::to_string(index)));
  }
  return {};
}

Result<void> set_irq_eventfds(int device_fd, std::uint32_t index, const std::vector<int>& eventfds,
                              const std::string& bdf) {
  return set_irq_eventfds_from(device_fd, index, 0, eventfds, bdf);
}

namespace {
Result<void> mask_action(int device_fd, std::uint32_t index, std::uint32_t action, const char* operation,
                         const std::string& bdf) {
  vfio_irq_set set{};
  set.argsz = sizeof set;
  set.flags = VFIO_IRQ_SET_DATA_NONE | action;
  set.index = index;
  set.start = 0;
  set.count = 1;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_SET_IRQS, &set); result < 0) {
    return std::unexpected(ioctl_error(result, operation, bdf + " IRQ index " + std::to_string(index)));
  }
  return {};
}
}  // namespace

Result<void> unmask_irq(int device_fd, std::uint32_t index, const std::string& bdf) {
  return mask_action(device_fd, index, VFIO_IRQ_SET_ACTION_UNMASK, "unmask IRQ", bdf);
}

Result<void> mask_irq(int device_fd, std::uint32_t index, const std::string& bdf) {
  return mask_action(device_fd, index, VFIO_IRQ_SET_ACTION_MASK, "mask IRQ", bdf);
}

Result<void> reset_device(int device_fd, const std::string& bdf) {
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_RESET, 0ul); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_RESET", bdf));
  }
  return {};
}

Result<UniqueFd> export_dma_buf(int device_fd, std::uint32_t region_index, std::uint64_t offset,
                                std::uint64_t length, const std::string& name) {
  return export_dma_buf_with(
      [device_fd](unsigned long request, void* argument) { return checked_ioctl(device_fd, request, argument); },
      region_index, offset, length, name);
}

Result<UniqueFd> export_dma_buf_with(const IoctlCall& call, std::uint32_t region_index, std::uint64_t offset,
                                     std::uint64_t length, const std::string& name) {
  // vfio_device_feature, then vfio_device_feature_dma_buf with one range, in one buffer
  // (both end in flexible arrays, so they are laid out by hand).
  constexpr std::size_t kHeader = sizeof(vfio_device_feature);
  constexpr std::size_t kRequest = sizeof(vfio_device_feature_dma_buf);
  constexpr std::size_t kBytes = kHeader + kRequest + sizeof(vfio_region_dma_range);
  alignas(8) std::byte argument[kBytes] = {};
  vfio_device_feature feature{};
  feature.argsz = kBytes;
  feature.flags = VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_DMA_BUF;
  vfio_device_feature_dma_buf request{};
  request.region_index = region_index;
  request.open_flags = O_RDWR | O_CLOEXEC;
  request.nr_ranges = 1;
  const vfio_region_dma_range range{.offset = offset, .length = length};
  std::memcpy(argument, &feature, kHeader);
  std::memcpy(argument + kHeader, &request, kRequest);
  std::memcpy(argument + kHeader + kRequest, &range, sizeof range);
  const int result = call(VFIO_DEVICE_FEATURE, static_cast<void*>(argument));
  if (result < 0) {
    Error error = ioctl_error(result, "VFIO_DEVICE_FEATURE_DMA_BUF", name);
    if (result == -ENOTTY) {
      error.code = Errc::not_supported;
      error.hint = "the kernel cannot export a BAR as a dma-buf (Linux 6.19 and later, built with "
                   "CONFIG_PCI_P2PDMA and CONFIG_DMA_SHARED_BUFFER): use a newer kernel, or the type1 "
                   "backend (PCIE_VFIO_BACKEND=type1), which maps the BAR's mapping itself";
    } else if (result == -EOPNOTSUPP) {
      error.code = Errc::not_supported;
      error.hint = "the device's VFIO driver (a vendor variant of vfio-pci) does not export its BARs: use the "
                   "type1 backend (PCIE_VFIO_BACKEND=type1)";
    } else if (result == -ENODEV) {
      // vfio-pci answers ENODEV while the device does not decode memory (Memory Space
      // Enable off) or the BAR has no resource: not a removal.
      error.code = Errc::device_disabled;
      error.hint = "turn on the device's memory decoding (Memory Space Enable in its command register), or check "
                   "that the BAR was given an address";
    }
    return std::unexpected(error);
  }
  return UniqueFd(result);
}

Result<void> map_dma(int container_fd, std::uint64_t vaddr, std::uint64_t iova, std::uint64_t size, bool device_reads,
                     bool device_writes) {
  vfio_iommu_type1_dma_map map{};
  map.argsz = sizeof map;
  map.flags = (device_reads ? VFIO_DMA_MAP_FLAG_READ : 0) | (device_writes ? VFIO_DMA_MAP_FLAG_WRITE : 0);
  map.vaddr = vaddr;
  map.iova = iova;
  map.size = size;
  if (const int result = checked_ioctl(container_fd, VFIO_IOMMU_MAP_DMA, &map); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_IOMMU_MAP_DMA", fmt_iova(iova, size)));
  }
  return {};
}

Result<std::uint64_t> unmap_dma(int container_fd, std::uint64_t iova, std::uint64_t size) {
  vfio_iommu_type1_dma_unmap unmap{};
  unmap.argsz = sizeof unmap;
  unmap.iova = iova;
  unmap.size = size;
  if (const int result = checked_ioctl(container_fd, VFIO_IOMMU_UNMAP_DMA, &unmap); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_IOMMU_UNMAP_DMA", fmt_iova(iova, size)));
  }
  return unmap.size;
}

}  // namespace pcie::sys::vfio
