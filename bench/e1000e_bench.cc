// Echo rate on QEMU's e1000e in the test VM, in ixy's manner: the example user-space driver
// (examples/e1000e, `echo --batch B` through VFIO) against two baselines on the same
// emulated NIC in the same run: DPDK's e1000 poll-mode driver (dpdk-testpmd, macswap,
// --burst=B, through vfio-pci) and the kernel's e1000e driver with an AF_PACKET echo
// (packet_echo: recvmmsg/sendmmsg of B). The traffic comes from this program at the far end
// of QEMU's -netdev dgram (tests/vm/dgram_wire.h): 60-byte frames, up to 256 in flight,
// for 3 s per case after the guest answers. Each case boots the VM once. Under emulation the
// NIC and the wire are QEMU's and this process's, the same for all three: the ratios
// measure the guest's software path per frame, not a real NIC.
//
//   bazel build //bench:e1000e_bench //bench:packet_echo //examples/e1000e:e1000e-driver
//   bazel-bin/bench/e1000e_bench        (from the repository root; needs dpdk-dev for testpmd)
//
// Flags: --pcie-vm=PATH --driver=PATH --packet-echo=PATH (defaults: this checkout's),
// --seconds=N (per case, default 3).
#include <benchmark/benchmark.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "bench/ratio_reporter.h"
#include "tests/vm/dgram_wire.h"

extern char** environ;

namespace {

std::string g_pcie_vm = "tests/vm/pcie-vm";
std::string g_driver = "bazel-bin/examples/e1000e/e1000e-driver";
std::string g_packet_echo = "bazel-bin/bench/packet_echo";
int g_seconds = 3;
constexpr const char* kPmds = "/usr/lib/x86_64-linux-gnu/dpdk/pmds-23.0/";
constexpr std::uint32_t kWindow = 256;

enum class Echo { ours, dpdk, kernel };

std::vector<std::string> vm_arguments(Echo echo, int batch, const pcie::vm::DgramWire& wire) {
  // The same VM for all three: two vCPUs (testpmd forwards on a core other than its main
  // one; ours and the kernel's poll or take interrupts on one and leave the other idle),
  // cpu max (testpmd needs SSE4.2) and 1 GiB.
  std::vector<std::string> args = {g_pcie_vm, "--quiet", "--timeout", "150", "--cpu", "max", "--qemu", "-smp",
                                   "--qemu", "2", "--memory", "1024M", "--qemu", "-netdev", "--qemu",
                                   wire.netdev("wire"), "--qemu", "-device", "--qemu",
                                   std::string("e1000e,netdev=wire,addr=07.0,mac=") + pcie::vm::kE1000eMac};
  const std::string b = std::to_string(batch);
  switch (echo) {
    case Echo::ours:
      args.insert(args.end(), {"--bind", "0000:00:07.0=vfio-pci", "--add", g_driver, "--",
                               "e1000e-driver", "0000:00:07.0", "echo", "--batch", b, "--idle", "3"});
      break;
    case Echo::kernel:
      args.insert(args.end(), {"--kernel-module", "drivers/net/ethernet/intel/e1000e/e1000e.ko", "--add", g_packet_echo,
                               "--", "sh", "-c", "ip link set eth0 up && packet_echo eth0 " + b + " 3"});
      break;
    case Echo::dpdk: {
      const std::string e1000 = std::string(kPmds) + "librte_net_e1000.so.23";
      const std::string ring = std::string(kPmds) + "librte_mempool_ring.so.23";
      // testpmd needs huge pages and stops when its standard input ends (the sleep).
      args.insert(args.end(), {"--bind", "0000:00:07.0=vfio-pci", "--append", "hugepages=128", "--add", "/usr/bin/dpdk-testpmd",
                               "--add-at", e1000, "--add-at", ring, "--add-at", "/lib/x86_64-linux-gnu/libgcc_s.so.1", "--",
                               "sh", "-c",
                               "mkdir -p /dev/hugepages /var/run/dpdk && mount -t hugetlbfs none /dev/hugepages && "
                               "(sleep " + std::to_string(g_seconds + 12) + ") | dpdk-testpmd -l 0,1 -n 1 -a 0000:00:07.0 -d " +
                                   e1000 + " -d " + ring + " --iova-mode=va -m 128 -- --forward-mode=macswap --auto-start --total-num-mbufs=4096 "
                                   "--burst=" + b + " --txd=256 --rxd=256 > /tmp/testpmd.log 2>&1; tail -5 /tmp/testpmd.log"});
      break;
    }
  }
  return args;
}

struct Rate {
  double frames_per_second = 0;
  std::uint64_t lost = 0;
  std::string error;
};

// Sends 60-byte frames with up to kWindow in flight and counts echoes for g_seconds.
Rate measure(const pcie::vm::DgramWire& wire) {
  Rate rate;
  if (!wire.probe_until_echoed(std::chrono::seconds(120), [] { return false; })) {
    rate.error = "the guest never echoed a probe";
    return rate;
  }
  std::mt19937_64 random(3);
  const pcie::vm::Frame frame = pcie::vm::make_frame(pcie::vm::kEchoEtherType, 0, 60, random);
  // Let probe echoes still in flight drain.
  while (wire.receive(std::chrono::milliseconds(200))) {
  }
  std::uint64_t echoed = 0;
  std::uint32_t in_flight = 0;
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::seconds(g_seconds);
  while (std::chrono::steady_clock::now() < end) {
    while (in_flight < kWindow && wire.send(frame, false)) ++in_flight;
    if (auto echo = wire.receive(std::chrono::milliseconds(50))) {
      if (!pcie::vm::is_probe_echo(*echo)) ++echoed;
      if (in_flight > 0) --in_flight;
    } else {
      rate.lost += in_flight;  // dropped somewhere: start the window again
      in_flight = 0;
    }
  }
  rate.frames_per_second = static_cast<double>(echoed) / g_seconds;
  return rate;
}

void BM_Echo(benchmark::State& state, Echo echo) {
  const int batch = static_cast<int>(state.range(0));
  for (auto _ : state) {
    pcie::vm::DgramWire wire;
    if (!wire.open()) return state.SkipWithError("cannot bind the wire's socket under /tmp");
    const std::vector<std::string> args = vm_arguments(echo, batch, wire);
    std::vector<char*> argv;
    for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
    argv.push_back(nullptr);
    const std::string log = wire.dir() / "console.log";
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_adddup2(&actions, 1, 2);
    pid_t vm = 0;
    const int spawned = posix_spawn(&vm, argv[0], &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    if (spawned != 0) return state.SkipWithError("cannot start pcie-vm");
    const Rate rate = measure(wire);
    int status = 0;
    ::waitpid(vm, &status, 0);
    if (!rate.error.empty() || rate.frames_per_second <= 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      const std::string why = (rate.error.empty() ? "pcie-vm exited with " + std::to_string(WEXITSTATUS(status)) : rate.error) +
                              " (console kept at " + log + ")";
      std::filesystem::copy_file(log, "/tmp/e1000e_bench_failed_console.log", std::filesystem::copy_options::overwrite_existing);
      return state.SkipWithError(why.c_str());
    }
    // Manual time: the time one million echoes take at this rate, so that the reporter's
    // speed ratio is the ratio of rates.
    state.SetIterationTime(1e6 / rate.frames_per_second);
    state.counters["frames_per_s"] = rate.frames_per_second;
    state.counters["lost"] = static_cast<double>(rate.lost);
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  for (int i = 1; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg.starts_with("--pcie-vm=")) g_pcie_vm = arg.substr(10);
    else if (arg.starts_with("--driver=")) g_driver = arg.substr(9);
    else if (arg.starts_with("--packet-echo=")) g_packet_echo = arg.substr(14);
    else if (arg.starts_with("--seconds=")) g_seconds = std::max(1, std::atoi(argv[i] + 10));
  }
  std::vector<std::pair<std::string, std::string>> pairs;
  const int batches[] = {1, 4, 16, 32, 64, 128};
  for (const auto& [name, echo] : {std::pair{"BM_KernelPacketEcho", Echo::kernel}, std::pair{"BM_DpdkTestpmd", Echo::dpdk},
                                   std::pair{"BM_OurDriver", Echo::ours}}) {
    for (const int batch : batches) {
      benchmark::RegisterBenchmark(name, BM_Echo, echo)->Arg(batch)->Iterations(1)->UseManualTime()->Unit(benchmark::kMillisecond);
    }
  }
  for (const int batch : batches) {
    const std::string suffix = "/" + std::to_string(batch) + "/iterations:1/manual_time";
    pairs.emplace_back("BM_OurDriver" + suffix, "BM_KernelPacketEcho" + suffix);
    pairs.emplace_back("BM_OurDriver" + suffix, "BM_DpdkTestpmd" + suffix);
  }
  pcie::bench::RatioReporter reporter(pairs, pcie::bench::RatioKind::speed);
  benchmark::RunSpecifiedBenchmarks(&reporter);
  std::printf("60-byte frames echoed per second (time: per million frames); speed ratio above 1.00x: our driver "
              "echoes more per second than the baseline, on the same emulated NIC and wire\n");
  benchmark::Shutdown();
  return 0;
}
