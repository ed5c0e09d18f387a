// Opening a device for the iommufd backend (private): through its VFIO cdev
// (/dev/vfio/devices/vfioN, named by sysfs <device>/vfio-dev/; Documentation/driver-api/
// vfio.rst, "VFIO Device cdev"), bound to the container's iommufd and attached to its IOAS.
#pragma once

#include <string>
#include <string_view>

#include "pcie/sys/unique_fd.h"
#include "src/vfio/state.h"

namespace pcie::detail {

// The device's cdev node's path (/dev/vfio/devices/vfioN, or noiommu-vfioN for a device in
// VFIO's no-IOMMU mode), from sysfs <device>/vfio-dev/. Errors as open_device_cdev's, less
// those of opening the node.
Result<std::string> find_device_cdev(const VfioPaths& paths, const Bdf& bdf);

// Whether a cdev node's name says the device is in VFIO's no-IOMMU mode (noiommu-vfioN).
bool is_noiommu_cdev(std::string_view node);

// The device's cdev node, opened, when it is of the kind the container's mode needs: a
// noiommu-vfioN cdev (a device with no IOMMU) for a container without an IOMMU, a vfioN one
// otherwise. A device with no IOMMU attached to an IOAS with one would take IOVAs for
// physical addresses, and one behind an IOMMU given physical addresses would reach the
// wrong memory: either is invalid_argument, saying which container to use. Other errors
// say what to do: the device is gone, not bound to vfio-pci, the kernel has no cdevs
// (not_supported), no access to the node, in use. Called with state.mutex held.
Result<UniqueFd> open_device_cdev(const VfioContainerState& state, const Bdf& bdf, bool without_iommu);

// Binds the opened cdev to the container's iommufd and attaches it to the IOAS, then
// reads the usable IOVA ranges again (the device may reserve more of them) into the
// container's IOVA space. Returns the device's ID in the iommufd. With `owned_page_table`,
// the device is attached to that page table of the IOAS instead, made first for this
// device when it is 0 (IOMMU_HWPT_ALLOC): one the container owns outlives its devices,
// where the IOAS's automatic one is destroyed with its last device, unpinning every
// buffer. Called with state.mutex held.
Result<std::uint32_t> bind_and_attach(VfioContainerState& state, int device_fd, const Bdf& bdf,
                                      std::uint32_t* owned_page_table = nullptr);

// bind_and_attach() for the opened cdev `fd`, then `device` holds it: its descriptor, its
// ID in the iommufd and its IOMMU group (added to state.device_groups). Errors as
// bind_and_attach's. Called with state.mutex held.
Result<void> take_device_cdev(VfioContainerState& state, VfioDeviceState& device, UniqueFd fd,
                              std::uint32_t* owned_page_table = nullptr);

}  // namespace pcie::detail
