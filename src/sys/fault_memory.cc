#include "src/sys/fault_memory.h"

#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/sys/syscalls.h"

namespace pcie::sys {

int make_all_ones_memfd(std::size_t length) noexcept {
  const int fd = ::memfd_create("pcie-all-ones", MFD_CLOEXEC);
  if (fd < 0) return -errno;
  void* addr = MAP_FAILED;
  if (::ftruncate(fd, static_cast<off_t>(length)) == 0) {
    addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  }
  if (addr == MAP_FAILED) {
    const int error = errno;
    ::close(fd);
    return -error;
  }
  std::memset(addr, 0xff, length);
  ::munmap(addr, length);
  return fd;
}

int identity_of_fd(int fd, std::uint64_t* device, std::uint64_t* inode) noexcept {
  struct stat status {};
  if (::fstat(fd, &status) != 0) return errno;
  *device = status.st_dev;
  *inode = status.st_ino;
  return 0;
}

int replace_with_inaccessible(void* address, std::size_t length) noexcept {
  void* result = ::mmap(address, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  return result == MAP_FAILED ? errno : 0;
}

int map_private_fixed(int memfd, void* address, std::size_t length) noexcept {
  void* result = ::mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, memfd, 0);
  return result == MAP_FAILED ? errno : 0;
}

Result<struct sigaction> current_action(int signal_number) {
  struct sigaction action {};
  if (::sigaction(signal_number, nullptr, &action) != 0) {
    return std::unexpected(make_errno_error(errno, "read signal action", ::strsignal(signal_number)));
  }
  return action;
}

Result<struct sigaction> install_fault_handler(int signal_number, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction action {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigfillset(&action.sa_mask);
  struct sigaction replaced {};
  if (::sigaction(signal_number, &action, &replaced) != 0) {
    return std::unexpected(make_errno_error(errno, "sigaction", ::strsignal(signal_number)));
  }
  return replaced;
}

void restore_handler(int signal_number, const struct sigaction& previous) noexcept {
  ::sigaction(signal_number, &previous, nullptr);
}

void restore_default_action(int signal_number) noexcept {
  struct sigaction action {};
  action.sa_handler = SIG_DFL;
  sigemptyset(&action.sa_mask);
  ::sigaction(signal_number, &action, nullptr);
}

}  // namespace pcie::sys
