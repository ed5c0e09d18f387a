// What guest_nvme_test writes to the NVMe namespace through the example driver, so that the
// host can find exactly that in the namespace's backing file afterwards, and zeros
// everywhere else.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace pcie::vm {

inline constexpr std::uint64_t kNvmeImageBytes = 8 << 20;

// One write: a byte range of the namespace (whole blocks of the format under test).
struct NvmeWrite {
  std::uint64_t offset = 0;
  std::uint64_t bytes = 0;
};

// One block; a few blocks in one page; a range whose PRPs need a list (33 pages) and that
// the driver splits past its largest transfer (600 KiB); the namespace's last block; and,
// with 512-byte blocks, blocks that share a page with nothing else written.
inline std::vector<NvmeWrite> nvme_writes(std::uint32_t block_size) {
  std::vector<NvmeWrite> writes = {{0, 4096},
                                   {3 * 8192, 12288},
                                   {65536, 33 * 4096},
                                   {1 << 20, 600 * 1024},
                                   {kNvmeImageBytes - block_size, block_size}};
  if (block_size == 512) writes.push_back({5 * 512 + (4 << 20), 3 * 512});
  return writes;
}

// The byte at `offset` of the namespace after the writes: never zero, and different from
// block to block and run to run of the same block, so a misplaced block shows.
inline std::byte nvme_pattern_byte(std::uint64_t offset) {
  std::uint64_t x = offset * 0x9e3779b97f4a7c15ull + 0x1234567;
  x ^= x >> 29;
  return std::byte(static_cast<unsigned char>((x & 0xfe) | 1));
}

}  // namespace pcie::vm
