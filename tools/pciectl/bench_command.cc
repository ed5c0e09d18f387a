// pciectl bench BDF BAR: BAR throughput and latency (run_bench, bench.h).
#include <memory>

#include "tools/pciectl/bench.h"
#include "tools/pciectl/command.h"

namespace pciectl {
namespace {

void add_bench_options(CLI::App* command, BenchOptions& bench) {
  command->add_option("bdf", bench.bdf, "device address")->required();
  command->add_option("bar", bench.bar, "bar0 .. bar5 (a memory BAR)")->required();
  command->add_option("--offset", bench.offset, "window start in the BAR, page-aligned (default 0)");
  command->add_option("--length", bench.length, "window length (default: to the BAR's end, at most 4M)");
  command->add_option("--sizes", bench.sizes, "transfer sizes, e.g. 64,4K,1M (default 64 B x4 up to the window)")
      ->delimiter(',');
  command->add_option("--widths", bench.widths, "access kinds: 8,16,32,64,copy (default 32,64,copy)")->delimiter(',');
  command->add_option("--mapping", bench.mapping, "uc, wc or all (default all; wc needs a prefetchable BAR)")
      ->check(CLI::IsMember({"uc", "wc", "all"}));
  command->add_option("--kernel", bench.kernel,
                      "copy kernel: auto, registers, sse2, sse4.1, avx2, avx512, movdir64b (default auto)");
  command->add_option("--repetitions", bench.repetitions, "measurements per row (default 5; the median is shown)");
  command->add_option("--warmup", bench.warmup, "unmeasured passes before each row (default 1)");
  command->add_option("--min-time-ms", bench.min_time_ms, "shortest measurement (default 10 ms)");
  command->add_option("--latency-samples", bench.latency_samples, "accesses timed one by one (default 1000)");
  command->add_flag("--allow-write", bench.allow_write, "also benchmark writes: overwrites the window");
  command->add_flag("--json", bench.json, "print JSON");
  command->add_flag("--enable", bench.enable, kEnableHelp);
  command->add_flag("--vfio", bench.vfio, "through the device's VFIO region (bound to vfio-pci; uncached only, no reset)");
  command->add_flag("--progress", bench.progress, "show the progress line even when stderr is not a terminal");
  command->add_flag("--no-progress", bench.no_progress, "never show the progress line");
}

}  // namespace

void register_bench(CLI::App& app, Commands& commands) {
  auto bench = std::make_shared<BenchOptions>();
  CLI::App* command = app.add_subcommand(
      "bench", "BAR throughput by size and access width, and access latency (writes need --allow-write)");
  add_bench_options(command, *bench);
  commands.push_back({command, [bench] { return bench->json; },
                      [bench](const GlobalOptions& global, bool json) {
                        bench->json = bench->json || json;
                        return run_bench(vfio_paths_of(global), global.pci_ids, *bench);
                      }});
}

}  // namespace pciectl
