// The removal guard: its table of device mappings and its fault handler (pcie/removal.h).
#include <signal.h>

#include <atomic>
#include <cstdint>
#include <algorithm>
#include <cerrno>
#include <mutex>

#include "pcie/removal.h"
#include "src/removal/guard_table.h"
#include "src/sys/fault_memory.h"

namespace pcie {
namespace detail {
namespace {

enum SlotState : int { kFree, kClaiming, kActive, kRevoking, kRevoked };

struct Slot {
  std::atomic<int> state{kFree};
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::size_t> length{0};
  std::atomic<std::uint64_t> device{0};
};

Slot g_slots[kGuardSlots];
// One past the highest slot ever claimed: scans stop there.
std::atomic<int> g_slots_used{0};

// Replacement memory: the all-ones memfd is mapped in chunks of this size where accesses
// land, so a revoked 8 GiB BAR costs one PROT_NONE mapping plus a chunk per place touched,
// not 8 GiB of ones.
constexpr std::size_t kChunk = std::size_t{2} << 20;
std::atomic<int> g_ones_fd{-1};
struct sigaction g_previous_bus {};
struct sigaction g_previous_segv {};
std::atomic<bool> g_installed{false};

std::uint64_t key_of(const Bdf& bdf) {
  return (std::uint64_t{bdf.domain} << 16) | (std::uint64_t{bdf.bus} << 8) |
         (std::uint64_t{bdf.device} << 3) | bdf.function;
}

void cpu_pause() noexcept { __builtin_ia32_pause(); }

constexpr std::uint64_t kAnyDevice = ~std::uint64_t{0};

// Makes slot `index` (state kActive) revoked: the device mapping is replaced by
// inaccessible memory. Returns false when another thread got there first, the slot was
// released meanwhile, it now holds a device other than `device` (kAnyDevice: any), or the
// replacement failed (the slot stays active); waits for a concurrent revocation to finish.
bool revoke_slot(int index, std::uint64_t device) noexcept {
  Slot& slot = g_slots[index];
  int expected = kActive;
  if (!slot.state.compare_exchange_strong(expected, kRevoking, std::memory_order_acq_rel)) {
    while (slot.state.load(std::memory_order_acquire) == kRevoking) cpu_pause();
    return false;
  }
  // Between the caller's look and the exchange the slot may have been released and
  // registered again for another device: leave that one alone.
  if (device != kAnyDevice && slot.device.load(std::memory_order_relaxed) != device) {
    slot.state.store(kActive, std::memory_order_release);
    return false;
  }
  const auto begin = slot.begin.load(std::memory_order_relaxed);
  const auto length = slot.length.load(std::memory_order_relaxed);
  if (sys::replace_with_inaccessible(reinterpret_cast<void*>(begin), length) != 0) {
    // The device is still mapped there: never report it revoked.
    slot.state.store(kActive, std::memory_order_release);
    return false;
  }
  slot.state.store(kRevoked, std::memory_order_release);
  return true;
}

// Maps all ones over the chunk of revoked slot `index` that holds `address`.
bool map_ones_at(int index, std::uintptr_t address) noexcept {
  const Slot& slot = g_slots[index];
  const auto begin = slot.begin.load(std::memory_order_relaxed);
  const auto end = begin + slot.length.load(std::memory_order_relaxed);
  const int fd = g_ones_fd.load(std::memory_order_acquire);
  if (fd < 0 || address < begin || address >= end) return false;
  const std::uintptr_t chunk = begin + (address - begin) / kChunk * kChunk;
  const std::size_t length = std::min<std::uintptr_t>(kChunk, end - chunk);
  return sys::map_private_fixed(fd, reinterpret_cast<void*>(chunk), length) == 0;
}

// The slot whose mapping holds `address`, in a state in `wanted`; -1 when none.
int find_slot(std::uintptr_t address, bool include_live) noexcept {
  const int used = g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    const int state = g_slots[i].state.load(std::memory_order_acquire);
    const bool eligible = state == kRevoking || state == kRevoked || (include_live && state == kActive);
    if (!eligible) continue;
    const auto begin = g_slots[i].begin.load(std::memory_order_relaxed);
    const auto length = g_slots[i].length.load(std::memory_order_relaxed);
    if (address >= begin && address - begin < length) return i;
  }
  return -1;
}

// True when the fault is the guard's and has been dealt with (the access is retried).
bool handle_fault(int signal_number, const siginfo_t* info) noexcept {
  if (info == nullptr || info->si_code <= 0) return false;  // sent by kill(), not a fault
  const auto address = reinterpret_cast<std::uintptr_t>(info->si_addr);
  // A SIGSEGV in a live device mapping is the program's own (a write to a read-only
  // mapping): not the guard's. A SIGBUS there means the kernel refused the page: gone.
  const int index = find_slot(address, signal_number == SIGBUS);
  if (index < 0) return false;
  if (g_slots[index].state.load(std::memory_order_acquire) == kActive && !revoke_slot(index, kAnyDevice) &&
      !guard_table_revoked(index)) {
    return false;  // the replacement failed: the fault takes its course
  }
  return map_ones_at(index, address);
}

void forward(int signal_number, siginfo_t* info, void* context) noexcept {
  const struct sigaction& previous = signal_number == SIGBUS ? g_previous_bus : g_previous_segv;
  if ((previous.sa_flags & SA_SIGINFO) != 0 && previous.sa_sigaction != nullptr) {
    previous.sa_sigaction(signal_number, info, context);
    return;
  }
  if ((previous.sa_flags & SA_SIGINFO) == 0 && previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN) {
    previous.sa_handler(signal_number);
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

}  // namespace

Result<int> guard_table_register(void* address, std::size_t length, const Bdf& device) {
  for (int i = 0; i < kGuardSlots; ++i) {
    int expected = kFree;
    if (!g_slots[i].state.compare_exchange_strong(expected, kClaiming, std::memory_order_acq_rel)) continue;
    g_slots[i].begin.store(reinterpret_cast<std::uintptr_t>(address), std::memory_order_relaxed);
    g_slots[i].length.store(length, std::memory_order_relaxed);
    g_slots[i].device.store(key_of(device), std::memory_order_relaxed);
    int used = g_slots_used.load(std::memory_order_relaxed);
    while (used < i + 1 && !g_slots_used.compare_exchange_weak(used, i + 1, std::memory_order_acq_rel)) {
    }
    g_slots[i].state.store(kActive, std::memory_order_release);
    return i;
  }
  return std::unexpected(make_error(Errc::busy, "guard device mapping", device.to_string(),
                                    "the removal guard's table is full (4096 mappings)",
                                    "close regions that are no longer used"));
}

void guard_table_unregister(int index) noexcept {
  if (index < 0 || index >= kGuardSlots) return;
  Slot& slot = g_slots[index];
  for (;;) {
    int state = slot.state.load(std::memory_order_acquire);
    if (state == kRevoking) {
      cpu_pause();
      continue;
    }
    if (slot.state.compare_exchange_weak(state, kFree, std::memory_order_acq_rel)) return;
  }
}

bool guard_table_revoked(int index) noexcept {
  if (index < 0 || index >= kGuardSlots) return false;
  const int state = g_slots[index].state.load(std::memory_order_acquire);
  return state == kRevoking || state == kRevoked;
}

bool guard_table_covers_revoked(const void* address) noexcept {
  return find_slot(reinterpret_cast<std::uintptr_t>(address), false) >= 0;
}

}  // namespace detail

Result<void> install_removal_guard() {
  static std::mutex install_lock;
  const std::lock_guard lock(install_lock);
  if (detail::g_installed.load(std::memory_order_acquire)) return {};
  if (detail::g_ones_fd.load(std::memory_order_acquire) < 0) {  // an earlier, failed call may have made it
    auto ones = sys::make_all_ones_memfd(detail::kChunk);
    if (!ones) return std::unexpected(ones.error());
    detail::g_ones_fd.store(ones->release(), std::memory_order_release);  // kept for the process's life
  }
  if (auto bus = sys::install_fault_handler(SIGBUS, detail::on_fault, &detail::g_previous_bus); !bus) return bus;
  if (auto segv = sys::install_fault_handler(SIGSEGV, detail::on_fault, &detail::g_previous_segv); !segv) {
    // Undone, so that a retry records the handler from before us as SIGBUS's previous one,
    // not on_fault itself (which would then chain to itself for every foreign fault).
    sys::restore_handler(SIGBUS, detail::g_previous_bus);
    return segv;
  }
  detail::g_installed.store(true, std::memory_order_release);
  return {};
}

bool removal_guard_installed() noexcept { return detail::g_installed.load(std::memory_order_acquire); }

bool mapping_revoked(const void* address) noexcept { return detail::guard_table_covers_revoked(address); }

Result<std::size_t> revoke_device_mappings(const Bdf& device) {
  if (auto installed = install_removal_guard(); !installed) return std::unexpected(installed.error());
  const std::uint64_t key = detail::key_of(device);
  std::size_t revoked = 0;
  const int used = detail::g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    detail::Slot& slot = detail::g_slots[i];
    if (slot.state.load(std::memory_order_acquire) != detail::kActive) continue;
    if (slot.device.load(std::memory_order_relaxed) != key) continue;
    if (!detail::revoke_slot(i, key)) continue;
    ++revoked;
    // The first chunk (where registers usually are) at once; the rest when touched.
    detail::map_ones_at(i, slot.begin.load(std::memory_order_relaxed));
  }
  return revoked;
}

}  // namespace pcie
