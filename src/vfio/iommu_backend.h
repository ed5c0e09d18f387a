// What the type1 and iommufd DMA backends share (private): IOVAs from the container's one
// IOVA space, handed out before the kernel maps them and handed back only once the kernel
// has unmapped them, the unmapped length checked, and the bytes mapped counted. Each
// backend supplies only its two kernel calls. Keeps the container state (and so its
// descriptor) alive while any buffer mapped through it lives.
#pragma once

#include <memory>

#include "pcie/dma_backend.h"
#include "src/vfio/state.h"

namespace pcie::detail {

class IommuDmaBackend : public DmaBackend {
 public:
  explicit IommuDmaBackend(std::shared_ptr<VfioContainerState> container) : container_(std::move(container)) {}

  bool bus_addresses_are_physical() const final { return false; }
  // The IOVA is aligned to the page size (so the IOMMU can use large pages too) and to
  // what the container asks of mappings (iommufd's out_iova_alignment).
  Result<BusAddress> map(const Mapping& memory, const DmaMapRequest& request) final;
  // Out of IOVA space for this page size: a smaller backing needs less alignment.
  bool retry_with_other_memory(const Error& error) const final { return error.code == Errc::out_of_range; }
  Result<void> unmap(BusAddress address, const Mapping& memory) final;
  std::uint64_t mapped_bytes() const final;

 protected:
  // Maps [vaddr, vaddr + length) at `iova`; the error already explained for the user.
  // Called without the container's lock.
  virtual Result<void> map_in_kernel(std::uint64_t vaddr, Iova iova, std::uint64_t length,
                                     const DmaMapRequest& request) = 0;
  // Unmaps [iova, iova + length); how many bytes the kernel unmapped.
  virtual Result<std::uint64_t> unmap_in_kernel(Iova iova, std::uint64_t length) = 0;
  VfioContainerState& container() const { return *container_; }

 private:
  std::shared_ptr<VfioContainerState> container_;
};

}  // namespace pcie::detail
