// The host's half of the ivshmem check: after the VM exits, every byte of the BAR's backing
// file must be what the guest meant to write (ivshmem_pattern.h) and nothing else.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/vm/ivshmem_pattern.h"

namespace pcie::vm {

inline void expect_file_holds_ivshmem_pattern(const std::filesystem::path& file, std::uint64_t bar_size,
                                              bool with_peer_dma = false) {
  std::ifstream in(file, std::ios::binary);
  ASSERT_TRUE(in) << "cannot open " << file;
  const std::vector<std::uint8_t> actual{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  const std::vector<std::uint8_t> expected = expected_ivshmem_image(bar_size, with_peer_dma);
  ASSERT_EQ(actual.size(), expected.size());
  std::size_t mismatches = 0;
  for (std::size_t offset = 0; offset < expected.size(); ++offset) {
    if (actual[offset] != expected[offset] && ++mismatches <= 5) {
      ADD_FAILURE() << "offset 0x" << std::hex << offset << ": the file holds 0x" << int{actual[offset]}
                    << ", the guest wrote 0x" << int{expected[offset]};
    }
  }
  EXPECT_EQ(mismatches, 0u) << "bytes differing from what the guest wrote";
}

}  // namespace pcie::vm
