// The guest's end of hotplug-relay (tests/vm/hotplug-relay, pcie-vm --hotplug) on
// /dev/ttyS2, for the VM tests that unplug and add devices.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <termios.h>
#include <unistd.h>

#include <chrono>
#include <string>

namespace pcie::vm {

// The guest's end of hotplug-relay: one command line out, one answer line back.
class HotplugChannel {
 public:
  HotplugChannel() {
    fd_ = ::open("/dev/ttyS2", O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (fd_ < 0) return;
    termios mode{};
    ::tcgetattr(fd_, &mode);
    ::cfmakeraw(&mode);
    ::tcsetattr(fd_, TCSANOW, &mode);
  }
  ~HotplugChannel() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool open() const { return fd_ >= 0; }

  std::string command(const std::string& line, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    const std::string out = line + "\n";
    if (::write(fd_, out.data(), out.size()) != static_cast<ssize_t>(out.size())) return "error: write";
    std::string answer;
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      pollfd waiting{fd_, POLLIN, 0};
      if (::poll(&waiting, 1, 100) <= 0) continue;
      char c = 0;
      if (::read(fd_, &c, 1) != 1) continue;
      if (c == '\n') return answer;
      if (c != '\r') answer += c;
    }
    return "error: no answer from hotplug-relay";
  }

 private:
  int fd_ = -1;
};

inline HotplugChannel& channel() {
  static HotplugChannel instance;
  return instance;
}

}  // namespace pcie::vm
