// Accessor cost on one mapping: relaxed, unchecked (ordered), checked and Region (virtual,
// checked) accessors against a raw volatile access to the same addresses. The raw access
// has no ordering; its like-for-like is the relaxed accessor. The ordered accessors' compiler
// barrier (as in the kernel's readl/writel) makes the compiler reload the view's base
// pointer after each access when the view lives in memory, as it does in these loops. The mapping is a fake tree's
// resource0 file (page cache memory), so this measures the instructions our accessors add,
// not a device's latency; `pciectl bench` (a later issue) measures real BARs.
#include <benchmark/benchmark.h>

#include <cstdio>
#include <optional>

#include "bench/ratio_reporter.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie::bench {
namespace {

constexpr std::uint64_t kSpan = 64 * 1024;  // bytes walked per iteration (fits in L2)
std::optional<testing::FakeSysfs> g_tree;
std::optional<BarMapping> g_bar;

template <class T>
void BM_RawVolatileRead(benchmark::State& state) {
  std::byte* base = g_bar->mmio().base();
  for (auto _ : state) {
    T sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      sum += *reinterpret_cast<const volatile T*>(base + offset);
    }
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_UncheckedRead(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    T sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) sum += mmio.read<T>(offset);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_RelaxedRead(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    T sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) sum += mmio.read_relaxed<T>(offset);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_CheckedRead(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    T sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) sum += *mmio.checked_read<T>(offset);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_RegionRead(benchmark::State& state) {
  const Region& region = *g_bar;
  for (auto _ : state) {
    std::uint64_t sum = 0;
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) sum += *region.read(width_of<T>(), offset);
    benchmark::DoNotOptimize(sum);
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_RawVolatileWrite(benchmark::State& state) {
  std::byte* base = g_bar->mmio().base();
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      *reinterpret_cast<volatile T*>(base + offset) = static_cast<T>(offset);
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_UncheckedWrite(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) mmio.write<T>(offset, static_cast<T>(offset));
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_RelaxedWrite(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      mmio.write_relaxed<T>(offset, static_cast<T>(offset));
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_CheckedWrite(benchmark::State& state) {
  const MmioView mmio = g_bar->mmio();
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      benchmark::DoNotOptimize(mmio.checked_write<T>(offset, static_cast<T>(offset)));
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

template <class T>
void BM_RegionWrite(benchmark::State& state) {
  Region& region = *g_bar;
  for (auto _ : state) {
    for (std::uint64_t offset = 0; offset < kSpan; offset += sizeof(T)) {
      benchmark::DoNotOptimize(region.write(width_of<T>(), offset, static_cast<T>(offset)));
    }
    benchmark::ClobberMemory();
  }
  state.SetItemsProcessed(state.iterations() * (kSpan / sizeof(T)));
}

BENCHMARK_TEMPLATE(BM_RawVolatileRead, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RelaxedRead, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_UncheckedRead, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_CheckedRead, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RegionRead, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RawVolatileRead, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RelaxedRead, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_UncheckedRead, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_CheckedRead, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RegionRead, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RawVolatileWrite, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RelaxedWrite, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_UncheckedWrite, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_CheckedWrite, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RegionWrite, std::uint32_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RawVolatileWrite, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RelaxedWrite, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_UncheckedWrite, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_CheckedWrite, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);
BENCHMARK_TEMPLATE(BM_RegionWrite, std::uint64_t)->Repetitions(5)->ReportAggregatesOnly(true);

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto tree = pcie::testing::FakeSysfs::create();
  const pcie::Bdf edu{0, 0, 3, 0};
  if (!tree || !tree->add_device(pcie::testing::qemu_edu(edu))) return 1;
  auto bar = pcie::BarMapping::map(tree->paths(), edu, 0);
  if (!bar) {
    std::fprintf(stderr, "%s\n", bar.error().message().c_str());
    return 1;
  }
  pcie::bench::g_tree.emplace(std::move(*tree));
  pcie::bench::g_bar.emplace(std::move(*bar));
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const char* type : {"std::uint32_t", "std::uint64_t"}) {
    for (const char* op : {"Read", "Write"}) {
      const std::string baseline = std::string("BM_RawVolatile") + op + "<" + type + ">/repeats:5";
      for (const char* kind : {"Relaxed", "Unchecked", "Checked", "Region"}) {
        pairs.emplace_back(std::string("BM_") + kind + op + "<" + type + ">/repeats:5", baseline);
      }
    }
  }
  pcie::bench::RatioReporter reporter(pairs);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  pcie::bench::g_bar.reset();
  pcie::bench::g_tree.reset();
  benchmark::Shutdown();
  return 0;
}
