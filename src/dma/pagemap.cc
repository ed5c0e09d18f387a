#include "src/dma/pagemap.h"

#include <fmt/format.h>

#include <cstring>
#include <string>

#include "src/sys/syscalls.h"

namespace pcie::pagemap {

namespace {
constexpr std::uint64_t kPage = 4096;
}

Result<std::uint64_t> contiguous_physical_address(std::span<const std::uint64_t> entries, std::string_view object) {
  if (entries.empty()) {
    return std::unexpected(make_error(Errc::invalid_argument, "translate to physical address", std::string(object),
                                      "no pages"));
  }
  const std::uint64_t first_pfn = entries[0] & kPfnMask;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::uint64_t entry = entries[i];
    const std::uint64_t pfn = entry & kPfnMask;
    if (!(entry & kPresent) || (entry & kSwapped)) {
      return std::unexpected(make_error(Errc::io_error, "translate to physical address", std::string(object),
                                        fmt::format("page {} is {} (pagemap entry {:#x})", i,
                                                    (entry & kSwapped) ? "swapped out" : "not present", entry),
                                        "DMA memory must be populated and locked before it is translated"));
    }
    if (pfn == 0) {
      return std::unexpected(make_error(Errc::permission_denied, "translate to physical address", std::string(object),
                                        "/proc/self/pagemap shows page frame number 0: the kernel hides physical "
                                        "addresses from processes without CAP_SYS_ADMIN (Linux 4.2 and later)",
                                        "run as root (or with CAP_SYS_ADMIN); a PFN of 0 is never handed to a device"));
    }
    if (first_pfn > kPfnMask - i || pfn != first_pfn + i) {
      return std::unexpected(make_error(
          Errc::not_supported, "translate to physical address", std::string(object),
          fmt::format("not physically contiguous: page {} is at {:#x}, page 0 at {:#x}", i, pfn * kPage, first_pfn * kPage),
          "use huge pages (2 MiB or 1 GiB: contiguous inside a page) for buffers larger than 4 KiB"));
    }
  }
  // PFNs are at most 55 bits, so the address (PFN * 4096) fits in 67 bits: check it.
  if (first_pfn + entries.size() > (~std::uint64_t{0} / kPage)) {
    return std::unexpected(make_error(Errc::out_of_range, "translate to physical address", std::string(object),
                                      fmt::format("page frame {:#x} is beyond 64-bit addresses", first_pfn)));
  }
  return first_pfn * kPage;
}

Result<void> read_entries(int pagemap_fd, const std::string& path, std::uint64_t virtual_address,
                          std::span<std::uint64_t> entries) {
  const std::uint64_t offset = virtual_address / kPage * sizeof(std::uint64_t);
  auto read = sys::pread_upto(pagemap_fd, std::as_writable_bytes(entries), offset, path);
  if (!read) return std::unexpected(read.error());
  if (*read != entries.size_bytes()) {
    return std::unexpected(make_error(Errc::io_error, "read pagemap", path,
                                      fmt::format("{} of {} bytes at offset {:#x}", *read, entries.size_bytes(), offset)));
  }
  return {};
}

}  // namespace pcie::pagemap
