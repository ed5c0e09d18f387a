// DmaAllocator::create for a VFIO container: the backend of the container's IOMMU mode (the
// type1 IOMMU, the iommufd IOAS, or, for a container opened without an IOMMU, the
// physical-address backend the user acknowledged then).
#include "pcie/dma.h"
#include "src/vfio/state.h"

namespace pcie {

Result<DmaAllocator> DmaAllocator::create(const VfioContainer& container) {
  if (!container.state_) {
    return std::unexpected(make_error(Errc::invalid_argument, "create DMA allocator", "VFIO container",
                                      "the container is empty (default-constructed or moved from)"));
  }
  std::lock_guard lock(container.state_->mutex);
  auto backend = container.state_->mode->dma_backend(container.state_);
  if (!backend) return std::unexpected(backend.error());
  return DmaAllocator(std::move(*backend));
}

}  // namespace pcie
