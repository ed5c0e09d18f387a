// The pages DMA memory is made of, and the search for memory that suits a backend behind
// an IOMMU (the default DmaBackend::memory_plan; the physical backend has its own).
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

// An IOMMU maps any pages contiguous and at any IOVA alignment, so every backing can serve
// every request: the only question is what the buffer is worth in memory.
Result<std::vector<DmaMemoryStep>> DmaBackend::memory_plan(std::size_t size, DmaBacking prefer,
                                                           const DmaMapRequest&) const {
  std::vector<DmaMemoryStep> steps;
  for (DmaBacking backing : {DmaBacking::huge_1g, DmaBacking::huge_2m, DmaBacking::pages}) {
    if (static_cast<int>(backing) > static_cast<int>(prefer)) continue;
    if (backing != DmaBacking::pages && size < dma_backing_page_size(backing) / 2) continue;
    steps.push_back({.backing = backing, .pieces = 1});
  }
  return steps;
}

}  // namespace pcie
