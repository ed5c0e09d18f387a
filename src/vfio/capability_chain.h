// Walks the capability chain of a VFIO info structure (struct vfio_info_cap_header: id,
// version, next), as returned by VFIO_DEVICE_GET_REGION_INFO and VFIO_IOMMU_GET_INFO. The
// chain comes from the kernel but is bounded all the same: offsets must stay inside the
// buffer and move forward, and at most 32 capabilities are visited.
#pragma once

#include <linux/vfio.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <vector>

namespace pcie::vfio_detail {

// The offset of the first capability with `id`, with at least `min_size` bytes in the
// buffer from there; nullopt if there is none.
inline std::optional<std::size_t> find_capability(std::span<const std::byte> info, std::uint32_t first_offset,
                                                  std::uint16_t id, std::size_t min_size) {
  constexpr int kMaxCapabilities = 32;
  std::size_t offset = first_offset;
  for (int step = 0; step < kMaxCapabilities && offset != 0; ++step) {
    if (offset > info.size() || info.size() - offset < sizeof(vfio_info_cap_header)) return std::nullopt;
    vfio_info_cap_header header;
    std::memcpy(&header, info.data() + offset, sizeof header);
    if (header.id == id) {
      if (info.size() - offset < min_size) return std::nullopt;
      return offset;
    }
    if (header.next <= offset) return std::nullopt;  // a loop or a step backwards
    offset = header.next;
  }
  return std::nullopt;
}

// The `count` entries of type Entry that start at `offset` (right after a capability's fixed
// part), but only as many as the buffer really holds: the count comes from the kernel.
template <class Entry>
std::vector<Entry> capability_entries(std::span<const std::byte> info, std::size_t offset, std::size_t count) {
  std::vector<Entry> entries;
  if (offset > info.size()) return entries;
  const std::size_t fit = (info.size() - offset) / sizeof(Entry);
  for (std::size_t i = 0; i < std::min(count, fit); ++i) {
    Entry entry;
    std::memcpy(&entry, info.data() + offset + i * sizeof entry, sizeof entry);
    entries.push_back(entry);
  }
  return entries;
}

}  // namespace pcie::vfio_detail
