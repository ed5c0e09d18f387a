// The removal guard's fault handler and its installation (pcie/removal.h); the table of
// device mappings it acts on is src/sys/guard_table.
#include <pthread.h>
#include <signal.h>
#include <ucontext.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>

#include "pcie/removal.h"
#include "src/sys/fault_memory.h"
#include "src/sys/guard_table.h"

namespace pcie {
namespace detail {
namespace {

// The action each signal had before the guard's, which foreign faults are forwarded to.
// Written in full before being published (two copies and an index), so that a handler on
// another thread never reads one half written: recorded before the guard's handler is
// installed, and again if the program changed it in between.
struct PreviousAction {
  struct sigaction copies[2]{};
  std::atomic<int> current{0};

  void publish(const struct sigaction& action) noexcept {
    const int next = 1 - current.load(std::memory_order_relaxed);
    copies[next] = action;
    current.store(next, std::memory_order_release);
  }
  struct sigaction get() const noexcept { return copies[current.load(std::memory_order_acquire)]; }
};

PreviousAction g_previous_bus;
PreviousAction g_previous_segv;
std::atomic<bool> g_installed{false};

PreviousAction& previous_of(int signal_number) {
  return signal_number == SIGBUS ? g_previous_bus : g_previous_segv;
}

bool same_action(const struct sigaction& a, const struct sigaction& b) {
  return a.sa_flags == b.sa_flags && ((a.sa_flags & SA_SIGINFO) != 0 ? a.sa_sigaction == b.sa_sigaction
                                                                      : a.sa_handler == b.sa_handler);
}

// True when the fault is the guard's and has been dealt with (the access is retried).
bool handle_fault(int signal_number, const siginfo_t* info) noexcept {
  if (info == nullptr || info->si_code <= 0) return false;  // sent by kill(), not a fault
  // A SIGSEGV in a live device mapping is the program's own (a write to a read-only
  // mapping): not the guard's. A SIGBUS there means the kernel refused the page: gone.
  return guard_table_replace_at(reinterpret_cast<std::uintptr_t>(info->si_addr), signal_number == SIGBUS);
}

// Calls the earlier handler as the kernel would have: with the mask the thread had at the
// fault (ours blocks everything) plus its sa_mask and, unless SA_NODEFER, the signal; and
// reset to the default first where SA_RESETHAND asked for that.
void call_previous(const struct sigaction& previous, int signal_number, siginfo_t* info, void* context) noexcept {
  if ((previous.sa_flags & SA_RESETHAND) != 0) {
    struct sigaction reset {};
    reset.sa_handler = SIG_DFL;
    sigemptyset(&reset.sa_mask);
    previous_of(signal_number).publish(reset);
  }
  sigset_t before;
  pthread_sigmask(SIG_SETMASK, nullptr, &before);
  sigset_t during = context != nullptr ? static_cast<const ucontext_t*>(context)->uc_sigmask : before;
  for (int other = 1; other < NSIG; ++other) {
    if (sigismember(&previous.sa_mask, other) == 1) sigaddset(&during, other);
  }
  if ((previous.sa_flags & SA_NODEFER) != 0) {
    sigdelset(&during, signal_number);
  } else {
    sigaddset(&during, signal_number);
  }
  pthread_sigmask(SIG_SETMASK, &during, nullptr);
  if ((previous.sa_flags & SA_SIGINFO) != 0) {
    previous.sa_sigaction(signal_number, info, context);
  } else {
    previous.sa_handler(signal_number);
  }
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}

void forward(int signal_number, siginfo_t* info, void* context) noexcept {
  const struct sigaction previous = previous_of(signal_number).get();
  // sa_handler and sa_sigaction share storage: SIG_DFL and SIG_IGN read the same through
  // either, SA_SIGINFO or not (an SA_SIGINFO action of SIG_IGN is no handler at address 1).
  const bool has_handler = previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN;
  if (has_handler) {
    call_previous(previous, signal_number, info, context);
    return;
  }
  // The default action: on return the faulting access runs again and the kernel applies it
  // (the process dies as it would have without the guard). A signal from kill() is raised
  // again for the same result.
  sys::restore_default_action(signal_number);
  if (info == nullptr || info->si_code <= 0) ::raise(signal_number);
}

void on_fault(int signal_number, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  const bool handled = handle_fault(signal_number, info);
  errno = saved_errno;
  if (!handled) forward(signal_number, info, context);
}

// Records the action `signal_number` has, then installs on_fault: a fault on another thread
// between the two finds the earlier handler already recorded. Should the program have
// changed the action in between, the one actually replaced is recorded once the install
// returns; a foreign fault in that last instant still goes to the handler recorded first
// (closing it would need the program to take our lock for its own sigaction calls).
Result<void> install_for(int signal_number) {
  auto before = sys::current_action(signal_number);
  if (!before) return std::unexpected(before.error());
  previous_of(signal_number).publish(*before);
  auto replaced = sys::install_fault_handler(signal_number, on_fault);
  if (!replaced) return std::unexpected(replaced.error());
  if (!same_action(*replaced, *before)) previous_of(signal_number).publish(*replaced);
  return {};
}

}  // namespace
}  // namespace detail

Result<void> install_removal_guard() {
  static std::mutex install_lock;
  const std::lock_guard lock(install_lock);
  if (detail::g_installed.load(std::memory_order_acquire)) return {};
  if (auto prepared = detail::guard_table_prepare(); !prepared) return prepared;
  if (auto bus = detail::install_for(SIGBUS); !bus) return bus;
  if (auto segv = detail::install_for(SIGSEGV); !segv) {
    // Undone, so that a retry records the handler from before us as SIGBUS's previous one,
    // not on_fault itself (which would then chain to itself for every foreign fault).
    sys::restore_handler(SIGBUS, detail::g_previous_bus.get());
    return segv;
  }
  detail::g_installed.store(true, std::memory_order_release);
  return {};
}

bool removal_guard_installed() noexcept { return detail::g_installed.load(std::memory_order_acquire); }

bool mapping_revoked(const void* address) noexcept { return detail::guard_table_covers_revoked(address); }

Result<std::size_t> revoke_device_mappings(const Bdf& device) {
  if (auto installed = install_removal_guard(); !installed) return std::unexpected(installed.error());
  return detail::guard_table_revoke_device(device);
}

}  // namespace pcie
