// The iommufd ioctls (include/uapi/linux/iommufd.h, Documentation/userspace-api/iommufd.rst)
// and the VFIO device cdev's ioctls that bind a device to an iommufd (include/uapi/linux/
// vfio.h, Documentation/driver-api/vfio.rst "VFIO device cdev"), one small function each:
// errno captured right after the call and returned as an Error naming the object. Nothing
// else in the library calls ioctl() on /dev/iommu or for these commands.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pcie/bus_address.h"
#include "pcie/error.h"

namespace pcie::sys::iommufd {

// IOMMU_IOAS_ALLOC: a new, empty I/O address space; its object ID.
Result<std::uint32_t> ioas_alloc(int iommufd);

// IOMMU_DESTROY: destroys object `id` (an IOAS once nothing is attached to it).
Result<void> destroy(int iommufd, std::uint32_t id);

// The IOVA ranges an IOAS accepts mappings in, and the alignment mappings need.
struct IovaRanges {
  std::vector<IovaRange> ranges;  // sorted, disjoint, start <= last
  std::uint64_t alignment = 1;    // out_iova_alignment: a power of two, at most the page size
};

// IOMMU_IOAS_IOVA_RANGES: the kernel says how many ranges there are and fills as many as
// there is room for, answering EMSGSIZE with the count when the array is too small; the
// ranges can change between calls (a device attached meanwhile), so the call is repeated
// a bounded number of times. The answer is checked: ranges out of order, overlapping or
// with start > last, more than 65,536 ranges, or an alignment that is not a power of two
// are malformed.
Result<IovaRanges> ioas_iova_ranges(int iommufd, std::uint32_t ioas);

// The ioctl call ioas_iova_ranges() makes, replaceable for tests of how it handles what the
// kernel answers: takes the request and the argument, returns 0 or -errno.
using IoctlCall = std::function<int(unsigned long request, void* argument)>;
Result<IovaRanges> ioas_iova_ranges_with(const IoctlCall& call, std::uint32_t ioas);

// IOMMU_IOAS_MAP with IOMMU_IOAS_MAP_FIXED_IOVA: maps [vaddr, vaddr + length) at `iova`,
// readable and/or writable by devices. The kernel pins the pages (accounted against
// RLIMIT_MEMLOCK per user or per process, see rlimit_mode()).
Result<void> ioas_map_fixed(int iommufd, std::uint32_t ioas, std::uint64_t vaddr, std::uint64_t iova,
                            std::uint64_t length, bool device_reads, bool device_writes);

// IOMMU_IOAS_MAP_FILE with IOMMU_IOAS_MAP_FIXED_IOVA: maps bytes [start, start + length) of
// file `fd` (a memfd, or a VFIO dma-buf on Linux 6.19 and later) at `iova`.
Result<void> ioas_map_file_fixed(int iommufd, std::uint32_t ioas, int fd, std::uint64_t start, std::uint64_t iova,
                                 std::uint64_t length, bool device_reads, bool device_writes);
Result<void> ioas_map_file_fixed_with(const IoctlCall& call, std::uint32_t ioas, int fd, std::uint64_t start,
                                      std::uint64_t iova, std::uint64_t length, bool device_reads, bool device_writes);

// IOMMU_IOAS_NOIOMMU_GET_PA (newer kernels, 7.3 among them, with CONFIG_IOMMUFD_NOIOMMU; for a device in
// VFIO's no-IOMMU mode, opened through its noiommu-vfioN cdev): the physical address of
// mapped `iova`, and how many bytes from there are physically contiguous, at most `length`
// (nonzero). Errors: not_supported for ENOTTY (a kernel without it) and EOPNOTSUPP (one
// built without CONFIG_IOMMUFD_NOIOMMU), permission_denied (CAP_SYS_RAWIO), malformed when
// the kernel answers a length of 0 or more than asked; the kernel's error otherwise
// (ENOENT: nothing mapped at `iova`; EINVAL: a zero length).
struct PhysicalExtent {
  std::uint64_t physical = 0;
  std::uint64_t contiguous_bytes = 0;
};
Result<PhysicalExtent> ioas_noiommu_physical(int iommufd, std::uint32_t ioas, std::uint64_t iova, std::uint64_t length);
Result<PhysicalExtent> ioas_noiommu_physical_with(const IoctlCall& call, std::uint32_t ioas, std::uint64_t iova,
                                                  std::uint64_t length);

// IOMMU_IOAS_UNMAP: returns how many bytes the kernel unmapped (ENOENT, nothing mapped
// there, is returned as 0, as VFIO's type1 answers): callers must check it.
Result<std::uint64_t> ioas_unmap(int iommufd, std::uint32_t ioas, std::uint64_t iova, std::uint64_t length);

// How this iommufd accounts pinned pages against RLIMIT_MEMLOCK (IOMMU_OPTION_RLIMIT_MODE).
enum class RlimitMode { per_user, per_process };
Result<RlimitMode> rlimit_mode(int iommufd);

// VFIO_DEVICE_BIND_IOMMUFD on a device cdev (/dev/vfio/devices/vfioN): binds the device to
// the iommufd and returns its device ID there. The device can do nothing before.
Result<std::uint32_t> device_bind(int device_fd, int iommufd, const std::string& bdf);

// IOMMU_HWPT_ALLOC: a paging page table for IOAS `ioas`, made for bound device
// `device_id` and owned by the caller (it lives until IOMMU_DESTROY or the iommufd's
// close, while the IOAS's automatic ones go with their last device); its object ID.
Result<std::uint32_t> hwpt_alloc(int iommufd, std::uint32_t device_id, std::uint32_t ioas, const std::string& bdf);

// VFIO_DEVICE_ATTACH_IOMMUFD_PT: attaches the bound device to IOAS (or hw page table)
// `pt_id`; returns the ID of the hardware page table the kernel attached it to (for an
// IOAS, one the kernel made for it).
Result<std::uint32_t> device_attach(int device_fd, std::uint32_t pt_id, const std::string& bdf);

// VFIO_DEVICE_DETACH_IOMMUFD_PT.
Result<void> device_detach(int device_fd, const std::string& bdf);

}  // namespace pcie::sys::iommufd
