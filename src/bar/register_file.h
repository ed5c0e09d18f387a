// One register read or written through a file rather than a mapping: pread/pwrite of
// exactly `width` bytes, which the kernel turns into one access of that width (sysfs I/O-port
// resource files; VFIO regions that cannot be mapped). The value is little-endian, as PCI is.
#pragma once

#include <cstdint>
#include <string>

#include "pcie/error.h"
#include "pcie/region.h"

namespace pcie {

Result<std::uint64_t> read_register_file(int fd, Width width, std::uint64_t offset, const std::string& path);
Result<void> write_register_file(int fd, Width width, std::uint64_t offset, std::uint64_t value,
                                 const std::string& path);

}  // namespace pcie
