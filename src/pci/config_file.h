// A device's <device>/config file for readers that take its bytes in one pass (discovery),
// with the same errors as ConfigSpace::open, which opens it the same way. Private.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "pcie/error.h"
#include "pcie/sys/unique_fd.h"

namespace pcie::detail {

// open(2) of a config file read-only or read-write, with the hints ConfigSpace::open gives
// (no such device; writing needs root). Fails with the open's error.
Result<UniqueFd> open_config_file(const std::string& path, bool writable);

// The malformed error for a config file of which fewer than 64 bytes (a header) can be read.
Error short_config_error(const std::string& path, std::size_t readable);

// What one read of a config file gave: the bytes from offset 0, and what the file holds.
struct ConfigBytes {
  std::vector<std::uint8_t> bytes;
  // fstat's size, at most 4096 and never below bytes.size(): what root can read. 0 when
  // not asked for.
  std::size_t file_size = 0;
  // Unprivileged readers get 64 bytes of a longer file (drivers/pci/pci-sysfs.c).
  bool limited_by_privilege() const { return bytes.size() < file_size; }
};

// Opens `path` and reads up to `length` bytes from offset 0 in one pread (sysfs gives a
// config read all it can in one call): 64 for the header, 4096 for all that is readable.
// With `with_file_size`, fstat too. Fails as ConfigSpace::open does: the open's or
// fstat's or read's error, or short_config_error() below 64 bytes.
Result<ConfigBytes> read_config_file(const std::string& path, std::size_t length, bool with_file_size);

}  // namespace pcie::detail
