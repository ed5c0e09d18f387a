// DmaAllocator::create for a VFIO container: the type1 IOMMU backend or the iommufd IOAS,
// whichever the container uses, or, for a container opened without an IOMMU, the
// physical-address backend the user acknowledged then.
#include "pcie/dma.h"
#include "src/vfio/iommufd_backend.h"
#include "src/vfio/state.h"
#include "src/vfio/type1_backend.h"

namespace pcie {

Result<DmaAllocator> DmaAllocator::create(const VfioContainer& container) {
  if (!container.state_) {
    return std::unexpected(make_error(Errc::invalid_argument, "create DMA allocator", "VFIO container",
                                      "the container is empty (default-constructed or moved from)"));
  }
  std::lock_guard lock(container.state_->mutex);
  if (container.state_->physical_backend) return DmaAllocator(container.state_->physical_backend);
  if (!container.state_->iovas) {
    return std::unexpected(make_error(Errc::not_supported, "create DMA allocator", "VFIO container",
                                      "no IOVA ranges known",
                                      "open a device in the container first; if one is open, the kernel "
                                      "does not report IOVA ranges (Linux 5.4 or later does)"));
  }
  if (container.state_->choice.backend == VfioIommuBackend::iommufd) {
    return DmaAllocator(detail::make_iommufd_backend(container.state_));
  }
  return DmaAllocator(detail::make_vfio_type1_backend(container.state_));
}

}  // namespace pcie
