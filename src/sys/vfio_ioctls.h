// The VFIO ioctls (include/uapi/linux/vfio.h, Documentation/driver-api/vfio.rst), one small
// function each: errno captured right after the call and returned as an Error naming the
// object. Nothing else in the library calls ioctl() on a VFIO file descriptor.
#pragma once

#include <linux/vfio.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pcie/error.h"
#include "pcie/sys/unique_fd.h"

namespace pcie::sys::vfio {

// VFIO_GET_API_VERSION on the container.
Result<int> get_api_version(int container_fd);

// VFIO_CHECK_EXTENSION: does the container support `extension` (e.g. VFIO_TYPE1v2_IOMMU)?
Result<bool> check_extension(int container_fd, unsigned long extension);

// VFIO_GROUP_GET_STATUS: the group's flags (VFIO_GROUP_FLAGS_VIABLE, ..._CONTAINER_SET).
Result<std::uint32_t> group_status(int group_fd, const std::string& group_name);

// VFIO_GROUP_SET_CONTAINER: attaches the group to the container.
Result<void> group_set_container(int group_fd, int container_fd, const std::string& group_name);

// VFIO_SET_IOMMU: selects the IOMMU model (once, after the first group is attached).
Result<void> set_iommu(int container_fd, unsigned long iommu_type);

// VFIO_IOMMU_GET_INFO with its capability chain: the raw structure, grown to the size the
// kernel asks for (argsz), so callers can walk the capabilities.
Result<std::vector<std::byte>> iommu_info(int container_fd);

// VFIO_GROUP_GET_DEVICE_FD for the device named `bdf` ("0000:00:03.0").
Result<UniqueFd> group_get_device_fd(int group_fd, const std::string& bdf);

// VFIO_DEVICE_GET_INFO.
Result<vfio_device_info> device_info(int device_fd, const std::string& bdf);

// VFIO_DEVICE_GET_REGION_INFO for region `index`, with its capability chain (as iommu_info).
Result<std::vector<std::byte>> region_info(int device_fd, std::uint32_t index, const std::string& bdf);

// VFIO_DEVICE_GET_IRQ_INFO for IRQ index `index` (VFIO_PCI_INTX_IRQ_INDEX, ...).
Result<vfio_irq_info> irq_info(int device_fd, std::uint32_t index, const std::string& bdf);

// VFIO_DEVICE_SET_IRQS with ACTION_TRIGGER: signal `eventfds` (one per vector, from vector
// 0) for IRQ index `index`; an empty list disables the index.
Result<void> set_irq_eventfds(int device_fd, std::uint32_t index, const std::vector<int>& eventfds,
                              const std::string& bdf);

// The same for vectors [start, start + eventfds.size()) only: an eventfd of -1 detaches
// that vector (the kernel frees its IRQ), vectors outside the range stay as they are. The
// kernel refuses (EINVAL) a range past the enabled vectors unless it can grow the set
// (MSI-X on Linux 6.5 and later: no VFIO_IRQ_INFO_NORESIZE).
Result<void> set_irq_eventfds_from(int device_fd, std::uint32_t index, std::uint32_t start,
                                   const std::vector<int>& eventfds, const std::string& bdf);

// VFIO_DEVICE_SET_IRQS with ACTION_UNMASK for vector 0 of `index` (INTx is masked by the
// kernel when it fires, until the user unmasks it).
Result<void> unmask_irq(int device_fd, std::uint32_t index, const std::string& bdf);

// VFIO_DEVICE_SET_IRQS with ACTION_MASK for vector 0 of `index` (INTx).
Result<void> mask_irq(int device_fd, std::uint32_t index, const std::string& bdf);

// VFIO_DEVICE_RESET.
Result<void> reset_device(int device_fd, const std::string& bdf);

// VFIO_DEVICE_FEATURE_GET of VFIO_DEVICE_FEATURE_DMA_BUF (Linux 6.19): bytes [offset,
// offset + length) of region `region_index` as a dma-buf, opened read-write and close-on-
// exec. ENOTTY (not_supported) from kernels without the feature, or built without
// CONFIG_PCI_P2PDMA and CONFIG_DMA_SHARED_BUFFER.
Result<UniqueFd> export_dma_buf(int device_fd, std::uint32_t region_index, std::uint64_t offset,
                                std::uint64_t length, const std::string& name);
// export_dma_buf() with the ioctl call replaceable, for tests of the argument it builds and
// of each answer: takes the request and the argument, returns the fd or -errno.
using IoctlCall = std::function<int(unsigned long request, void* argument)>;
Result<UniqueFd> export_dma_buf_with(const IoctlCall& call, std::uint32_t region_index, std::uint64_t offset,
                                     std::uint64_t length, const std::string& name);

// VFIO_IOMMU_MAP_DMA: maps [vaddr, vaddr + size) at `iova`, readable and/or writable by
// the device. The kernel pins the pages (counted against RLIMIT_MEMLOCK).
Result<void> map_dma(int container_fd, std::uint64_t vaddr, std::uint64_t iova, std::uint64_t size, bool device_reads,
                     bool device_writes);

// VFIO_IOMMU_UNMAP_DMA: returns how many bytes the kernel unmapped, which is 0 (not an
// error) when nothing was mapped there: callers must check it.
Result<std::uint64_t> unmap_dma(int container_fd, std::uint64_t iova, std::uint64_t size);

}  // namespace pcie::sys::vfio
