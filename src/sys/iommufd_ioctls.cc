#include "src/sys/iommufd_ioctls.h"

#include <fmt/format.h>
#include <linux/iommufd.h>
#include <linux/vfio.h>
#include "src/sys/ioctl.h"

#include <bit>
#include <cerrno>

namespace pcie::sys::iommufd {
namespace {

using sys::checked_ioctl;
using sys::ioctl_error;

std::string ioas_name(std::uint32_t ioas) { return fmt::format("IOAS {}", ioas); }

std::string iova_name(std::uint32_t ioas, std::uint64_t iova, std::uint64_t length) {
  return fmt::format("IOAS {} IOVA {:#x}+{:#x}", ioas, iova, length);
}

// More ranges than any IOMMU reports (a few reserved regions cut the space into pieces):
// the count sizes our allocation, and it comes from the kernel.
constexpr std::uint32_t kMaxRanges = 65536;
// Each answer can differ from the last when devices attach meanwhile.
constexpr int kRangeAttempts = 4;

Result<IovaRanges> checked_ranges(const iommu_iova_range* ranges, std::uint32_t count, std::uint64_t alignment,
                                  std::uint32_t ioas) {
  const char* operation = "IOMMU_IOAS_IOVA_RANGES";
  if (alignment == 0 || !std::has_single_bit(alignment)) {
    return std::unexpected(make_error(Errc::malformed, operation, ioas_name(ioas),
                                      fmt::format("the kernel gave an IOVA alignment of {}", alignment)));
  }
  IovaRanges answer;
  answer.alignment = alignment;
  for (std::uint32_t i = 0; i < count; ++i) {
    const IovaRange range{ranges[i].start, ranges[i].last};
    if (range.last < range.start) {
      return std::unexpected(make_error(Errc::malformed, operation, ioas_name(ioas),
                                        fmt::format("range {} ends ({:#x}) before it starts ({:#x})", i, range.last,
                                                    range.start)));
    }
    if (!answer.ranges.empty() && range.start <= answer.ranges.back().last) {
      return std::unexpected(make_error(Errc::malformed, operation, ioas_name(ioas),
                                        fmt::format("range {} ({:#x}-{:#x}) is out of order or overlaps the one "
                                                    "before it ({:#x}-{:#x})",
                                                    i, range.start, range.last, answer.ranges.back().start,
                                                    answer.ranges.back().last)));
    }
    answer.ranges.push_back(range);
  }
  return answer;
}

}  // namespace

Result<std::uint32_t> ioas_alloc(int iommufd) {
  iommu_ioas_alloc argument{};
  argument.size = sizeof argument;
  if (const int result = checked_ioctl(iommufd, IOMMU_IOAS_ALLOC, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_IOAS_ALLOC", "/dev/iommu"));
  }
  return argument.out_ioas_id;
}

Result<void> destroy(int iommufd, std::uint32_t id) {
  iommu_destroy argument{};
  argument.size = sizeof argument;
  argument.id = id;
  if (const int result = checked_ioctl(iommufd, IOMMU_DESTROY, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_DESTROY", fmt::format("iommufd object {}", id)));
  }
  return {};
}

Result<IovaRanges> ioas_iova_ranges_with(const IoctlCall& call, std::uint32_t ioas) {
  std::vector<iommu_iova_range> ranges(4);
  for (int attempt = 0; attempt < kRangeAttempts; ++attempt) {
    iommu_ioas_iova_ranges argument{};
    argument.size = sizeof argument;
    argument.ioas_id = ioas;
    argument.num_iovas = static_cast<std::uint32_t>(ranges.size());
    argument.allowed_iovas = reinterpret_cast<std::uint64_t>(ranges.data());
    const std::uint32_t room = argument.num_iovas;
    const int result = call(IOMMU_IOAS_IOVA_RANGES, &argument);
    if (result == -EMSGSIZE) {
      if (argument.num_iovas <= room || argument.num_iovas > kMaxRanges) {
        return std::unexpected(make_error(Errc::malformed, "IOMMU_IOAS_IOVA_RANGES", ioas_name(ioas),
                                          fmt::format("the kernel said {} ranges do not fit in {}",
                                                      argument.num_iovas, room)));
      }
      ranges.resize(argument.num_iovas);
      continue;
    }
    if (result < 0) return std::unexpected(ioctl_error(result, "IOMMU_IOAS_IOVA_RANGES", ioas_name(ioas)));
    if (argument.num_iovas > room) {
      return std::unexpected(make_error(Errc::malformed, "IOMMU_IOAS_IOVA_RANGES", ioas_name(ioas),
                                        fmt::format("the kernel reported {} ranges in room for {}",
                                                    argument.num_iovas, room)));
    }
    return checked_ranges(ranges.data(), argument.num_iovas, argument.out_iova_alignment, ioas);
  }
  return std::unexpected(make_error(Errc::busy, "IOMMU_IOAS_IOVA_RANGES", ioas_name(ioas),
                                    fmt::format("the number of ranges changed on each of {} reads", kRangeAttempts),
                                    "devices are being attached to this IOAS meanwhile: try again"));
}

Result<IovaRanges> ioas_iova_ranges(int iommufd, std::uint32_t ioas) {
  return ioas_iova_ranges_with(
      [iommufd](unsigned long request, void* argument) { return checked_ioctl(iommufd, request, argument); }, ioas);
}

namespace {

// IOMMU_IOAS_MAP(_FILE) flags for a mapping at the IOVA given, with the access asked.
std::uint32_t fixed_map_flags(bool device_reads, bool device_writes) {
  std::uint32_t flags = IOMMU_IOAS_MAP_FIXED_IOVA;
  if (device_reads) flags |= IOMMU_IOAS_MAP_READABLE;
  if (device_writes) flags |= IOMMU_IOAS_MAP_WRITEABLE;
  return flags;
}

}  // namespace

Result<void> ioas_map_fixed(int iommufd, std::uint32_t ioas, std::uint64_t vaddr, std::uint64_t iova,
                            std::uint64_t length, bool device_reads, bool device_writes) {
  iommu_ioas_map argument{};
  argument.size = sizeof argument;
  argument.flags = fixed_map_flags(device_reads, device_writes);
  argument.ioas_id = ioas;
  argument.user_va = vaddr;
  argument.length = length;
  argument.iova = iova;
  if (const int result = checked_ioctl(iommufd, IOMMU_IOAS_MAP, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_IOAS_MAP", iova_name(ioas, iova, length)));
  }
  return {};
}

Result<void> ioas_map_file_fixed(int iommufd, std::uint32_t ioas, int fd, std::uint64_t start, std::uint64_t iova,
                                 std::uint64_t length, bool device_reads, bool device_writes) {
  return ioas_map_file_fixed_with(
      [iommufd](unsigned long request, void* argument) { return checked_ioctl(iommufd, request, argument); }, ioas, fd,
      start, iova, length, device_reads, device_writes);
}

Result<void> ioas_map_file_fixed_with(const IoctlCall& call, std::uint32_t ioas, int fd, std::uint64_t start,
                                      std::uint64_t iova, std::uint64_t length, bool device_reads, bool device_writes) {
  iommu_ioas_map_file argument{};
  argument.size = sizeof argument;
  argument.flags = fixed_map_flags(device_reads, device_writes);
  argument.ioas_id = ioas;
  argument.fd = fd;
  argument.start = start;
  argument.length = length;
  argument.iova = iova;
  if (const int result = call(IOMMU_IOAS_MAP_FILE, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_IOAS_MAP_FILE", iova_name(ioas, iova, length)));
  }
  return {};
}

Result<std::uint64_t> ioas_unmap(int iommufd, std::uint32_t ioas, std::uint64_t iova, std::uint64_t length) {
  iommu_ioas_unmap argument{};
  argument.size = sizeof argument;
  argument.ioas_id = ioas;
  argument.iova = iova;
  argument.length = length;
  const int result = checked_ioctl(iommufd, IOMMU_IOAS_UNMAP, &argument);
  if (result == -ENOENT) return 0;  // nothing mapped there
  if (result < 0) return std::unexpected(ioctl_error(result, "IOMMU_IOAS_UNMAP", iova_name(ioas, iova, length)));
  return argument.length;
}

Result<PhysicalExtent> ioas_noiommu_physical(int iommufd, std::uint32_t ioas, std::uint64_t iova,
                                             std::uint64_t length) {
  return ioas_noiommu_physical_with(
      [iommufd](unsigned long request, void* argument) { return checked_ioctl(iommufd, request, argument); }, ioas,
      iova, length);
}

Result<PhysicalExtent> ioas_noiommu_physical_with(const IoctlCall& call, std::uint32_t ioas, std::uint64_t iova,
                                                  std::uint64_t length) {
  iommu_ioas_noiommu_get_pa argument{};
  argument.size = sizeof argument;
  argument.ioas_id = ioas;
  argument.iova = iova;
  argument.length = length;
  if (const int result = call(IOMMU_IOAS_NOIOMMU_GET_PA, &argument); result < 0) {
    Error error = ioctl_error(result, "IOMMU_IOAS_NOIOMMU_GET_PA", iova_name(ioas, iova, length));
    if (result == -ENOTTY || result == -EOPNOTSUPP) {
      // ENOTTY: a kernel without the ioctl; EOPNOTSUPP: one built without
      // CONFIG_IOMMUFD_NOIOMMU (its stub), which also makes no noiommu cdevs.
      error.code = Errc::not_supported;
      error.hint = "the kernel cannot tell physical addresses through iommufd (newer kernels, 7.3 among them, built with "
                   "CONFIG_IOMMUFD_NOIOMMU): use VFIO's group no-IOMMU mode (PCIE_VFIO_BACKEND=type1)";
    } else if (result == -EPERM) {
      error.code = Errc::permission_denied;
      error.hint = "physical addresses need CAP_SYS_RAWIO: run as root";
    }
    return std::unexpected(error);
  }
  if (argument.length == 0 || argument.length > length) {
    return std::unexpected(make_error(Errc::malformed, "IOMMU_IOAS_NOIOMMU_GET_PA", iova_name(ioas, iova, length),
                                      fmt::format("the kernel answered {} contiguous bytes of {} asked", argument.length,
                                                  length)));
  }
  return PhysicalExtent{argument.out_phys, argument.length};
}

Result<RlimitMode> rlimit_mode(int iommufd) {
  iommu_option argument{};
  argument.size = sizeof argument;
  argument.option_id = IOMMU_OPTION_RLIMIT_MODE;
  argument.op = IOMMU_OPTION_OP_GET;
  if (const int result = checked_ioctl(iommufd, IOMMU_OPTION, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_OPTION (RLIMIT_MODE)", "/dev/iommu"));
  }
  if (argument.val64 > 1) {
    return std::unexpected(make_error(Errc::malformed, "IOMMU_OPTION (RLIMIT_MODE)", "/dev/iommu",
                                      fmt::format("unknown accounting mode {}", argument.val64)));
  }
  return argument.val64 == 0 ? RlimitMode::per_user : RlimitMode::per_process;
}

Result<std::uint32_t> device_bind(int device_fd, int iommufd, const std::string& bdf) {
  vfio_device_bind_iommufd argument{};
  argument.argsz = sizeof argument;
  argument.iommufd = iommufd;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_BIND_IOMMUFD, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_BIND_IOMMUFD", bdf));
  }
  return argument.out_devid;
}

Result<std::uint32_t> hwpt_alloc(int iommufd, std::uint32_t device_id, std::uint32_t ioas, const std::string& bdf) {
  iommu_hwpt_alloc argument{};
  argument.size = sizeof argument;
  argument.dev_id = device_id;
  argument.pt_id = ioas;
  argument.data_type = IOMMU_HWPT_DATA_NONE;
  if (const int result = checked_ioctl(iommufd, IOMMU_HWPT_ALLOC, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "IOMMU_HWPT_ALLOC", fmt::format("{} (IOAS {})", bdf, ioas)));
  }
  return argument.out_hwpt_id;
}

Result<std::uint32_t> device_attach(int device_fd, std::uint32_t pt_id, const std::string& bdf) {
  vfio_device_attach_iommufd_pt argument{};
  argument.argsz = sizeof argument;
  argument.pt_id = pt_id;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_ATTACH_IOMMUFD_PT", bdf));
  }
  return argument.pt_id;
}

Result<void> device_detach(int device_fd, const std::string& bdf) {
  vfio_device_detach_iommufd_pt argument{};
  argument.argsz = sizeof argument;
  if (const int result = checked_ioctl(device_fd, VFIO_DEVICE_DETACH_IOMMUFD_PT, &argument); result < 0) {
    return std::unexpected(ioctl_error(result, "VFIO_DEVICE_DETACH_IOMMUFD_PT", bdf));
  }
  return {};
}

}  // namespace pcie::sys::iommufd
