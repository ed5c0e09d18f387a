// pciectl bench, step 3: the timed loops. Throughput by direction, access kind and size
// for each memory type, then the latency of single accesses at the window's start.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "pcie/error.h"
#include "pcie/memory_type.h"
#include "pcie/region.h"
#include "pcie/vfio.h"
#include "tools/pciectl/bench.h"
#include "tools/pciectl/bench_plan.h"
#include "tools/pciectl/removal_watch.h"

namespace pciectl::bench {

// One row: a mapping, a direction, an access kind and a size.
struct Measurement {
  pcie::MemoryType mapping = pcie::MemoryType::uncached;
  bool write = false;
  std::string access;  // "8-bit" .. "64-bit", or "copy (avx512)"
  std::uint64_t size = 0;
  std::vector<double> gigabytes_per_second;  // one per repetition
  // The middle repetition (the upper of the two middle ones); 0 with none.
  double median() const;
};

struct Latency {
  pcie::MemoryType mapping = pcie::MemoryType::uncached;
  std::string what;  // "32-bit read", "posted 32-bit write + read-back"
  double median_ns = 0;
  double p99_ns = 0;
};

struct Results {
  std::vector<pcie::MemoryTypeReport> reports;  // one per mapping measured, in order
  std::vector<Measurement> throughput;
  std::vector<Latency> latencies;
};

// Maps the window as each of plan.mappings in turn (map_window; one at a time) and
// measures it: writes only with options.allow_write, each row options.warmup passes, then
// options.repetitions timed ones of at least options.min_time_ms. Shows a progress line on
// stderr when asked or when stderr is a terminal, cleared before it returns. Asks `removal`
// after each row and each mapping's latencies, and stops with its device_removed. Fails
// with a mapping's or the copy path's refusal.
pcie::Result<Results> measure_all(const pcie::VfioPaths& paths, const Plan& plan, const BenchOptions& options,
                                  const RemovalWatch& removal);

}  // namespace pciectl::bench
