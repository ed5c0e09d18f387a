// Discovery of a fake tree of 2,000 devices: our scan against pciutils' lspci on the same
// tree. lspci runs as a child process, so every benchmark here reports wall time; the
// child's exec and pci.ids loading are part of what a user of lspci pays, and our scan
// loads pci.ids too.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <optional>

#include "bench/ratio_reporter.h"
#include "pcie/discovery.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie::bench {
namespace {

constexpr int kDevices = 2000;
std::optional<testing::FakeSysfs> g_tree;

bool build_tree() {
  auto tree = testing::FakeSysfs::create();
  if (!tree) return false;
  for (int i = 0; i < kDevices; ++i) {
    const Bdf bdf{0, static_cast<std::uint8_t>(i / 32), static_cast<std::uint8_t>(i % 32), 0};
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
    if (!devices || devices->size() != kDevices) {
      state.SkipWithError("discovery failed");
      return;
    }
    benchmark::DoNotOptimize(devices->data());
  }
  state.SetItemsProcessed(state.iterations() * kDevices);
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
  state.SetItemsProcessed(state.iterations() * kDevices);
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
  benchmark::Initialize(&argc, argv);
  if (!pcie::bench::build_tree()) {
    std::fprintf(stderr, "cannot build the fake sysfs tree\n");
    return 1;
  }
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
