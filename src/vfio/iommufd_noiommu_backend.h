// iommufd without an IOMMU as a DMA backend (private): a device in VFIO's no-IOMMU mode,
// opened through its noiommu-vfioN cdev and attached to the container's IOAS, reaches
// memory by physical address; the IOAS pins the buffer (as it would for an IOMMU, so its
// pages cannot move, which mlock() alone does not promise) and IOMMU_IOAS_NOIOMMU_GET_PA
// tells its physical address (Documentation/driver-api/vfio.rst, "VFIO NOIOMMU mode").
// Keeps the container state (and so /dev/iommu and the IOAS) alive while any buffer
// mapped through it lives.
#pragma once

#include <memory>

#include "pcie/dma_backend.h"
#include "src/vfio/state.h"

namespace pcie::detail {

// Bus addresses are physical: a buffer must be physically contiguous (map() answers
// not_supported, and the allocator tries other memory, as the pagemap backend does), below
// the DMA limit (out_of_range) and aligned as asked; memory_plan is physical_memory_plan
// with `options.attempts` pieces a step. `options.lock` and `pagemap_path` are not used:
// the IOAS pins, and the kernel tells the address.
std::shared_ptr<DmaBackend> make_iommufd_noiommu_backend(std::shared_ptr<VfioContainerState> container,
                                                         const PhysicalDmaOptions& options);

}  // namespace pcie::detail
