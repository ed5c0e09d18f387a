// packet_echo IFNAME BATCH IDLE_SECONDS: the kernel's side of e1000e_bench, run in the test
// VM on an interface of the kernel's e1000e driver: receives frames through an AF_PACKET
// socket, up to BATCH per recvmmsg, swaps their MAC addresses and sends them back with one
// sendmmsg, until no frame came for IDLE_SECONDS. The kernel baseline of the example
// driver's `echo --batch BATCH` (testpmd's macswap being the other).
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) return std::fprintf(stderr, "usage: packet_echo IFNAME BATCH IDLE_SECONDS\n"), 2;
  const unsigned index = ::if_nametoindex(argv[1]);
  const int batch = std::atoi(argv[2]);
  const int idle_ms = std::atoi(argv[3]) * 1000;
  if (index == 0 || batch < 1 || batch > 1024 || idle_ms <= 0) return std::fprintf(stderr, "packet_echo: bad arguments\n"), 2;
  const int fd = ::socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
  if (fd < 0) return std::perror("packet_echo: socket"), 1;
  const int one = 1;
  // Frames this socket sends must not come back to it as received (Linux 4.20+).
  if (::setsockopt(fd, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof one) != 0) return std::perror("packet_echo: setsockopt"), 1;
  sockaddr_ll address{};
  address.sll_family = AF_PACKET;
  address.sll_protocol = htons(ETH_P_ALL);
  address.sll_ifindex = static_cast<int>(index);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return std::perror("packet_echo: bind"), 1;
  std::vector<std::vector<unsigned char>> frames(batch, std::vector<unsigned char>(2048));
  std::vector<iovec> vectors(batch);
  std::vector<mmsghdr> messages(batch);
  unsigned long long echoed = 0;
  while (true) {
    pollfd readable{.fd = fd, .events = POLLIN, .revents = 0};
    if (::poll(&readable, 1, idle_ms) <= 0) break;
    for (int i = 0; i < batch; ++i) {
      vectors[i] = {frames[i].data(), frames[i].size()};
      messages[i] = {};
      messages[i].msg_hdr.msg_iov = &vectors[i];
      messages[i].msg_hdr.msg_iovlen = 1;
    }
    const int got = ::recvmmsg(fd, messages.data(), batch, MSG_DONTWAIT, nullptr);
    if (got <= 0) continue;
    for (int i = 0; i < got; ++i) {
      unsigned char destination[6];
      std::memcpy(destination, frames[i].data(), 6);
      std::memmove(frames[i].data(), frames[i].data() + 6, 6);
      std::memcpy(frames[i].data() + 6, destination, 6);
      vectors[i].iov_len = messages[i].msg_len;
    }
    for (int sent = 0; sent < got;) {
      const int now = ::sendmmsg(fd, messages.data() + sent, got - sent, 0);
      if (now <= 0) break;
      sent += now;
      echoed += static_cast<unsigned long long>(now);
    }
  }
  std::printf("packet_echo: echoed %llu frames\n", echoed);
  return 0;
}
