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

// Peer-to-peer transfers between the namespace and ivshmem's BAR2 (1 MiB, 00:04.0), which
// guest_nvme_test makes with `nvme-driver ... --from/--into 0000:00:04.0:bar2:OFFSET`.
inline constexpr std::uint64_t kPeerBarBytes = 1 << 20;

struct NvmePeerTransfer {
  bool into_peer = false;  // read --into (namespace to BAR), else write --from (BAR to namespace)
  std::uint64_t namespace_offset = 0;  // whole blocks
  std::uint64_t peer_offset = 0;       // in BAR2: dword-aligned, not page-aligned on purpose
  std::uint64_t bytes = 0;
};

// First the writes from the BAR (before anything else changes it), then the reads into it,
// from ranges that nvme_writes() fills. The shapes: one block at the BAR's start (PRP1
// alone); 33 pages from a BAR offset inside a page (34 pages: a PRP list of BAR addresses);
// 600 KiB split past the largest transfer, each command's PRPs starting mid-page; blocks
// across a page boundary (PRP2 itself a BAR address for 512-byte blocks); one block mid-page.
// No two BAR ranges and no namespace range of a write overlap anything else written.
inline std::vector<NvmePeerTransfer> nvme_peer_transfers(std::uint32_t block_size) {
  return {{false, 2 << 20, 0, block_size},
          {false, 3 << 20, 0x10040, 33 * 4096},
          {true, 1 << 20, 0x40008, 600 * 1024},
          {true, 65536, 0xf0e00, 2 * block_size},
          {true, 0, 0xfa800, block_size}};
}

// What the host puts in ivshmem's backing file before the VM boots: never zero, and not
// nvme_pattern_byte's sequence, so a block from the wrong side shows.
inline std::byte ivshmem_fill_byte(std::uint64_t offset) {
  std::uint64_t x = (offset + 0x5151) * 0xbf58476d1ce4e5b9ull;
  x ^= x >> 31;
  return std::byte(static_cast<unsigned char>((x & 0xfc) | 2));
}

}  // namespace pcie::vm
