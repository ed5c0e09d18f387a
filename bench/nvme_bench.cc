// Random reads on QEMU's nvme in the test VM: the example user-space driver (examples/nvme,
// through VFIO) against the kernel's nvme driver measured by Debian's fio (io_uring,
// O_DIRECT) on the same emulated device in the same run, at queue depth 1 and 32. Under
// emulation the device's work is QEMU's, so the ratio measures the software path from
// submission to completion: the kernel's block layer and system calls against our
// doorbell and polled completion queue.
//
//   ./scripts/vm --nvme-image IMG --nvme-block-size 4096 --nvme-driver --add bazel-bin/bench/nvme_bench
//     --add /usr/bin/fio -- nvme_bench     (IMG: an 8 MiB file; one line)
//
// The nvme device starts on the kernel's driver (fio runs first), then is bound to
// vfio-pci for ours. Flags: --bdf=0000:01:00.0 --count=N (reads per case, default 20000).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "bench/ratio_reporter.h"
#include "examples/nvme/nvme_driver.h"
#include "pcie/binding.h"
#include "pcie/vfio.h"

namespace {

pcie::Bdf g_bdf{0, 1, 0, 0};
unsigned g_count = 20000;
std::optional<examples::NvmeDriver> g_driver;

// Runs fio on the kernel's block device; returns its read IOPS, or nullopt with the reason.
std::optional<double> fio_iops(unsigned queue_depth, std::string& why) {
  const std::string command =
      "fio --name=kernel --filename=/dev/nvme0n1 --direct=1 --rw=randread --bs=4k --ioengine=io_uring "
      "--iodepth=" + std::to_string(queue_depth) + " --number_ios=" + std::to_string(g_count) +
      " --randrepeat=1 --norandommap --output-format=json 2>&1";
  FILE* pipe = ::popen(command.c_str(), "r");
  if (pipe == nullptr) return why = "popen failed", std::nullopt;
  std::string output;
  char chunk[4096];
  for (std::size_t got; (got = std::fread(chunk, 1, sizeof chunk, pipe)) > 0;) output.append(chunk, got);
  if (::pclose(pipe) != 0) return why = "fio failed: " + output.substr(0, 300), std::nullopt;
  const auto json = nlohmann::json::parse(output.substr(output.find('{')), nullptr, false);
  if (json.is_discarded() || !json.contains("jobs")) return why = "fio printed no JSON", std::nullopt;
  return json["jobs"][0]["read"]["iops"].get<double>();
}

void BM_KernelFio(benchmark::State& state) {
  for (auto _ : state) {
    std::string why;
    auto iops = fio_iops(static_cast<unsigned>(state.range(0)), why);
    if (!iops || *iops <= 0) return state.SkipWithError(why.c_str());
    state.SetIterationTime(g_count / *iops);
  }
  state.SetItemsProcessed(g_count);
}

void BM_OurDriver(benchmark::State& state) {
  if (!g_driver) {
    // The kernel's turn is over: hand the device to vfio-pci and open it ourselves.
    if (auto bound = pcie::bind_driver({}, g_bdf, "vfio-pci", {.force = true}); !bound) {
      return state.SkipWithError(bound.error().message().c_str());
    }
    auto container = pcie::VfioContainer::open();
    if (!container) return state.SkipWithError(container.error().message().c_str());
    auto device = container->open_device(g_bdf);
    if (!device) return state.SkipWithError(device.error().message().c_str());
    auto driver = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*device)));
    if (!driver) return state.SkipWithError(driver.error().message().c_str());
    if (driver->identity().block_size != 4096 && driver->identity().block_size != 512) {
      return state.SkipWithError("unexpected block size");
    }
    g_driver.emplace(std::move(*driver));
  }
  for (auto _ : state) {
    auto elapsed = g_driver->random_reads(static_cast<unsigned>(state.range(0)), g_count, 42);
    if (!elapsed) return state.SkipWithError(elapsed.error().message().c_str());
    state.SetIterationTime(std::chrono::duration<double>(*elapsed).count());
  }
  state.SetItemsProcessed(g_count);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--bdf=")) {
      auto bdf = pcie::Bdf::parse(arg.substr(6));
      if (!bdf) return std::fprintf(stderr, "nvme_bench: %s\n", bdf.error().message().c_str()), 2;
      g_bdf = *bdf;
    } else if (arg.starts_with("--count=")) {
      g_count = static_cast<unsigned>(std::strtoul(argv[i] + 8, nullptr, 10));
      if (g_count == 0 || g_count > 10000000) return std::fprintf(stderr, "nvme_bench: --count out of range\n"), 2;
    }
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  for (const int depth : {1, 32}) {
    benchmark::RegisterBenchmark("BM_KernelFio", BM_KernelFio)->Arg(depth)->Iterations(1)->UseManualTime();
  }
  for (const int depth : {1, 32}) {
    benchmark::RegisterBenchmark("BM_OurDriver", BM_OurDriver)->Arg(depth)->Iterations(1)->UseManualTime();
    const std::string suffix = "/" + std::to_string(depth) + "/iterations:1/manual_time";
    pairs.emplace_back("BM_OurDriver" + suffix, "BM_KernelFio" + suffix);
  }
  pcie::bench::RatioReporter reporter(pairs, pcie::bench::RatioKind::speed);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("%u random 4 KiB-or-block reads per case; speed ratio above 1.00x: our driver completes more per "
              "second than the kernel's nvme driver under fio\n",
              g_count);
  g_driver.reset();
  benchmark::Shutdown();
  return 0;
}
