// The pages DMA memory is made of, the search for memory that suits a backend behind an
// IOMMU, and DmaBackend::memory_plan's default (physical_memory_plan is the physical
// backend's, src/dma/physical_backend.cc).
#include <string_view>
#include <vector>

#include "pcie/dma_backend.h"

namespace pcie {

std::string_view dma_backing_name(DmaBacking backing) {
  switch (backing) {
    case DmaBacking::pages: return "4 KiB pages";
    case DmaBacking::huge_2m: return "2 MiB huge pages";
    case DmaBacking::huge_1g: return "1 GiB huge pages";
  }
  return "?";
}

std::uint64_t dma_backing_page_size(DmaBacking backing) {
  switch (backing) {
    case DmaBacking::huge_1g: return 1ull << 30;
    case DmaBacking::huge_2m: return 2ull << 20;
    case DmaBacking::pages: break;
  }
  return 4096;
}

std::vector<DmaMemoryStep> iommu_memory_plan(std::size_t size, DmaBacking prefer) {
  // An IOMMU maps any pages contiguous and at any IOVA alignment, so every backing can
  // serve every request: the only question is what the buffer is worth in memory.
  std::vector<DmaMemoryStep> steps;
  for (DmaBacking backing : {DmaBacking::huge_1g, DmaBacking::huge_2m, DmaBacking::pages}) {
    if (static_cast<int>(backing) > static_cast<int>(prefer)) continue;
    if (backing != DmaBacking::pages && size < dma_backing_page_size(backing) / 2) continue;
    steps.push_back({.backing = backing, .pieces = 1});
  }
  return steps;
}

Result<std::vector<DmaMemoryStep>> DmaBackend::memory_plan(std::size_t size, DmaBacking prefer,
                                                           const DmaMapRequest& request) const {
  if (bus_addresses_are_physical()) return physical_memory_plan(size, prefer, request, 8);
  return iommu_memory_plan(size, prefer);
}

}  // namespace pcie
