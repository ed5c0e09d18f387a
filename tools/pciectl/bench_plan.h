// pciectl bench, step 1: what to measure. The command line is parsed and checked against
// the device and its BAR before anything is mapped, so that every usage error costs nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/copy.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "pcie/memory_type.h"
#include "pcie/sysfs_paths.h"
#include "tools/pciectl/bench.h"

namespace pciectl::bench {

// What one run measures, checked: the device, the window of its BAR, the transfer sizes,
// the memory types to map it as and the access kinds.
struct Plan {
  pcie::Bdf bdf;
  unsigned bar_index = 0;
  pcie::CopyKernel kernel = pcie::CopyKernel::automatic;  // for the copy rows
  pcie::DeviceInfo device;
  pcie::BarInfo bar;
  std::string bar_name;                    // "0000:03:00.0 BAR2": the object of every error
  std::uint64_t offset = 0;                // the window in the BAR
  std::uint64_t length = 0;
  std::string window_text;                 // "0000:03:00.0 BAR2 [0x0, 0x1000) (4 KiB)"
  std::vector<std::uint64_t> sizes;        // each fits the window
  std::vector<pcie::MemoryType> mappings;  // uncached first; write-combined where prefetchable
  std::vector<unsigned> access_bits;       // 8, 16, 32 or 64, in --widths order
  bool with_copy = false;                  // --widths names "copy"
};

// Parses and checks `options` against the device at options.bdf (described from `paths`
// and `pci_ids`, whose warnings it prints as `pciectl info` does). Fails with the first
// usage error, not-found or unsupported BAR, in the order the options are documented.
pcie::Result<Plan> make_plan(const pcie::SysfsPaths& paths, const std::string& pci_ids,
                             const BenchOptions& options);

}  // namespace pciectl::bench
