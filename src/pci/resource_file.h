// A device's <device>/resource file, read without libpci: the kernel writes one
// "0x%016llx 0x%016llx 0x%016llx" line (start, end, flags) per resource, BARs 0-5 first
// (drivers/pci/pci-sysfs.c, resource_show). Opening a BAR needs only its line, not a whole
// libpci session and the config reads of describe(). Private.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie::sysfs {

struct ResourceLine {
  std::uint64_t start = 0;
  std::uint64_t end = 0;
  std::uint64_t flags = 0;  // IORESOURCE_* (include/linux/ioport.h)
};

// Parses the file's text: at most kMaxResourceLines lines of exactly three 0x-prefixed hex
// numbers separated by single spaces. Fails with malformed, naming `path` and the
// line, on anything else (a line that is cut short, a number that overflows, too many).
inline constexpr std::size_t kMaxResourceLines = 64;
Result<std::vector<ResourceLine>> parse_resource_file(std::string_view text, const std::string& path);

// Whether the kernel gave the resource an address: neither IORESOURCE_DISABLED (0x10000000)
// nor IORESOURCE_UNSET (0x20000000, "no address assigned yet") is set
// (include/linux/ioport.h).
bool resource_assigned(std::uint64_t flags);

// BAR `index` (0..5) as a resource line describes it: memory or I/O, 64-bit and
// prefetchable from the IORESOURCE flags; size 0 (not implemented) when end <= start, as
// libpci reads it.
BarInfo bar_from_resource(unsigned index, const ResourceLine& line);

// The BARs `bdf` implements (size above 0; a 64-bit BAR's upper half has none), in index
// order, from its resource file. Fails not_found when the device directory does not exist,
// with the read's error when the file cannot be read, malformed when it does not
// parse.
Result<std::vector<BarInfo>> read_bars(const SysfsPaths& paths, const Bdf& bdf);

}  // namespace pcie::sysfs
