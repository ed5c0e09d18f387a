#include "src/sys/fault_memory.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "src/sys/syscalls.h"

namespace pcie::sys {

Result<UniqueFd> make_all_ones_memfd(std::size_t length) {
  const int raw = ::memfd_create("pcie-all-ones", MFD_CLOEXEC);
  if (raw < 0) return std::unexpected(make_errno_error(errno, "memfd_create", "pcie-all-ones"));
  UniqueFd fd(raw);
  if (::ftruncate(fd.get(), static_cast<off_t>(length)) != 0) {
    return std::unexpected(make_errno_error(errno, "size memfd", "pcie-all-ones"));
  }
  void* addr = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  if (addr == MAP_FAILED) return std::unexpected(make_errno_error(errno, "mmap memfd", "pcie-all-ones"));
  std::memset(addr, 0xff, length);
  ::munmap(addr, length);
  return fd;
}

int replace_with_inaccessible(void* address, std::size_t length) noexcept {
  void* result = ::mmap(address, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
  return result == MAP_FAILED ? errno : 0;
}

int map_private_fixed(int memfd, void* address, std::size_t length) noexcept {
  void* result = ::mmap(address, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED, memfd, 0);
  return result == MAP_FAILED ? errno : 0;
}

Result<void> install_fault_handler(int signal_number, void (*handler)(int, siginfo_t*, void*),
                                   struct sigaction* previous) {
  struct sigaction action {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO | SA_ONSTACK;
  sigemptyset(&action.sa_mask);
  if (::sigaction(signal_number, &action, previous) != 0) {
    return std::unexpected(make_errno_error(errno, "sigaction", ::strsignal(signal_number)));
  }
  return {};
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
