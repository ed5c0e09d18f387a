// The cost of opening and closing a BAR mapping, against the floor: a raw open + mmap of
// <device>/resourceN + munmap + close, in the same run, on a fake sysfs tree (the test VM's
// devices as files: nothing here maps a device of this machine).
//
//   BM_RawOpenMmap      open(2), mmap(2) of the whole BAR, munmap(2), close(2): no checks
//   BM_BarMapping       BarMapping::map: the BAR from <device>/resource, the driver link,
//                       decoding from the command register, the memory-type check
//   BM_OpenBar          pcie::open_bar (sysfs path): the same plus the path choice
//
// None of them starts a libpci session (a BAR is opened from the resource file); the ratios
// say what the checks cost over the bare system calls.
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>

#include "bench/ratio_reporter.h"
#include "pcie/bar_opener.h"
#include "pcie/sysfs_bar.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie::bench {
namespace {

std::optional<testing::FakeSysfs> g_tree;
constexpr unsigned kBar = 2;  // ivshmem's memory BAR

void BM_RawOpenMmap(benchmark::State& state) {
  const std::string path = g_tree->device_dir(testing::kVmIvshmem) + "/resource" + std::to_string(kBar);
  const off_t size = [&] {
    const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    const off_t end = fd >= 0 ? ::lseek(fd, 0, SEEK_END) : -1;
    if (fd >= 0) ::close(fd);
    return end;
  }();
  if (size <= 0) return state.SkipWithError(("cannot size " + path).c_str());
  for (auto _ : state) {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    void* mapped = ::mmap(nullptr, static_cast<std::size_t>(size), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (fd < 0 || mapped == MAP_FAILED) return state.SkipWithError("open or mmap failed");
    benchmark::DoNotOptimize(mapped);
    ::munmap(mapped, static_cast<std::size_t>(size));
    ::close(fd);
  }
}

void BM_BarMapping(benchmark::State& state) {
  for (auto _ : state) {
    auto bar = BarMapping::map(g_tree->paths(), testing::kVmIvshmem, kBar, {.writable = true});
    if (!bar) return state.SkipWithError(bar.error().message().c_str());
    benchmark::DoNotOptimize(bar->mapped_base());
  }
}

void BM_OpenBar(benchmark::State& state) {
  BarOpenOptions options;
  options.preference = BarPathPreference::sysfs_only;
  options.writable = true;
  options.paths.sysfs = g_tree->paths();
  for (auto _ : state) {
    auto bar = open_bar(testing::kVmIvshmem, kBar, options);
    if (!bar) return state.SkipWithError(bar.error().message().c_str());
    benchmark::DoNotOptimize(bar->region.get());
  }
}

BENCHMARK(BM_RawOpenMmap)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_BarMapping)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_OpenBar)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace pcie::bench

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  auto tree = pcie::testing::make_vm_tree();
  if (!tree) return std::fprintf(stderr, "bar_open_bench: %s\n", tree.error().message().c_str()), 1;
  pcie::bench::g_tree.emplace(std::move(*tree));
  pcie::bench::RatioReporter reporter({{"BM_BarMapping", "BM_RawOpenMmap"}, {"BM_OpenBar", "BM_RawOpenMmap"}});
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
