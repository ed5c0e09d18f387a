// Accessor cost on one mapping: relaxed, unchecked (ordered), checked and Region (virtual,
// checked) accessors against a raw volatile access to the same addresses. The raw access
// has no ordering; its like-for-like is the relaxed accessor. The ordered accessors'
// compiler barrier (as in the kernel's readl/writel) makes the compiler reload the view's
// base pointer after each access when the view lives in memory, as it does in these loops.
// The mapping is a fake tree's resource0 file (page cache memory), so this measures the
// instructions our accessors add, not a device's latency; `pciectl bench` (a later issue)
// measures real BARs.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <optional>
#include <string>

#include "bench/ratio_reporter.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie::bench {
namespace {

constexpr std::uint64_t kSpan = 64 * 1024;  // bytes walked per iteration (fits in L2)
std::optional<testing::FakeSysfs> g_tree;
std::optional<BarMapping> g_bar;

enum class Access { raw, relaxed, ordered, checked, region };
constexpr const char* kAccessNames[] = {"raw_volatile", "relaxed", "unchecked", "checked", "region"};

template <class T, Access kind>
T load(const MmioView& mmio, const Region& region, std::uint64_t offset) {
  if constexpr (kind == Access::raw) return *reinterpret_cast<const volatile T*>(mmio.base() + offset);
  if constexpr (kind == Access::relaxed) return mmio.read_relaxed<T>(offset);
  if constexpr (kind == Access::ordered) return mmio.read<T>(offset);
  if constexpr (kind == Access::checked) return *mmio.checked_read<T>(offset);
  if constexpr (kind == Access::region) return static_cast<T>(*region.read(width_of<T>(), offset));
}

template <class T, Access kind>
void store(const MmioView& mmio, Region& region, std::uint64_t offset, T value) {
  if constexpr (kind == Access::raw) *reinterpret_cast<volatile T*>(mmio.base() + offset) = value;
  if constexpr (kind == Access::relaxed) mmio.write_relaxed<T>(offset, value);
  if constexpr (kind == Access::ordered) mmio.write<T>(offset, value);
  if constexpr (kind == Access::checked) benchmark::DoNotOptimize(mmio.checked_write<T>(offset, value));
  if constexpr (kind == Access::region) benchmark::DoNotOptimize(region.write(width_of<T>(), offset, value));
}

template <class T, Access kind>
void read_loop(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  const Region& region = *g_bar;
  for (auto _ : state) {
    T sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) sum += load<T, kind>(mmio, region, offset);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T, Access kind>
void write_loop(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  Region& region = *g_bar;
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      store<T, kind>(mmio, region, offset, static_cast<T>(offset));
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

// Registers read and write loops of width T for every access kind, named "read32/relaxed"
// and so on, and pairs each with the raw loop of the same operation and width.
template <class T, Access... kinds>
void register_width(std::vector<std::pair<std::string, std::string>>& pairs) {
  const std::string bits = std::to_string(8 * sizeof(T));
  for (const auto& [op, loops] :
       {std::pair{std::string("read"), std::vector<void (*)(benchmark::State&)>{read_loop<T, kinds>...}},
        std::pair{std::string("write"), std::vector<void (*)(benchmark::State&)>{write_loop<T, kinds>...}}}) {
    const Access order[] = {kinds...};
    for (std::size_t i = 0; i < loops.size(); ++i) {
      const std::string name = op + bits + "/" + kAccessNames[static_cast<int>(order[i])];
      benchmark::RegisterBenchmark(name.c_str(), loops[i])->Repetitions(5)->ReportAggregatesOnly(true);
      if (order[i] != Access::raw) {
        pairs.emplace_back(name + "/repeats:5", op + bits + "/raw_volatile/repeats:5");
      }
    }
  }
}

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  using pcie::bench::Access;
  benchmark::Initialize(&argc, argv);
  auto tree = pcie::testing::make_vm_tree();
  if (!tree) return 1;
  auto bar = pcie::BarMapping::map(tree->paths(), pcie::testing::kVmEdu, 0);
  if (!bar) {
    std::fprintf(stderr, "%s\n", bar.error().message().c_str());
    return 1;
  }
  pcie::bench::g_tree.emplace(std::move(*tree));
  pcie::bench::g_bar.emplace(std::move(*bar));
  std::vector<std::pair<std::string, std::string>> pairs;
  pcie::bench::register_width<std::uint32_t, Access::raw, Access::relaxed, Access::ordered, Access::checked,
                              Access::region>(pairs);
  pcie::bench::register_width<std::uint64_t, Access::raw, Access::relaxed, Access::ordered, Access::checked,
                              Access::region>(pairs);
  pcie::bench::RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  pcie::bench::g_bar.reset();
  pcie::bench::g_tree.reset();
  benchmark::Shutdown();
  return 0;
}
