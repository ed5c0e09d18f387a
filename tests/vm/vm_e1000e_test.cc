// The example NIC driver on QEMU's e1000e (00:07.0), with the host at the far end of the
// wire: QEMU's -netdev dgram over unix sockets (one Ethernet frame per datagram) to a peer
// in this process, which sends 10,000 frames of random sizes (60 to 1514 bytes) and
// payloads, each with a sequence number, and checks every echo byte for byte and in order;
// a filter-dump pcap of the wire is checked against them afterwards. In the guest,
// guest_e1000e_test echoes them with the example driver, then runs its loopback,
// interrupt (a link change through QMP set_link too), fault and shutdown cases.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them), --backend=vfio (Debian's kernel,
// VFIO type1), iommufd (our kernel: VFIO through iommufd), vfio-noiommu (our kernel, no
// IOMMU) or uio (Debian's kernel, no IOMMU, uio_pci_generic).
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "tests/vm/dgram_wire.h"
#include "tests/vm/e1000e_frames.h"
#include "tests/vm/vm_harness.h"

namespace {

using pcie::vm::echo_of;
using pcie::vm::Frame;
using pcie::vm::sequence_of;
constexpr std::size_t kWindow = 16;  // frames in flight

// The host end of the wire, running while the VM runs.
struct Peer {
  pcie::vm::DgramWire wire;
  std::atomic<bool> stop{false};
  std::thread thread;
  // Results, read after join().
  bool guest_answered = false;
  std::uint32_t echoed = 0;           // echoes that matched, in order
  std::vector<std::string> problems;  // the first few
  std::vector<Frame> sent;            // the frames sent, by sequence number
  double seconds = 0;                 // from the first data frame to the last echo

  std::filesystem::path pcap() const { return wire.dir() / "wire.pcap"; }
  void problem(std::string text) {
    if (problems.size() < 10) problems.push_back(std::move(text));
  }

  void run() {
    // Probe until the guest's driver echoes (QEMU holds or drops frames until then).
    guest_answered = wire.probe_until_echoed(std::chrono::minutes(3), [this] { return stop.load(); });
    if (!guest_answered) return problem("the guest's driver never echoed a probe");
    std::mt19937_64 random(7);
    for (std::uint32_t i = 0; i < pcie::vm::kEchoFrames; ++i) {
      const std::size_t size = i == 0 ? 60 : i == 1 ? 1514 : 60 + random() % (1514 - 60 + 1);
      sent.push_back(pcie::vm::make_frame(pcie::vm::kEchoEtherType, i, size, random));
    }
    const auto start = std::chrono::steady_clock::now();
    std::size_t next_send = 0;
    while (!stop && echoed < sent.size()) {
      while (next_send < sent.size() && next_send < echoed + kWindow) {
        if (!wire.send(sent[next_send], true)) return problem("sendto failed: " + std::string(std::strerror(errno)));
        ++next_send;
      }
      const std::optional<Frame> frame = wire.receive(std::chrono::seconds(10));
      if (!frame) return problem("frame " + std::to_string(echoed) + " was not echoed within 10 s");
      if (pcie::vm::is_probe_echo(*frame)) continue;
      if (*frame != echo_of(sent[echoed])) {
        return problem("the echo of frame " + std::to_string(echoed) + " (" + std::to_string(sent[echoed].size()) +
                       " bytes) differs: got frame " + std::to_string(sequence_of(*frame)) + " of " +
                       std::to_string(frame->size()) + " bytes");
      }
      ++echoed;
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    (void)wire.send(pcie::vm::make_frame(pcie::vm::kStopEtherType, 0, 60, random), true);
  }
};

Peer g_peer;
std::string g_backend;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  g_backend = flags.contains("backend") ? flags.at("backend") : "vfio";
  if (!g_peer.wire.open()) g_peer.problem("the host's end of the wire could not be bound under /tmp");
  g_peer.thread = std::thread([] { g_peer.run(); });

  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_e1000e_test");
  const bool own_kernel = g_backend == "iommufd" || g_backend == "vfio-noiommu";
  const bool iommu = g_backend == "vfio" || g_backend == "iommufd";
  options.guest_command.push_back("--backend=" + std::string(g_backend == "iommufd" ? "vfio" : g_backend));
  // The fault case needs an IOMMU; the hotplug case has its own target.
  options.guest_command.push_back(iommu ? "--gtest_filter=-E1000eHotplug.*"
                                        : "--gtest_filter=-E1000eHotplug.*:*TransmitFromAnUnmappedAddress*");
  if (iommu) {
    options.expected_dmar_faults = {{pcie::vm::kUnmappedIovaText, "E1000e.TransmitFromAnUnmappedAddressFaultsAndResetRecovers"}};
  }
  if (own_kernel) options.vm_arguments.push_back("--own-kernel");
  if (!iommu) options.vm_arguments.push_back("--no-iommu");
  options.vm_arguments.push_back("--hotplug");  // the guest sets the wire's link through QMP
  if (g_backend == "vfio-noiommu") options.vm_arguments.insert(options.vm_arguments.end(), {"--append", "vfio.enable_unsafe_noiommu_mode=1"});
  const std::string netdev = g_peer.wire.netdev("wire");
  options.vm_arguments.insert(options.vm_arguments.end(),
                              {"--qemu", "-netdev", "--qemu", netdev, "--qemu", "-device", "--qemu",
                               std::string("e1000e,netdev=wire,addr=07.0,mac=") + pcie::vm::kE1000eMac, "--qemu", "-object",
                               "--qemu", "filter-dump,id=dump,netdev=wire,file=" + g_peer.pcap().string(), "--bind",
                               std::string(pcie::vm::kE1000eBdf) + "=" + (g_backend == "uio" ? "uio_pci_generic" : "vfio-pci")});
  options.timeout_seconds = 240;
  return options;
}

namespace {

// The frames of a pcap file (libpcap's format: a 24-byte header, then a 16-byte header
// per record), nullopt when it is not one.
std::optional<std::vector<Frame>> read_pcap(const std::filesystem::path& path) {
  std::ifstream file(path, std::ios::binary);
  std::vector<std::uint8_t> bytes((std::istreambuf_iterator<char>(file)), std::istreambuf_iterator<char>());
  std::uint32_t magic = 0;
  if (bytes.size() < 24 || (std::memcpy(&magic, bytes.data(), 4), magic != 0xa1b2c3d4)) return std::nullopt;
  std::vector<Frame> frames;
  for (std::size_t at = 24; at + 16 <= bytes.size();) {
    std::uint32_t captured = 0;
    std::memcpy(&captured, bytes.data() + at + 8, 4);
    if (at + 16 + captured > bytes.size()) return std::nullopt;
    frames.emplace_back(bytes.begin() + static_cast<std::ptrdiff_t>(at + 16),
                        bytes.begin() + static_cast<std::ptrdiff_t>(at + 16 + captured));
    at += 16 + captured;
  }
  return frames;
}

class HostE1000e : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    g_peer.stop = true;
    if (g_peer.thread.joinable()) g_peer.thread.join();
  }
};

TEST_F(HostE1000e, EveryFrameCameBackByteForByteInOrder) {
  for (const std::string& problem : g_peer.problems) ADD_FAILURE() << problem;
  EXPECT_TRUE(g_peer.guest_answered);
  EXPECT_EQ(g_peer.echoed, pcie::vm::kEchoFrames);
  if (g_peer.seconds > 0) {
    ::testing::Test::RecordProperty("echo_frames_per_second", std::to_string(g_peer.echoed / g_peer.seconds));
    std::printf("%s: %u frames echoed in %.2f s (%.0f frames/s round trip, %zu in flight)\n", g_backend.c_str(),
                g_peer.echoed, g_peer.seconds, g_peer.echoed / g_peer.seconds, kWindow);
  }
}

TEST_F(HostE1000e, TheWireCaptureHoldsEachFrameAndItsEcho) {
  const std::optional<std::vector<Frame>> frames = read_pcap(g_peer.pcap());
  ASSERT_TRUE(frames) << "no pcap from QEMU's filter-dump at " << g_peer.pcap();
  // Data frames by direction: to the guest (the host's MAC as source) and back.
  std::map<std::uint32_t, const Frame*> to_guest, from_guest;
  using pcie::vm::ether_type_of;
  using pcie::vm::kHostMac;
  std::size_t duplicates = 0;
  for (const Frame& frame : *frames) {
    if (ether_type_of(frame) != pcie::vm::kEchoEtherType || sequence_of(frame) == pcie::vm::kProbeSequence) continue;
    auto& direction = std::memcmp(frame.data() + 6, kHostMac, 6) == 0 ? to_guest : from_guest;
    duplicates += !direction.emplace(sequence_of(frame), &frame).second;
  }
  EXPECT_EQ(duplicates, 0u);
  ASSERT_EQ(to_guest.size(), g_peer.sent.size());
  EXPECT_EQ(from_guest.size(), g_peer.sent.size());
  std::size_t wrong = 0;
  for (std::uint32_t i = 0; i < g_peer.sent.size(); ++i) {
    const bool good = to_guest.contains(i) && *to_guest[i] == g_peer.sent[i] && from_guest.contains(i) &&
                      *from_guest[i] == echo_of(g_peer.sent[i]);
    if (!good && wrong++ == 0) ADD_FAILURE() << "frame " << i << " or its echo differs in the capture";
  }
  EXPECT_EQ(wrong, 0u);
}

}  // namespace
