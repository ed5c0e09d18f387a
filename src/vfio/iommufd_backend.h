// The iommufd IOAS as a DMA backend (private): IOVAs from the container's one IOVA space,
// mapped with IOMMU_IOAS_MAP at a fixed IOVA and unmapped with IOMMU_IOAS_UNMAP. Keeps the
// container state (and so /dev/iommu and the IOAS) alive while any buffer mapped through
// it lives.
#pragma once

#include <memory>

#include "pcie/dma_backend.h"
#include "src/vfio/state.h"

namespace pcie::detail {

std::shared_ptr<DmaBackend> make_iommufd_backend(std::shared_ptr<VfioContainerState> container);

}  // namespace pcie::detail
