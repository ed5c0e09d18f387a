// Discovery of a fake tree of 2,000 devices: our scan against pciutils' lspci on the same
// tree. lspci runs as a child process, so every benchmark here reports wall time; the
// child's exec and pci.ids loading are part of what a user of lspci pays, and our scan
// loads pci.ids too.
//
// Flags (before Google Benchmark's own):
//   --devices=N          functions in the tree (default 2000; up to 65536: 256 buses x 32
//                        devices x 8 functions), to see how the cost grows with the tree
//   --scan-once=LEVEL    build the tree, run one scan (ids, bindings or full) and exit: a
//                        single scan to profile (perf record, strace -c)
#include <benchmark/benchmark.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "bench/ratio_reporter.h"
#include "pcie/discovery.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie::bench {
namespace {

int g_devices = 2000;
std::optional<testing::FakeSysfs> g_tree;

// Function i of the tree: devices 0..31 of bus 0, then of bus 1, ... (function 0), and
// past 8,192 functions the same slots again as functions 1..7.
Bdf bdf_of(int i) {
  constexpr int kSlots = 256 * 32;
  const int slot = i % kSlots;
  return Bdf{0, static_cast<std::uint8_t>(slot / 32), static_cast<std::uint8_t>(slot % 32),
             static_cast<std::uint8_t>(i / kSlots)};
}

bool build_tree() {
  auto tree = testing::FakeSysfs::create();
  if (!tree) return false;
  for (int i = 0; i < g_devices; ++i) {
    const Bdf bdf = bdf_of(i);
    testing::FakeDevice device;
    switch (i % 4) {
      case 0: device = testing::qemu_edu(bdf); break;
      case 1: device = testing::qemu_ivshmem(bdf); break;
      case 2: device = testing::qemu_pci_testdev(bdf); break;
      default: device = testing::qemu_nvme(bdf); break;
    }
    if (!tree->add_device(device)) return false;
  }
  g_tree.emplace(std::move(*tree));
  return true;
}

void run_discovery(benchmark::State& state, bool bindings, bool capabilities) {
  DiscoveryOptions options;
  options.paths = g_tree->paths();
  options.read_bindings = bindings;
  options.read_capabilities = capabilities;
  for (auto _ : state) {
    auto devices = discover(options);
    if (!devices || devices->size() != static_cast<std::size_t>(g_devices)) {
      state.SkipWithError("discovery failed");
      return;
    }
    benchmark::DoNotOptimize(devices->data());
  }
  state.SetItemsProcessed(state.iterations() * g_devices);
}

void run_lspci(benchmark::State& state, const char* flags) {
  const std::string command = "/usr/bin/lspci -A linux-sysfs -O sysfs.path=" + g_tree->pci_root() + " " + flags +
                              " >/dev/null 2>&1";
  for (auto _ : state) {
    if (std::system(command.c_str()) != 0) {
      state.SkipWithError("lspci failed (is pciutils installed?)");
      return;
    }
  }
  state.SetItemsProcessed(state.iterations() * g_devices);
}

// Each pair gathers the same facts. Ids: IDs, classes, revision, names, BARs (`lspci -nn -D`).
void BM_OurScan_Ids(benchmark::State& state) { run_discovery(state, false, false); }
void BM_Lspci_Ids(benchmark::State& state) { run_lspci(state, "-nn -D"); }
// Bindings: plus the bound driver (and our IOMMU group and NUMA node) (`lspci -nn -k -D`).
void BM_OurScan_Bindings(benchmark::State& state) { run_discovery(state, true, false); }
void BM_Lspci_Bindings(benchmark::State& state) { run_lspci(state, "-nn -k -D"); }
// Full: plus config space, capability lists and link status (`lspci -vvv -nn -D`).
void BM_OurScan_Full(benchmark::State& state) { run_discovery(state, true, true); }
void BM_Lspci_Full(benchmark::State& state) { run_lspci(state, "-vvv -nn -D"); }

// One scan at `level`, for a profiler; 0 when it found every function.
int scan_once(std::string_view level) {
  DiscoveryOptions options;
  options.paths = g_tree->paths();
  options.read_bindings = level != "ids";
  options.read_capabilities = level == "full";
  if (level != "ids" && level != "bindings" && level != "full") {
    return std::fprintf(stderr, "discovery_bench: --scan-once takes ids, bindings or full\n"), 2;
  }
  auto devices = discover(options);
  if (!devices) return std::fprintf(stderr, "discovery_bench: %s\n", devices.error().message().c_str()), 1;
  return devices->size() == static_cast<std::size_t>(g_devices) ? 0 : 1;
}

#define PCIE_DISCOVERY_BENCHMARK(name) \
  BENCHMARK(name)->Unit(benchmark::kMillisecond)->UseRealTime()->MinTime(1.0)->Repetitions(5)->ReportAggregatesOnly(true)
PCIE_DISCOVERY_BENCHMARK(BM_OurScan_Ids);
PCIE_DISCOVERY_BENCHMARK(BM_Lspci_Ids);
PCIE_DISCOVERY_BENCHMARK(BM_OurScan_Bindings);
PCIE_DISCOVERY_BENCHMARK(BM_Lspci_Bindings);
PCIE_DISCOVERY_BENCHMARK(BM_OurScan_Full);
PCIE_DISCOVERY_BENCHMARK(BM_Lspci_Full);

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  std::string scan_once;
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument.starts_with("--devices=")) {
      // The whole value must be a number: --devices=10abc is refused, not taken as 10.
      const std::string_view value = argument.substr(10);
      int devices = 0;
      const auto [end, error] = std::from_chars(value.data(), value.data() + value.size(), devices);
      pcie::bench::g_devices = error == std::errc() && end == value.data() + value.size() ? devices : 0;
    } else if (argument.starts_with("--scan-once=")) {
      scan_once = argument.substr(12);
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (pcie::bench::g_devices < 1 || pcie::bench::g_devices > 65536) {
    return std::fprintf(stderr, "discovery_bench: --devices must be 1 to 65536\n"), 2;
  }
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  if (!pcie::bench::build_tree()) {
    std::fprintf(stderr, "cannot build the fake sysfs tree\n");
    return 1;
  }
  if (!scan_once.empty()) return pcie::bench::scan_once(scan_once);
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const char* level : {"Ids", "Bindings", "Full"}) {
    const std::string suffix = std::string(level) + "/min_time:1.000/repeats:5/real_time";
    pairs.emplace_back("BM_OurScan_" + suffix, "BM_Lspci_" + suffix);
  }
  pcie::bench::RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
