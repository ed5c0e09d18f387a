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

// An IOMMU_IOAS_MAP failure of `bytes` explained for the user: ENOMEM is RLIMIT_MEMLOCK,
// counted per user or per process as `iommufd` is set (with this process's pins and what
// to raise the limit to); anything else as the kernel said it.
Error explain_iommufd_map_failure(const Error& raw, int iommufd, std::uint64_t bytes);

}  // namespace pcie::detail
