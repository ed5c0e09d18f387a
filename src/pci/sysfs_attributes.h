// Numbers in a device's sysfs attribute files (vendor, class, numa_node, sriov_numvfs...),
// each read in one pread (sys::read_attribute) and parsed strictly (sysfs::parse_number).
// Private.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie::sysfs {

// An attribute the kernel writes only for some devices (sriov_totalvfs) or that may be
// absent in a partial tree: nullopt when absent. One that exists but cannot be read, or
// holds no number, is nullopt too, with a warning appended that says so and why: a field
// missing for an unknown reason must never look like a field the device does not have.
std::optional<std::int64_t> read_optional_number(const std::string& path, std::vector<std::string>& warnings);

// The error for an attribute file every device has (resource, vendor, class...) that
// could not be read: "read device attributes of `bdf`", keeping the read's errno and
// reason. malformed when the file is absent (ENOENT, ENOTDIR: the tree is not what a
// kernel writes), permission_denied on EACCES/EPERM, otherwise the read's own code.
Error required_attribute_error(const Error& read, const std::string& path, const Bdf& bdf);

// An attribute every device has (vendor, device, class), holding a number from 0 to
// `max`. Fails with required_attribute_error(), or malformed when it holds no such number.
Result<std::uint32_t> read_required_number(const std::string& path, const Bdf& bdf, std::uint32_t max);

}  // namespace pcie::sysfs
