#include "src/sys/uevent_socket.h"

#include <linux/netlink.h>
#include <sys/socket.h>

#include <cerrno>

namespace pcie::sys {

Result<UniqueFd> open_uevent_socket() {
  const int raw = ::socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_KOBJECT_UEVENT);
  if (raw < 0) return std::unexpected(make_errno_error(errno, "open uevent socket", "NETLINK_KOBJECT_UEVENT"));
  UniqueFd fd(raw);
  sockaddr_nl address{};
  address.nl_family = AF_NETLINK;
  address.nl_groups = 1;  // the kernel's own uevents (udev re-sends on group 2)
  if (::bind(fd.get(), reinterpret_cast<const sockaddr*>(&address), sizeof address) != 0) {
    return std::unexpected(make_errno_error(errno, "bind uevent socket", "NETLINK_KOBJECT_UEVENT group 1"));
  }
  return fd;
}

Result<std::optional<std::size_t>> receive_uevent(int fd, std::span<char> buffer) {
  for (;;) {
    sockaddr_nl sender{};
    socklen_t sender_length = sizeof sender;
    const ssize_t n = ::recvfrom(fd, buffer.data(), buffer.size(), 0, reinterpret_cast<sockaddr*>(&sender),
                                 &sender_length);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return std::optional<std::size_t>{};
      // ENOBUFS: the kernel dropped uevents because the socket's buffer was full; the caller
      // reads on (and checks the device's node itself).
      return std::unexpected(make_errno_error(errno, "receive uevent", "NETLINK_KOBJECT_UEVENT"));
    }
    if (sender_length < sizeof sender || sender.nl_pid != 0) continue;  // not from the kernel
    return std::optional<std::size_t>(static_cast<std::size_t>(n));
  }
}

}  // namespace pcie::sys
