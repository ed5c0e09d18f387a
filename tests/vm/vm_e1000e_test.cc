// The example NIC driver on QEMU's e1000e (00:07.0), with the host at the far end of the
// wire: QEMU's -netdev dgram over unix sockets (one Ethernet frame per datagram) to a peer
// in this process, which sends 10,000 frames of random sizes (60 to 1514 bytes) and
// payloads, each with a sequence number, and checks every echo byte for byte and in order;
// a filter-dump pcap of the wire is checked against them afterwards. In the guest,
// guest_e1000e_test echoes them with the example driver, then runs its loopback,
// interrupt, fault and shutdown cases.
//
// Flags: --pcie-vm=PATH --guest=PATH (Bazel passes them), --backend=vfio (Debian's kernel,
// VFIO type1), iommufd (our kernel: VFIO through iommufd), vfio-noiommu (our kernel, no
// IOMMU) or uio (Debian's kernel, no IOMMU, uio_pci_generic).
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <fstream>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "tests/vm/e1000e_frames.h"
#include "tests/vm/vm_harness.h"

namespace {

using Frame = std::vector<std::uint8_t>;
constexpr std::uint8_t kGuestMac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
constexpr std::uint8_t kHostMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};  // locally administered
constexpr std::size_t kWindow = 16;  // frames in flight

Frame make_frame(std::uint16_t ether_type, std::uint32_t sequence, std::size_t size, std::mt19937_64& random) {
  Frame frame(size);
  std::memcpy(frame.data(), kGuestMac, 6);
  std::memcpy(frame.data() + 6, kHostMac, 6);
  frame[12] = static_cast<std::uint8_t>(ether_type >> 8);
  frame[13] = static_cast<std::uint8_t>(ether_type);
  std::memcpy(frame.data() + 14, &sequence, 4);
  for (std::size_t i = 18; i < size; ++i) frame[i] = static_cast<std::uint8_t>(random());
  return frame;
}

std::uint16_t ether_type_of(const Frame& frame) { return frame.size() < 14 ? 0 : frame[12] << 8 | frame[13]; }
std::uint32_t sequence_of(const Frame& frame) {
  std::uint32_t sequence = 0;
  if (frame.size() >= 18) std::memcpy(&sequence, frame.data() + 14, 4);
  return sequence;
}
// What the guest sends back: the frame with its MAC addresses swapped.
Frame echo_of(const Frame& frame) {
  Frame echo = frame;
  std::memcpy(echo.data(), frame.data() + 6, 6);
  std::memcpy(echo.data() + 6, frame.data(), 6);
  return echo;
}

// The host end of the wire, running while the VM runs.
struct Peer {
  std::filesystem::path dir;  // short: a unix socket path has at most 107 bytes
  int fd = -1;
  std::atomic<bool> stop{false};
  std::thread thread;
  // Results, read after join().
  bool guest_answered = false;
  std::uint32_t echoed = 0;           // echoes that matched, in order
  std::vector<std::string> problems;  // the first few
  std::vector<Frame> sent;            // the frames sent, by sequence number
  double seconds = 0;                 // from the first data frame to the last echo

  std::filesystem::path qemu_socket() const { return dir / "qemu.sock"; }
  std::filesystem::path pcap() const { return dir / "wire.pcap"; }

  bool send(const Frame& frame, bool wait) const {
    sockaddr_un to{};
    to.sun_family = AF_UNIX;
    std::strncpy(to.sun_path, qemu_socket().c_str(), sizeof to.sun_path - 1);
    return ::sendto(fd, frame.data(), frame.size(), wait ? 0 : MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to),
                    sizeof to) == static_cast<ssize_t>(frame.size());
  }
  // The next frame, or nullopt after `timeout`.
  std::optional<Frame> receive(std::chrono::milliseconds timeout) const {
    pollfd readable{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&readable, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    Frame frame(65536);
    const ssize_t got = ::recv(fd, frame.data(), frame.size(), 0);
    if (got < 0) return std::nullopt;
    frame.resize(static_cast<std::size_t>(got));
    return frame;
  }
  void problem(std::string text) {
    if (problems.size() < 10) problems.push_back(std::move(text));
  }

  void run() {
    std::mt19937_64 random(7);
    // Probe until the guest's driver echoes (QEMU holds or drops frames until then).
    const Frame probe = make_frame(pcie::vm::kEchoEtherType, pcie::vm::kProbeSequence, 60, random);
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::minutes(3);
    while (!stop && !guest_answered && std::chrono::steady_clock::now() < give_up) {
      (void)send(probe, false);  // QEMU may not be up yet
      for (auto frame = receive(std::chrono::milliseconds(100)); frame; frame = receive(std::chrono::milliseconds(0))) {
        if (ether_type_of(*frame) == pcie::vm::kEchoEtherType && sequence_of(*frame) == pcie::vm::kProbeSequence) {
          guest_answered = true;
        }
      }
    }
    if (!guest_answered) return problem("the guest's driver never echoed a probe");
    for (std::uint32_t i = 0; i < pcie::vm::kEchoFrames; ++i) {
      const std::size_t size = i == 0 ? 60 : i == 1 ? 1514 : 60 + random() % (1514 - 60 + 1);
      sent.push_back(make_frame(pcie::vm::kEchoEtherType, i, size, random));
    }
    const auto start = std::chrono::steady_clock::now();
    std::size_t next_send = 0;
    while (!stop && echoed < sent.size()) {
      while (next_send < sent.size() && next_send < echoed + kWindow) {
        if (!send(sent[next_send], true)) return problem("sendto failed: " + std::string(std::strerror(errno)));
        ++next_send;
      }
      const std::optional<Frame> frame = receive(std::chrono::seconds(10));
      if (!frame) return problem("frame " + std::to_string(echoed) + " was not echoed within 10 s");
      if (ether_type_of(*frame) == pcie::vm::kEchoEtherType && sequence_of(*frame) == pcie::vm::kProbeSequence) continue;
      if (*frame != echo_of(sent[echoed])) {
        return problem("the echo of frame " + std::to_string(echoed) + " (" + std::to_string(sent[echoed].size()) +
                       " bytes) differs: got frame " + std::to_string(sequence_of(*frame)) + " of " +
                       std::to_string(frame->size()) + " bytes");
      }
      ++echoed;
    }
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    (void)send(make_frame(pcie::vm::kStopEtherType, 0, 60, random), true);
  }
};

Peer g_peer;
std::string g_backend;

}  // namespace

pcie::vm::Options pcie_vm_test_options(const pcie::vm::Flags& flags, const std::filesystem::path&) {
  g_backend = flags.contains("backend") ? flags.at("backend") : "vfio";
  char dir[] = "/tmp/pcie-e1000e.XXXXXX";
  if (::mkdtemp(dir) != nullptr) g_peer.dir = dir;
  g_peer.fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::strncpy(address.sun_path, (g_peer.dir / "host.sock").c_str(), sizeof address.sun_path - 1);
  if (::bind(g_peer.fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) g_peer.problem("bind failed");
  g_peer.thread = std::thread([] { g_peer.run(); });

  pcie::vm::Options options = pcie::vm::options_from_flags(flags, {"guest"}, "guest_e1000e_test");
  const bool own_kernel = g_backend == "iommufd" || g_backend == "vfio-noiommu";
  const bool iommu = g_backend == "vfio" || g_backend == "iommufd";
  options.guest_command.push_back("--backend=" + std::string(g_backend == "iommufd" ? "vfio" : g_backend));
  // The fault case needs an IOMMU; the hotplug case has its own target.
  options.guest_command.push_back(iommu ? "--gtest_filter=-E1000eHotplug.*"
                                        : "--gtest_filter=-E1000eHotplug.*:*TransmitFromAnUnmappedAddress*");
  if (iommu) options.expected_dmar_fault_addresses = {pcie::vm::kUnmappedIovaText};
  if (own_kernel) options.vm_arguments.push_back("--own-kernel");
  if (!iommu) options.vm_arguments.push_back("--no-iommu");
  if (g_backend == "vfio-noiommu") options.vm_arguments.insert(options.vm_arguments.end(), {"--append", "vfio.enable_unsafe_noiommu_mode=1"});
  const std::string netdev = "dgram,id=wire,local.type=unix,local.path=" + g_peer.qemu_socket().string() +
                             ",remote.type=unix,remote.path=" + (g_peer.dir / "host.sock").string();
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
  std::filesystem::remove_all(g_peer.dir);
}

}  // namespace
