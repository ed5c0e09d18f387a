// What the guest writes into ivshmem's BAR2 through the bulk copy path (guest_copy_test),
// and what the host then expects in the BAR's backing file (vm_copy_test). Shared by both
// sides. Layout of the BAR:
//   [0, 2 MiB)                 header: byte k is 1 once region k was written
//   region k at (k + 1) * 2 MiB: the copy spans of kernel k (kCopyKernels[k]); the last
//                              region is a window restricted to 32-bit accesses
//   [24 MiB, 28 MiB)           pciectl bench's window (overwritten, not checked)
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "tests/vm/ivshmem_pattern.h"

namespace pcie::vm {

constexpr std::uint64_t kCopyIvshmemSize = 32u << 20;
constexpr std::uint64_t kCopyRegionSize = 2u << 20;
constexpr std::uint64_t kBenchWindowOffset = 24u << 20;
constexpr std::uint64_t kBenchWindowLength = 4u << 20;

// Region k's kernel, by its pcie::to_string name; "32-bit" is the restricted window.
constexpr std::array<std::string_view, 8> kCopyKernels = {"auto",   "registers", "sse2",      "sse4.1",
                                                         "avx2",   "avx512",    "movdir64b", "32-bit"};

constexpr std::uint64_t copy_region_base(std::size_t region) { return (region + 1) * kCopyRegionSize; }

struct CopySpan {
  std::uint64_t offset = 0;       // in the BAR
  std::uint64_t length = 0;
  std::uint64_t host_offset = 0;  // where in the guest's source buffer the bytes start (0..15)
};

// The table of sizes, each at a different device offset (0..15) and host offset,
// 8 KiB apart; in the 32-bit window only 4-byte multiples at 4-byte-aligned offsets.
inline std::vector<CopySpan> copy_spans(std::size_t region) {
  const bool words_only = kCopyKernels[region] == "32-bit";
  const std::vector<std::uint64_t> lengths = {1, 2, 3, 7, 63, 64, 65, 4095, 4096, 4097, (1u << 20) + 3};
  std::vector<CopySpan> spans;
  std::uint64_t cursor = copy_region_base(region);
  for (std::size_t i = 0; i < lengths.size(); ++i) {
    std::uint64_t length = lengths[i];
    std::uint64_t device_offset = (i * 5 + region) % 16;
    if (words_only) {
      length = (length + 3) / 4 * 4;
      device_offset &= ~std::uint64_t{3};
    }
    spans.push_back({cursor + device_offset, length, (i * 7 + region) % 16});
    cursor += (device_offset + length + 8191) / 8192 * 8192 + 8192;
  }
  return spans;
}

// The checked part of the BAR as it must look, from zeros, given the header the guest
// wrote (header[k] != 0: region k was written).
inline std::vector<std::uint8_t> expected_copy_image(const std::vector<std::uint8_t>& header) {
  std::vector<std::uint8_t> image(kCopyIvshmemSize, 0);
  for (std::size_t region = 0; region < kCopyKernels.size(); ++region) {
    if (region >= header.size() || header[region] == 0) continue;
    image[region] = 1;
    for (const CopySpan& span : copy_spans(region)) {
      for (std::uint64_t i = 0; i < span.length; ++i) image[span.offset + i] = pattern_byte(span.offset + i);
    }
  }
  return image;
}

}  // namespace pcie::vm
