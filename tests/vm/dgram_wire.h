// The host's end of a QEMU NIC on -netdev dgram over unix sockets (one Ethernet frame per
// datagram): the VM tests' and benchmarks' wire to an emulated NIC, with nothing leaving
// this machine. QEMU is given
//   -netdev dgram,id=ID,local.type=unix,local.path=<qemu_socket()>,
//                       remote.type=unix,remote.path=<host_socket()>
// and the frames the guest sends arrive here; those sent from here reach the guest's NIC.
#pragma once

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "tests/vm/e1000e_frames.h"

namespace pcie::vm {

using Frame = std::vector<std::uint8_t>;
inline constexpr std::uint8_t kGuestMac[6] = {0x52, 0x54, 0x00, 0x12, 0x34, 0x56};  // kE1000eMac
inline constexpr std::uint8_t kHostMac[6] = {0x02, 0x00, 0x00, 0x00, 0x00, 0x01};   // locally administered

// A frame to the guest from the host: `ether_type`, a 32-bit sequence number, random bytes
// up to `size`.
inline Frame make_frame(std::uint16_t ether_type, std::uint32_t sequence, std::size_t size, std::mt19937_64& random) {
  Frame frame(size);
  std::memcpy(frame.data(), kGuestMac, 6);
  std::memcpy(frame.data() + 6, kHostMac, 6);
  frame[12] = static_cast<std::uint8_t>(ether_type >> 8);
  frame[13] = static_cast<std::uint8_t>(ether_type);
  std::memcpy(frame.data() + 14, &sequence, 4);
  for (std::size_t i = 18; i < size; ++i) frame[i] = static_cast<std::uint8_t>(random());
  return frame;
}
inline std::uint16_t ether_type_of(const Frame& frame) { return frame.size() < 14 ? 0 : frame[12] << 8 | frame[13]; }
inline std::uint32_t sequence_of(const Frame& frame) {
  std::uint32_t sequence = 0;
  if (frame.size() >= 18) std::memcpy(&sequence, frame.data() + 14, 4);
  return sequence;
}
// What an echo sends back: the frame with its MAC addresses swapped.
inline Frame echo_of(const Frame& frame) {
  Frame echo = frame;
  std::memcpy(echo.data(), frame.data() + 6, 6);
  std::memcpy(echo.data() + 6, frame.data(), 6);
  return echo;
}
inline bool is_probe_echo(const Frame& frame) {
  return ether_type_of(frame) == kEchoEtherType && sequence_of(frame) == kProbeSequence;
}

class DgramWire {
 public:
  // Binds the host's socket in a new short directory under /tmp (a unix socket path has at
  // most 107 bytes). False when that fails.
  bool open() {
    char dir[] = "/tmp/pcie-wire.XXXXXX";
    if (::mkdtemp(dir) == nullptr) return false;
    dir_ = dir;
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un address = socket_address(host_socket());
    return fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  }
  ~DgramWire() {
    if (fd_ >= 0) ::close(fd_);
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  const std::filesystem::path& dir() const { return dir_; }
  std::filesystem::path qemu_socket() const { return dir_ / "qemu.sock"; }
  std::filesystem::path host_socket() const { return dir_ / "host.sock"; }
  // QEMU's -netdev argument for this wire.
  std::string netdev(const std::string& id) const {
    return "dgram,id=" + id + ",local.type=unix,local.path=" + qemu_socket().string() +
           ",remote.type=unix,remote.path=" + host_socket().string();
  }

  // Sends one frame to QEMU; `wait`: block while its queue is full. False when it was not sent.
  bool send(const Frame& frame, bool wait) const {
    sockaddr_un to = socket_address(qemu_socket());
    return ::sendto(fd_, frame.data(), frame.size(), wait ? 0 : MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&to),
                    sizeof to) == static_cast<ssize_t>(frame.size());
  }
  // The next frame, or nullopt after `timeout`.
  std::optional<Frame> receive(std::chrono::milliseconds timeout) const {
    pollfd readable{.fd = fd_, .events = POLLIN, .revents = 0};
    if (::poll(&readable, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
    Frame frame(65536);
    const ssize_t got = ::recv(fd_, frame.data(), frame.size(), 0);
    if (got < 0) return std::nullopt;
    frame.resize(static_cast<std::size_t>(got));
    return frame;
  }
  // Sends probes every 100 ms until one comes back echoed (the guest's driver is up), for
  // at most `limit` or until `stop()` says so. Whether one came back.
  template <class Stop>
  bool probe_until_echoed(std::chrono::seconds limit, Stop stop) const {
    std::mt19937_64 random(1);
    const Frame probe = make_frame(kEchoEtherType, kProbeSequence, 60, random);
    const auto give_up = std::chrono::steady_clock::now() + limit;
    while (!stop() && std::chrono::steady_clock::now() < give_up) {
      (void)send(probe, false);  // QEMU may not be up yet
      for (auto frame = receive(std::chrono::milliseconds(100)); frame; frame = receive(std::chrono::milliseconds(0))) {
        if (is_probe_echo(*frame)) return true;
      }
    }
    return false;
  }

 private:
  static sockaddr_un socket_address(const std::filesystem::path& path) {
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::strncpy(address.sun_path, path.c_str(), sizeof address.sun_path - 1);
    return address;
  }

  std::filesystem::path dir_;
  int fd_ = -1;
};

}  // namespace pcie::vm
