// Reading physical addresses from /proc/self/pagemap (Documentation/admin-guide/mm/
// pagemap.rst): one 64-bit entry per virtual page, bits 0-54 the page frame number when
// bit 63 (present) is set. Private; the parser is separate from the file so that it can be
// tested and fuzzed on entries of any shape.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "pcie/error.h"

namespace pcie::pagemap {

inline constexpr std::uint64_t kPresent = std::uint64_t{1} << 63;
inline constexpr std::uint64_t kSwapped = std::uint64_t{1} << 62;
inline constexpr std::uint64_t kPfnMask = (std::uint64_t{1} << 55) - 1;

// The physical address of the first byte of the pages whose entries are `entries` (one per
// 4 KiB page, in address order), when they are all present and physically contiguous.
// Errors: permission_denied when the kernel hid the frame numbers (PFN 0: no
// CAP_SYS_ADMIN), io_error for a page not present or swapped out, not_supported when the
// pages are not contiguous, out_of_range when the range overflows 64 bits. `object` names
// the memory in errors.
Result<std::uint64_t> contiguous_physical_address(std::span<const std::uint64_t> entries, std::string_view object);

// Reads the entries of `page_count` 4 KiB pages from `virtual_address` (page-aligned) in
// one pread(2) of the open pagemap file, into `entries`.
Result<void> read_entries(int pagemap_fd, const std::string& path, std::uint64_t virtual_address,
                          std::span<std::uint64_t> entries);

}  // namespace pcie::pagemap
