// The VFIO type1 IOMMU as a DMA backend (private): IOVAs from the container's one IOVA
// space, mapped with VFIO_IOMMU_MAP_DMA. Keeps the container state (and so its descriptor)
// alive while any buffer mapped through it lives.
#pragma once

#include <memory>

#include "pcie/dma_backend.h"
#include "src/vfio/state.h"

namespace pcie::detail {

std::shared_ptr<DmaBackend> make_vfio_type1_backend(std::shared_ptr<VfioContainerState> container);

}  // namespace pcie::detail
