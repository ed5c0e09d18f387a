// Fuzz target: a VFIO info structure's capability chain (VFIO_DEVICE_GET_REGION_INFO,
// VFIO_IOMMU_GET_INFO) as the kernel (or a broken one) could return it. The first four
// bytes choose the start offset and the capability ID; the rest is the buffer.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "src/vfio/capability_chain.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const std::uint16_t first = static_cast<std::uint16_t>(data[0] | data[1] << 8);
  const std::uint16_t id = static_cast<std::uint16_t>(data[2] | data[3] << 8);
  const std::span<const std::byte> info(reinterpret_cast<const std::byte*>(data + 4), size - 4);
  const auto at = pcie::vfio_detail::find_capability(info, first, id, sizeof(vfio_region_info_cap_sparse_mmap));
  if (!at) return 0;
  if (*at > info.size() || info.size() - *at < sizeof(vfio_region_info_cap_sparse_mmap)) std::abort();
  vfio_region_info_cap_sparse_mmap capability;
  std::memcpy(&capability, info.data() + *at, sizeof capability);
  const auto areas = pcie::vfio_detail::capability_entries<vfio_region_sparse_mmap_area>(
      info, *at + sizeof capability, capability.nr_areas);
  if (areas.size() > capability.nr_areas) std::abort();
  if ((*at + sizeof capability + areas.size() * sizeof(vfio_region_sparse_mmap_area)) > info.size()) std::abort();
  return 0;
}
