// The VFIO capability-chain walker on hostile input: loops, backward links, offsets past the
// end, and entry counts larger than the buffer.
#include "src/vfio/capability_chain.h"

#include <gtest/gtest.h>

#include <array>
#include <cstring>
#include <vector>

namespace pcie::vfio_detail {
namespace {

// A buffer with capability headers at the given offsets: {offset, id, next}.
std::vector<std::byte> chain(std::size_t size, std::initializer_list<std::array<std::uint32_t, 3>> headers) {
  std::vector<std::byte> buffer(size);
  for (const auto& [offset, id, next] : headers) {
    vfio_info_cap_header header{};
    header.id = static_cast<std::uint16_t>(id);
    header.version = 1;
    header.next = next;
    std::memcpy(buffer.data() + offset, &header, sizeof header);
  }
  return buffer;
}

TEST(CapabilityChain, FindsACapabilityFurtherDown) {
  const auto buffer = chain(256, {{32, 1, 64}, {64, 3, 0}});
  EXPECT_EQ(find_capability(buffer, 32, 3, 8), 64u);
  EXPECT_EQ(find_capability(buffer, 32, 2, 8), std::nullopt);
}

TEST(CapabilityChain, LoopsAndBackwardLinksEnd) {
  EXPECT_EQ(find_capability(chain(256, {{32, 1, 32}}), 32, 3, 8), std::nullopt);          // points at itself
  EXPECT_EQ(find_capability(chain(256, {{32, 1, 64}, {64, 1, 32}}), 32, 3, 8), std::nullopt);  // backwards
}

TEST(CapabilityChain, OffsetsOutsideTheBuffer) {
  const auto buffer = chain(64, {{32, 1, 1000}});
  EXPECT_EQ(find_capability(buffer, 32, 3, 8), std::nullopt);
  EXPECT_EQ(find_capability(buffer, 60, 1, 8), std::nullopt) << "a header cut off by the end";
  EXPECT_EQ(find_capability(chain(64, {{32, 3, 0}}), 32, 3, 64), std::nullopt) << "too short for the capability";
}

TEST(CapabilityChain, EntryCountIsBoundedByTheBuffer) {
  std::vector<std::byte> buffer(16 + 3 * sizeof(vfio_iova_range));
  const auto entries = capability_entries<vfio_iova_range>(buffer, 16, 1000000);
  EXPECT_EQ(entries.size(), 3u);
  EXPECT_TRUE(capability_entries<vfio_iova_range>(buffer, buffer.size() + 8, 2).empty());
}

}  // namespace
}  // namespace pcie::vfio_detail
