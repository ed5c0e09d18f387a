// Choosing the IOMMU interface of a VfioContainer (private): what the program and
// PCIE_VFIO_BACKEND ask for, and what this kernel and this user allow.
#pragma once

#include <cstdint>
#include <optional>

#include "pcie/sys/unique_fd.h"
#include "pcie/vfio.h"

namespace pcie::detail {

// /dev/iommu and the one IOAS a container's devices share.
struct IommufdContext {
  UniqueFd fd;
  std::uint32_t ioas = 0;
};

// Opens /dev/iommu and allocates an IOAS. Errors say what to do: not_found (a kernel
// without IOMMUFD, the module not loaded), permission_denied (root's node).
Result<IommufdContext> open_iommufd(const VfioPaths& paths);

struct ChosenBackend {
  // What was asked for once PCIE_VFIO_BACKEND is read: automatic, type1 or iommufd.
  VfioIommuBackend requested = VfioIommuBackend::automatic;
  VfioBackendChoice choice;
  std::optional<IommufdContext> iommufd;  // opened when the choice is iommufd
};

Result<ChosenBackend> choose_backend(const VfioPaths& paths, const VfioContainerOptions& options);

// The same for a container without an IOMMU: type1 is VFIO's group no-IOMMU mode
// (/dev/vfio/vfio, VFIO_NOIOMMU_IOMMU); iommufd is /dev/iommu with the devices' noiommu-vfioN
// cdevs, for a kernel that tells physical addresses through it (IOMMU_IOAS_NOIOMMU_GET_PA);
// automatic takes iommufd where that works (and the kernel gives device cdevs), else type1.
// Errors: an invalid PCIE_VFIO_BACKEND, and iommufd asked for where it cannot do: the
// error of opening /dev/iommu, or not_supported when the kernel gives no device cdevs or
// lacks IOMMU_IOAS_NOIOMMU_GET_PA.
Result<ChosenBackend> choose_noiommu_backend(const VfioPaths& paths, const VfioContainerOptions& options);

// Whether an automatic choice of iommufd turns to type1 after `cdev_error` on the first
// device's cdev: the cdev is missing or not this user's (not_found, permission_denied,
// not_supported) while the device is bound to vfio-pci, whose group node type1 may reach.
bool may_fall_back_to_type1(const VfioPaths& paths, const Bdf& bdf, const Error& cdev_error);

}  // namespace pcie::detail
