// What the guest writes into ivshmem's BAR2 through resource2_wc, and what the host then
// expects in the BAR's backing file, byte for byte: spans at odd offsets and sizes, each
// written with one access width, naturally aligned, never overlapping. Shared by both sides
// so the host checks exactly what the guest meant to write.
#pragma once

#include <cstdint>
#include <vector>

namespace pcie::vm {

struct PatternSpan {
  std::uint64_t offset = 0;  // a multiple of width_bytes
  std::uint64_t length = 0;  // a multiple of width_bytes
  unsigned width_bytes = 1;  // 1, 2, 4 or 8
};

// Spans inside a BAR of `bar_size` bytes (at least 1 MiB), sorted and disjoint.
inline std::vector<PatternSpan> ivshmem_pattern_spans(std::uint64_t bar_size) {
  return {
      {0x0, 1, 1},           // the first byte
      {0x11, 7, 1},          // odd offset, odd length
      {0x102, 34, 2},
      {0xffe, 6, 2},         // across a page boundary
      {0x1004, 4092, 4},     // the rest of a page
      {0x2ff8, 4104, 8},     // across a page boundary, 64-bit stores
      {0x7ffc, 8, 4},
      {0x10001, 4095, 1},    // 4095 single bytes
      {0x20008, 65544, 8},   // 64 KiB + 8 through the write-combining buffers
      {bar_size - 5, 5, 1},  // the last bytes of the BAR
  };
}

// The byte written at `offset`: varies with every bit of the offset, rarely zero.
inline std::uint8_t pattern_byte(std::uint64_t offset) {
  const std::uint64_t mixed = (offset + 1) * 0x9e3779b97f4a7c15ull;
  return static_cast<std::uint8_t>((mixed >> 56) ^ (offset & 0xff) ^ 0x5a);
}

// The little-endian value of `width_bytes` pattern bytes starting at `offset`.
inline std::uint64_t pattern_value(std::uint64_t offset, unsigned width_bytes) {
  std::uint64_t value = 0;
  for (unsigned i = 0; i < width_bytes; ++i) value |= std::uint64_t{pattern_byte(offset + i)} << (8 * i);
  return value;
}

// What a device writes into the BAR by peer-to-peer DMA (the guests' PeerDma tests): pattern
// bytes, from a host buffer through edu into a window of the BAR mapped for it, in a page
// no span above touches, at an odd offset and length (edu moves at most 4095 bytes).
inline constexpr std::uint64_t kPeerDmaWindowOffset = 0x80000;  // the window: one page here
inline constexpr PatternSpan kPeerDmaSpan{kPeerDmaWindowOffset + 0x11, 3001, 1};

// The whole BAR as it must look afterwards, starting from zeros; with_peer_dma: where the
// guest's peer-to-peer DMA ran, its bytes too.
inline std::vector<std::uint8_t> expected_ivshmem_image(std::uint64_t bar_size, bool with_peer_dma = false) {
  std::vector<std::uint8_t> image(bar_size, 0);
  std::vector<PatternSpan> spans = ivshmem_pattern_spans(bar_size);
  if (with_peer_dma) spans.push_back(kPeerDmaSpan);
  for (const PatternSpan& span : spans) {
    for (std::uint64_t i = 0; i < span.length; ++i) image[span.offset + i] = pattern_byte(span.offset + i);
  }
  return image;
}

}  // namespace pcie::vm
