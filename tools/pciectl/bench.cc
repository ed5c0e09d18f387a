#include "tools/pciectl/bench.h"

#include "tools/pciectl/bench_measure.h"
#include "tools/pciectl/bench_plan.h"
#include "tools/pciectl/bench_report.h"
#include "tools/pciectl/bench_window.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/removal_watch.h"

namespace pciectl {

// Plan (every usage error before anything is mapped), map (each memory type once, so that
// a refusal costs nothing), measure (each type on a mapping of its own), then render.
int run_bench(const pcie::VfioPaths& vfio_paths, const std::string& pci_ids, const BenchOptions& options) {
  auto plan = bench::make_plan(vfio_paths.sysfs, pci_ids, options);
  if (!plan) return fail(plan.error());
  if (auto probed = bench::probe_mappings(vfio_paths, *plan, options); !probed) return fail(probed.error());
  bench::announce(*plan, options);
  const RemovalWatch removal = RemovalWatch::start(vfio_paths.sysfs, plan->bdf);
  auto results = bench::measure_all(vfio_paths, *plan, options, removal);
  if (!results) return fail(results.error());
  // Nothing is printed for a device that went away during the last row.
  if (auto present = removal.check("bench"); !present) return fail(present.error());
  if (options.json) {
    bench::print_json(*plan, options, *results);
  } else {
    bench::print_text(*plan, options, *results);
  }
  return kSuccess;
}

}  // namespace pciectl
