// pciectl bench, step 2: the window mapped, through sysfs or the device's VFIO region.
//
// One memory type at a time: while an uncached mapping of the window exists, x86 PAT makes
// a write-combined one uncached too (and the reverse), so holding both would measure one
// type twice. Each type is mapped (and checked against the kernel's PAT table) once up
// front by probe_mappings, so that a refusal costs nothing, then again for its rows only.
#pragma once

#include <memory>

#include "pcie/error.h"
#include "pcie/memory_type.h"
#include "pcie/region.h"
#include "pcie/vfio.h"
#include "tools/pciectl/bench.h"
#include "tools/pciectl/bench_plan.h"

namespace pciectl::bench {

// One mapped window of the BAR and what owns it: a sysfs BarMapping, or a VFIO region
// (which keeps its device and container open). `view` is valid while `owner` lives.
struct Window {
  std::unique_ptr<pcie::Region> owner;
  pcie::MmioView view;
  pcie::MemoryType type = pcie::MemoryType::uncached;  // as granted, where verified
  pcie::MemoryTypeReport report;
};

// Maps the plan's window as `type`: with options.vfio through a VFIO container of its own
// (uncached only; fails where vfio-pci leaves the window unmapped), else through sysfs.
// Writable with options.allow_write.
pcie::Result<Window> map_window(const pcie::VfioPaths& paths, const Plan& plan, const BenchOptions& options,
                                pcie::MemoryType type);

// Maps and unmaps each of plan.mappings once. With the default --mapping all, a
// write-combined mapping the kernel does not offer is dropped from plan.mappings with a
// note on stderr; any other refusal is the error.
pcie::Result<void> probe_mappings(const pcie::VfioPaths& paths, Plan& plan, const BenchOptions& options);

}  // namespace pciectl::bench
