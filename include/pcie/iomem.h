// The kernel's map of physical address space, /proc/iomem: which range is RAM, which is a
// device's BAR (named by its BDF) and which driver claimed it (request_mem_region: a child
// range named after the driver), as the kernel's resource tree holds it. As root it shows
// addresses; for other users every address reads 0 (kernel/resource.c, since Linux 4.6):
// the tree then says so (addresses_hidden) instead of pretending the ranges are at 0.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie {

// One range of /proc/iomem with the ranges nested in it (one more level of indentation).
struct IomemRange {
  std::uint64_t start = 0;  // first physical address (0 for all when addresses are hidden)
  std::uint64_t last = 0;  // inclusive
  std::string name;        // "System RAM", "0000:00:03.0", "vfio-pci", "PCI Bus 0000:00"
  std::vector<IomemRange> children;  // the ranges inside this one, in file order
  // The device whose BAR this range is: its name is a BDF.
  std::optional<Bdf> device() const;
};

// The whole of /proc/iomem as parse_iomem() read it.
struct IomemTree {
  std::vector<IomemRange> ranges;  // top level, in file order
  bool addresses_hidden = false;   // every address reads 0: not root
};

// Parses /proc/iomem text: lines "START-END : NAME", hex addresses, two spaces of
// indentation per level. Untrusted: at most 65,536 lines and 16 levels; a line that does
// not parse, a child outside its parent or an end before its start is malformed (naming
// the line).
Result<IomemTree> parse_iomem(std::string_view text);

// Reads and parses `path`.
Result<IomemTree> read_iomem(const std::string& path = "/proc/iomem");

// The ranges holding `address`, outermost first (empty when none does, or when the
// addresses are hidden).
std::vector<const IomemRange*> iomem_ranges_at(const IomemTree& tree, std::uint64_t address);

// Who owns the physical range holding `address`, the way request_mem_region sees it.
struct IomemOwner {
  std::optional<Bdf> device;           // the device whose BAR it is
  std::optional<std::string> claimed;  // the driver (or other claimer) that requested it
  std::string description;             // "0000:00:03.0 (claimed by vfio-pci)", "System RAM", ...
  bool ram = false;                    // System RAM (or inside it)
};
// The owner of `address`: the innermost range named by a BDF is the device, and its child at
// `address`, if any, the claimer; ram when any range holding it is "System RAM". With
// hidden addresses or no range at `address`, all unset and the description says why.
IomemOwner iomem_owner(const IomemTree& tree, std::uint64_t address);

}  // namespace pcie
