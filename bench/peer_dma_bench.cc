// Device to device against the bounce it replaces, on QEMU's nvme and ivshmem in the test VM
// (both bound to vfio-pci, one container): the example NVMe driver reads blocks straight
// into ivshmem's BAR2 through a peer window (NvmeDriver::read_to; PRPs are the BAR's bus
// addresses) against reading them into host memory and copying them to the BAR with the
// library's MMIO-safe bulk copy (pcie::copy_to_device); and writes blocks from the BAR
// (write_from) against copying the BAR to host memory (copy_from_device) and writing from
// there. Same run, same sizes, same blocks. The bounce pays one host copy more than it
// must (the example driver's read() and write() copy between its data area and the
// caller's vector: a few percent of the bounce's time at these sizes), and the peer side
// pays PeerDmaWindow::check() (one 2-byte config read) per transfer. Under emulation (TCG) the device's DMA is
// QEMU's memcpy and the CPU's BAR accesses are emulated stores and loads, so the ratio says
// what the bounce costs there, not what a PCIe fabric would give.
//
//   ./scripts/vm --nvme-image IMG --bind 0000:01:00.0=vfio-pci --bind 0000:00:04.0=vfio-pci
//     --add bazel-bin/bench/peer_dma_bench -- peer_dma_bench     (IMG: an 8 MiB file; one line)
//
// Flags: --nvme=BDF (default 0000:01:00.0), --peer=BDF:barN:OFFSET (default
// 0000:00:04.0:bar2:0; 256 KiB from there must lie in the BAR).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "bench/ratio_reporter.h"
#include "examples/common/peer_target.h"
#include "examples/nvme/nvme_driver.h"
#include "pcie/copy.h"
#include "pcie/peer_dma.h"
#include "pcie/vfio.h"

namespace {

constexpr std::uint64_t kLargest = 256 * 1024;
constexpr std::uint64_t kPage = 4096;

pcie::Bdf g_nvme{0, 1, 0, 0};
examples::PeerTarget g_peer{pcie::Bdf{0, 0, 4, 0}, 2, 0};

// Opened once, at the first benchmark; released in reverse order at the end.
struct Setup {
  std::unique_ptr<pcie::VfioDevice> peer;
  std::optional<examples::NvmeDriver> nvme;
  pcie::VfioRegion bar;
  pcie::PeerDmaWindow window;  // the pages holding [offset, offset + kLargest) of the BAR
  std::uint64_t offset_in_window = 0;
};
std::optional<Setup> g_setup;
std::string g_setup_error;

pcie::Result<Setup> open_setup() {
  auto container = pcie::VfioContainer::open();
  if (!container) return std::unexpected(container.error());
  auto nvme_device = container->open_device(g_nvme);
  if (!nvme_device) return std::unexpected(nvme_device.error());
  auto peer = container->open_device(g_peer.bdf, {.reset_on_open = false});  // a target, not driven
  if (!peer) return std::unexpected(peer.error());
  Setup setup;
  setup.peer = std::make_unique<pcie::VfioDevice>(std::move(*peer));
  auto nvme = examples::NvmeDriver::open(std::make_unique<pcie::VfioDevice>(std::move(*nvme_device)));
  if (!nvme) return std::unexpected(nvme.error());
  setup.nvme.emplace(std::move(*nvme));
  auto bar = setup.peer->open_region(pcie::kVfioBar0Region + g_peer.bar);
  if (!bar) return std::unexpected(bar.error());
  setup.bar = std::move(*bar);
  if (g_peer.offset > ~std::uint64_t{0} - kLargest - kPage) {
    return std::unexpected(pcie::make_error(pcie::Errc::out_of_range, "peer_dma_bench", "--peer", "offset too large"));
  }
  const std::uint64_t first = g_peer.offset / kPage * kPage;
  const std::uint64_t end = (g_peer.offset + kLargest + kPage - 1) / kPage * kPage;
  const auto* initiator = dynamic_cast<const pcie::VfioDevice*>(&setup.nvme->device());
  if (initiator == nullptr) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, "peer_dma_bench", g_nvme.to_string(),
                                            "not a VFIO device"));
  }
  auto window = pcie::map_peer_bar(*initiator, *setup.peer, g_peer.bar, first, end - first);
  if (!window) return std::unexpected(window.error());
  setup.window = std::move(*window);
  setup.offset_in_window = g_peer.offset - first;
  return setup;
}

// The setup, or nullptr after telling the benchmark why not.
Setup* setup_or_skip(benchmark::State& state) {
  if (!g_setup && g_setup_error.empty()) {
    auto setup = open_setup();
    if (setup) g_setup.emplace(std::move(*setup));
    else g_setup_error = setup.error().message();
  }
  if (!g_setup) state.SkipWithError(g_setup_error.c_str());
  return g_setup ? &*g_setup : nullptr;
}

std::uint32_t blocks_for(const Setup& setup, benchmark::State& state) {
  return static_cast<std::uint32_t>(state.range(0) / setup.nvme->identity().block_size);
}

void BM_PeerRead(benchmark::State& state) {
  Setup* setup = setup_or_skip(state);
  if (setup == nullptr) return;
  const std::uint32_t blocks = blocks_for(*setup, state);
  for (auto _ : state) {
    auto done = setup->nvme->read_to(0, blocks, setup->window, setup->offset_in_window);
    if (!done) return state.SkipWithError(done.error().message().c_str());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}

void BM_BounceRead(benchmark::State& state) {
  Setup* setup = setup_or_skip(state);
  if (setup == nullptr) return;
  const std::uint32_t blocks = blocks_for(*setup, state);
  for (auto _ : state) {
    auto data = setup->nvme->read(0, blocks);
    if (!data) return state.SkipWithError(data.error().message().c_str());
    auto copied = pcie::copy_to_device(setup->bar, g_peer.offset, data->data(), data->size());
    if (!copied) return state.SkipWithError(copied.error().message().c_str());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}

void BM_PeerWrite(benchmark::State& state) {
  Setup* setup = setup_or_skip(state);
  if (setup == nullptr) return;
  const std::uint32_t blocks = blocks_for(*setup, state);
  for (auto _ : state) {
    auto done = setup->nvme->write_from(0, blocks, setup->window, setup->offset_in_window);
    if (!done) return state.SkipWithError(done.error().message().c_str());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}

void BM_BounceWrite(benchmark::State& state) {
  Setup* setup = setup_or_skip(state);
  if (setup == nullptr) return;
  std::vector<std::byte> data(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto copied = pcie::copy_from_device(data.data(), setup->bar, g_peer.offset, data.size());
    if (!copied) return state.SkipWithError(copied.error().message().c_str());
    auto done = setup->nvme->write(0, data);
    if (!done) return state.SkipWithError(done.error().message().c_str());
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * state.range(0)));
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--nvme=")) {
      auto bdf = pcie::Bdf::parse(arg.substr(7));
      if (!bdf) return std::fprintf(stderr, "peer_dma_bench: %s\n", bdf.error().message().c_str()), 2;
      g_nvme = *bdf;
    } else if (arg.starts_with("--peer=")) {
      auto target = examples::parse_peer_target(arg.substr(7));
      if (!target) return std::fprintf(stderr, "peer_dma_bench: %s\n", target.error().message().c_str()), 2;
      g_peer = *target;
    } else {
      return std::fprintf(stderr, "peer_dma_bench: unknown argument '%s'\n", argv[i]), 2;
    }
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  struct Pair {
    const char* peer;
    const char* bounce;
    void (*peer_function)(benchmark::State&);
    void (*bounce_function)(benchmark::State&);
  };
  for (const Pair& pair : {Pair{"BM_PeerRead", "BM_BounceRead", BM_PeerRead, BM_BounceRead},
                           Pair{"BM_PeerWrite", "BM_BounceWrite", BM_PeerWrite, BM_BounceWrite}}) {
    for (const std::int64_t bytes : {std::int64_t{4096}, std::int64_t{65536}, std::int64_t{kLargest}}) {
      benchmark::RegisterBenchmark(pair.bounce, pair.bounce_function)->Arg(bytes);
      benchmark::RegisterBenchmark(pair.peer, pair.peer_function)->Arg(bytes);
      pairs.emplace_back(std::string(pair.peer) + "/" + std::to_string(bytes),
                         std::string(pair.bounce) + "/" + std::to_string(bytes));
    }
  }
  pcie::bench::RatioReporter reporter(pairs, pcie::bench::RatioKind::speed);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("speed ratio above 1.00x: the device-to-device transfer moves the bytes faster than the bounce "
              "through host memory (under emulation: ratios only)\n");
  g_setup.reset();
  benchmark::Shutdown();
  return 0;
}
