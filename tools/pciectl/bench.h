// pciectl bench: BAR throughput by size and access width for each mapping the BAR allows,
// and single-access latency. Writes only with --allow-write.
#pragma once

#include "pcie/vfio.h"

#include <string>
#include <vector>

#include "pcie/sysfs_paths.h"

namespace pciectl {

struct BenchOptions {
  std::string bdf;
  std::string bar;
  std::string offset = "0";         // window start in the BAR (page-aligned)
  std::string length;               // window length; default min(BAR - offset, 4 MiB)
  std::vector<std::string> sizes;   // transfer sizes; default 64 B x4 .. window
  std::vector<std::string> widths = {"32", "64", "copy"};  // 8/16/32/64-bit loops, copy path
  std::string mapping = "all";      // uc, wc or all (wc only on prefetchable BARs)
  std::string kernel = "auto";      // copy kernel for the copy rows
  unsigned repetitions = 5;
  unsigned warmup = 1;
  double min_time_ms = 10;          // each repetition runs at least this long
  unsigned latency_samples = 1000;
  bool allow_write = false;
  bool enable = false;              // enable decoding first if the device does not decode the BAR
  bool json = false;
  bool progress = false;            // force the progress line (default: when stderr is a terminal)
  bool no_progress = false;
  bool vfio = false;                // through the device's VFIO region (vfio-pci), uncached
};

int run_bench(const pcie::VfioPaths& paths, const std::string& pci_ids, const BenchOptions& options);

}  // namespace pciectl
