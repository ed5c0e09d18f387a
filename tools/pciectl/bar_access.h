// What pciectl read, write and dump share: their BDF/BAR/offset options and the opening of
// the BAR through sysfs or VFIO (pcie/bar_opener.h).
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "pcie/bar_opener.h"
#include "pcie/region.h"
#include "tools/pciectl/global_options.h"
#include "tools/pciectl/removal_watch.h"

namespace pciectl {

struct AccessOptions {
  std::string bdf, bar, offset, value, length;
  unsigned width_bits = 32;
  bool enable = false;  // enable the device's decoding of the BAR first, if it is off
  std::string via = "auto";  // auto, sysfs or vfio
  bool vfio = false;         // --vfio: --via vfio
};

// The width, the start offset and the opened BAR.
struct BarAccess {
  pcie::Width width = pcie::Width::bits32;
  std::uint64_t offset = 0;
  std::unique_ptr<pcie::Region> region;
  pcie::BarPath path = pcie::BarPath::sysfs;
  // Watches the device while the region is held (removal_watch.h); declared after the
  // region, so it stops first.
  std::optional<RemovalWatch> removal;
};

// Parses the options and opens the BAR (writable when asked), and starts watching the
// device for its removal as `span` asks (removal_watch.h); says on stderr which path was
// taken when another was refused first (unless --json). Fails with the parse or open error.
pcie::Result<BarAccess> open_bar_access(const GlobalOptions& global, const AccessOptions& access, bool writable,
                                        RemovalWatch::Span span);

// The positional "bdf" and "bar" every BAR command takes.
void add_bdf_and_bar(CLI::App* command, AccessOptions& access);
// --via auto|sysfs|vfio and --vfio.
void add_path_choice(CLI::App* command, AccessOptions& access);

}  // namespace pciectl
