// The removal guard's installation against faults that arrive while it is being installed.
// The guard forwards every fault that is not its own to the handler the program had before
// (a JVM's, Go's, a GC's). It once learned that handler from the very sigaction() call that
// installed its own, so a fault on another thread in between was forwarded to a zeroed
// action and killed the process. It must know the handler before its own can run, and
// forward to the one it actually replaced if the program changed it meanwhile.
//
// The window is a few instructions wide, so this binary widens it deterministically: it
// defines sigaction() itself (the library's call resolves to this definition), and when
// the library installs its handler the interposer does something inside the window (a
// real fault, or the program installing another handler), then returns. Each case runs
// in a child process (a death test), since the guard is installed once per process.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>

#include "pcie/removal.h"

namespace {

using SigactionFunction = int (*)(int, const struct sigaction*, struct sigaction*);

SigactionFunction real_sigaction() {
  static const auto real = reinterpret_cast<SigactionFunction>(dlsym(RTLD_NEXT, "sigaction"));
  return real;
}

// What the interposer does when the library installs its handler for `signal`.
enum class Window { none, fault_right_after_install, program_changes_handler_first };
std::atomic<Window> g_window{Window::none};
std::atomic<int> g_window_signal{0};

// The program's own handlers. Each repairs the page that faulted (so the retried access
// succeeds) and counts the faults it saw.
std::atomic<int> g_first_handler_calls{0};
std::atomic<int> g_second_handler_calls{0};
void* g_fault_page = nullptr;

void repair(void* address) {
  void* page = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(address) & ~std::uintptr_t{4095});
  mprotect(page, 4096, PROT_READ | PROT_WRITE);
}
void first_handler(int, siginfo_t* info, void*) {
  g_first_handler_calls.fetch_add(1);
  repair(info->si_addr);
}
void second_handler(int, siginfo_t* info, void*) {
  g_second_handler_calls.fetch_add(1);
  repair(info->si_addr);
}

bool is_test_handler(const struct sigaction* action) {
  return action->sa_sigaction == &first_handler || action->sa_sigaction == &second_handler;
}

void install_program_handler(int signal, void (*handler)(int, siginfo_t*, void*)) {
  struct sigaction action {};
  action.sa_sigaction = handler;
  action.sa_flags = SA_SIGINFO;
  sigemptyset(&action.sa_mask);
  real_sigaction()(signal, &action, nullptr);
}

// A real fault of `signal` at a page that is not a device mapping: SIGSEGV by writing a
// page with no access; SIGBUS is sent with the same si_code a fault has, since an
// access past a file's end cannot be repaired from a handler as simply.
void fault_now(int signal) {
  g_fault_page = mmap(nullptr, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (signal == SIGSEGV) {
    *static_cast<volatile int*>(g_fault_page) = 1;
    return;
  }
  siginfo_t info{};
  info.si_signo = SIGBUS;
  info.si_code = BUS_ADRERR;
  info.si_addr = g_fault_page;
  // rt_tgsigqueueinfo lets a process send itself a siginfo with a positive si_code.
  if (syscall(SYS_rt_tgsigqueueinfo, getpid(), gettid(), SIGBUS, &info) != 0) _exit(12);
}

}  // namespace

// The library's sigaction() calls come here (this definition interposes on glibc's).
extern "C" int sigaction(int signal, const struct sigaction* action, struct sigaction* old) {
  const bool library_installs = action != nullptr && !is_test_handler(action) && (action->sa_flags & SA_SIGINFO) != 0 &&
                                signal == g_window_signal.load();
  const Window window = library_installs ? g_window.exchange(Window::none) : Window::none;
  if (window == Window::program_changes_handler_first) install_program_handler(signal, second_handler);
  const int result = real_sigaction()(signal, action, old);
  if (window == Window::fault_right_after_install) fault_now(signal);
  return result;
}

namespace {

struct WindowCase {
  const char* name;
  int signal;
  Window window;
  int first_calls;   // expected calls of the handler the program had before the guard
  int second_calls;  // expected calls of the one it installed inside the window
};

// Installs the program's first handler, arms the window, installs the guard, then faults
// once more outside the window. Exits 0 when each handler saw what the case expects; 10 when
// the guard failed to install, 11 when the interposer never saw it install, 12 when the
// SIGBUS could not be sent; 20 + 1 (first handler's count wrong) + 2 (second's wrong).
// A fault forwarded to no handler kills the child with that signal instead.
[[noreturn]] void run_case(const WindowCase& c) {
  install_program_handler(c.signal, first_handler);
  g_window_signal.store(c.signal);
  g_window.store(c.window);
  if (!pcie::install_removal_guard()) _exit(10);
  if (g_window.load() != Window::none) _exit(11);  // the interposer never saw the install
  fault_now(c.signal);
  const bool first_ok = g_first_handler_calls.load() == c.first_calls;
  const bool second_ok = g_second_handler_calls.load() == c.second_calls;
  _exit(first_ok && second_ok ? 0 : 20 + (first_ok ? 0 : 1) + (second_ok ? 0 : 2));
}

TEST(GuardInstallWindow, FaultsInsideTheWindowReachTheHandlerThatWasReplaced) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const WindowCase cases[] = {
      // Inside the window the guard's handler runs already: it must forward to the
      // program's handler, not to a zeroed action (which would kill the process).
      {"SIGSEGV, fault inside the window", SIGSEGV, Window::fault_right_after_install, 2, 0},
      {"SIGBUS, fault inside the window", SIGBUS, Window::fault_right_after_install, 2, 0},
      // The program changed its handler between the guard's look and its install: the
      // guard replaced the second, so foreign faults go there.
      {"SIGSEGV, handler changed first", SIGSEGV, Window::program_changes_handler_first, 0, 1},
      {"SIGBUS, handler changed first", SIGBUS, Window::program_changes_handler_first, 0, 1},
  };
  for (const WindowCase& c : cases) {
    SCOPED_TRACE(c.name);
    EXPECT_EXIT(run_case(c), ::testing::ExitedWithCode(0), "");
  }
}

}  // namespace
