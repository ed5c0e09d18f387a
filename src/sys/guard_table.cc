// The removal guard's table of device mappings; see guard_table.h for the states and the
// rule that keeps a MAP_FIXED off memory that its owner has already unmapped.
#include "src/sys/guard_table.h"

#include <sched.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <atomic>
#include <cstdint>

#include "src/sys/fault_memory.h"

namespace pcie::detail {
namespace {

enum SlotState : std::uint64_t { kFree, kClaiming, kActive, kRevoking, kRevoked, kReleasing };
constexpr std::uint64_t kStateMask = 7;  // the low bits of a slot's word; the rest count registrations

std::uint64_t state_of(std::uint64_t word) { return word & kStateMask; }
std::uint64_t with_state(std::uint64_t word, SlotState state) { return (word & ~kStateMask) | state; }
bool same_registration(std::uint64_t a, std::uint64_t b) { return (a & ~kStateMask) == (b & ~kStateMask); }

struct Slot {
  std::atomic<std::uint64_t> word{kFree};
  std::atomic<int> pins{0};  // all-ones replacements in flight over the range (fault handlers)
  std::atomic<std::uintptr_t> begin{0};
  std::atomic<std::size_t> length{0};
  std::atomic<std::uint64_t> device{0};
};

// One registration as read from a slot: the word and the fields that go with it.
struct SlotView {
  std::uint64_t word = kFree;
  std::uintptr_t begin = 0;
  std::size_t length = 0;
  std::uint64_t device = 0;
};

// The fault handler relies on these being plain instructions, never a hidden lock.
static_assert(std::atomic<std::uint64_t>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

Slot g_slots[kGuardSlots];
// One past the highest slot ever claimed: scans stop there.
std::atomic<int> g_slots_used{0};
std::atomic<void (*)(int) noexcept> g_replace_hook{nullptr};

// Replacement memory: the all-ones memfd is mapped in chunks of this size where accesses
// land, so a revoked 8 GiB BAR costs one PROT_NONE mapping plus a chunk per place touched,
// not 8 GiB of ones. The descriptor's identity is kept too: a program that closes every
// descriptor it does not know (a daemon's sweep) may reuse the number for its own file,
// which the guard must then never map; it makes a new memfd instead.
constexpr std::size_t kChunk = std::size_t{2} << 20;
struct OnesMemory {
  int fd = -1;
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
};
// Each record is written once, before it is published through g_ones_current, so that a
// reader never sees one descriptor with another's identity. A few renewals are plenty: each
// takes a program closing the guard's descriptor.
constexpr int kOnesRecords = 64;
OnesMemory g_ones[kOnesRecords];
std::atomic<int> g_ones_claimed{0};
std::atomic<int> g_ones_current{-1};

void cpu_pause() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// A step of a wait on another thread (a revocation, a replacement in flight, both a few
// system calls long): a pause at first, then the CPU given up, so that a waiter of higher
// priority on the same CPU cannot keep the thread it waits for from running.
void wait_step(unsigned& spins) noexcept {
  if (++spins < 1000) {
    cpu_pause();
  } else {
    ::sched_yield();
  }
}

std::uint64_t key_of(const Bdf& bdf) {
  return (std::uint64_t{bdf.domain} << 16) | (std::uint64_t{bdf.bus} << 8) |
         (std::uint64_t{bdf.device} << 3) | bdf.function;
}
constexpr std::uint64_t kAnyDevice = ~std::uint64_t{0};

// Makes a new all-ones memfd and publishes it in place of record `stale` (-1: none yet):
// the record in use afterwards, or minus an errno. Signal-safe.
int renew_ones(int stale) noexcept {
  const int record = g_ones_claimed.fetch_add(1, std::memory_order_relaxed);
  if (record >= kOnesRecords) return -EMFILE;
  const int fd = sys::make_all_ones_memfd(kChunk);
  if (fd < 0) return fd;
  OnesMemory& ones = g_ones[record];
  if (const int error = sys::identity_of_fd(fd, &ones.device, &ones.inode); error != 0) {
    ::close(fd);
    return -error;
  }
  ones.fd = fd;
  int expected = stale;
  if (!g_ones_current.compare_exchange_strong(expected, record, std::memory_order_acq_rel)) {
    ::close(fd);  // another thread renewed it first: use theirs
    return expected;
  }
  return record;
}

// The all-ones memfd's descriptor, made again where it was closed or its number now names
// another file; -1 when none can be had. Signal-safe. (A sweep between this check and the
// caller's mmap can still swap the file; the check closes all but that instant.)
int ones_fd() noexcept {
  const int record = g_ones_current.load(std::memory_order_acquire);
  if (record < 0) return -1;  // guard_table_prepare() never succeeded
  const OnesMemory& ones = g_ones[record];
  std::uint64_t device = 0;
  std::uint64_t inode = 0;
  if (sys::identity_of_fd(ones.fd, &device, &inode) == 0 && device == ones.device && inode == ones.inode) {
    return ones.fd;
  }
  const int renewed = renew_ones(record);
  return renewed < 0 ? -1 : g_ones[renewed].fd;
}

void before_replace(int index) noexcept {
  if (auto hook = g_replace_hook.load(std::memory_order_acquire)) hook(index);
}

// Reads slot `index` as one registration (a seqlock read: the word before and after the
// fields must match). False when the slot changed meanwhile or holds no registration.
bool read_slot(int index, SlotView& view) noexcept {
  const Slot& slot = g_slots[index];
  view.word = slot.word.load(std::memory_order_acquire);
  const auto state = state_of(view.word);
  if (state == kFree || state == kClaiming || state == kReleasing) return false;
  // Acquire loads, so that the second look at the word cannot move before them (a fence
  // would do the same, but ThreadSanitizer builds refuse fences).
  view.begin = slot.begin.load(std::memory_order_acquire);
  view.length = slot.length.load(std::memory_order_acquire);
  view.device = slot.device.load(std::memory_order_acquire);
  return slot.word.load(std::memory_order_relaxed) == view.word;
}

bool holds(const SlotView& view, std::uintptr_t address) noexcept {
  return address >= view.begin && address - view.begin < view.length;
}

// The slot whose mapping holds `address`: revoked or being revoked, and with `include_live`
// live too. -1 when none.
int find_slot(std::uintptr_t address, bool include_live, SlotView& view) noexcept {
  const int used = g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    if (!read_slot(i, view) || !holds(view, address)) continue;
    const auto state = state_of(view.word);
    if (state == kRevoking || state == kRevoked || (include_live && state == kActive)) return i;
  }
  return -1;
}

// Maps all ones over the chunk of `view`'s range that holds `address`; the caller makes the
// range safe to write (its own revocation, or a pin). 0 or an errno.
int map_ones_at(int index, const SlotView& view, std::uintptr_t address) noexcept {
  if (!holds(view, address)) return EINVAL;
  const int fd = ones_fd();
  if (fd < 0) return ENOMEM;
  const std::uintptr_t chunk = view.begin + (address - view.begin) / kChunk * kChunk;
  const std::size_t length = std::min<std::uintptr_t>(kChunk, view.begin + view.length - chunk);
  before_replace(index);
  return sys::map_private_fixed(fd, reinterpret_cast<void*>(chunk), length);
}

// Waits while another thread revokes the registration `view` names.
void wait_out_revocation(int index, const SlotView& view) noexcept {
  unsigned spins = 0;
  while (g_slots[index].word.load(std::memory_order_acquire) == with_state(view.word, kRevoking)) wait_step(spins);
}

// Revokes the live registration `view` of slot `index` (for `device`, or kAnyDevice): the
// device mapping is replaced by inaccessible memory and the chunk holding `touched` by all
// ones, both before "revoked" is published, so that an unregister (which waits while
// "revoking") never returns with a replacement still to come. False when the slot no
// longer holds that live registration, holds another device, or the replacement failed
// (the slot stays live: the device is still mapped there).
bool revoke_slot(int index, const SlotView& view, std::uint64_t device, std::uintptr_t touched) noexcept {
  Slot& slot = g_slots[index];
  if (state_of(view.word) != kActive || (device != kAnyDevice && view.device != device)) return false;
  std::uint64_t expected = view.word;
  if (!slot.word.compare_exchange_strong(expected, with_state(view.word, kRevoking), std::memory_order_acq_rel)) {
    wait_out_revocation(index, view);
    return false;
  }
  before_replace(index);
  if (sys::replace_with_inaccessible(reinterpret_cast<void*>(view.begin), view.length) != 0) {
    slot.word.store(view.word, std::memory_order_release);
    return false;
  }
  // A failure here costs nothing: the next access faults and maps the chunk then.
  (void)map_ones_at(index, view, touched);
  slot.word.store(with_state(view.word, kRevoked), std::memory_order_release);
  return true;
}

// Holds off unregistering the registration `view` names while all ones are mapped over part
// of it. False when that registration is being released or gone. A sequentially consistent
// pair with guard_table_unregister(): either this sees "releasing" or that sees the pin.
bool pin(int index, const SlotView& view) noexcept {
  Slot& slot = g_slots[index];
  slot.pins.fetch_add(1, std::memory_order_seq_cst);
  const std::uint64_t now = slot.word.load(std::memory_order_seq_cst);
  if (!same_registration(now, view.word) || state_of(now) != kRevoked) {
    slot.pins.fetch_sub(1, std::memory_order_release);
    return false;
  }
  return true;
}

void unpin(int index) noexcept { g_slots[index].pins.fetch_sub(1, std::memory_order_release); }

}  // namespace

Result<void> guard_table_prepare() {
  if (g_ones_current.load(std::memory_order_acquire) >= 0) return {};
  if (const int record = renew_ones(-1); record < 0) {
    return std::unexpected(make_errno_error(-record, "make all-ones memory", "removal guard"));
  }
  return {};
}

Result<int> guard_table_register(void* address, std::size_t length, const Bdf& device) {
  for (int i = 0; i < kGuardSlots; ++i) {
    Slot& slot = g_slots[i];
    std::uint64_t word = slot.word.load(std::memory_order_relaxed);
    if (state_of(word) != kFree) continue;
    // A new generation: anyone still holding a view of the previous registration fails
    // its compare-exchange or pin.
    const std::uint64_t claimed = with_state(word + kStateMask + 1, kClaiming);
    if (!slot.word.compare_exchange_strong(word, claimed, std::memory_order_acq_rel)) continue;
    // Release stores: a reader whose acquire load sees one of them also sees the word that
    // came before it, so its second look at the word notices the change (read_slot).
    slot.begin.store(reinterpret_cast<std::uintptr_t>(address), std::memory_order_release);
    slot.length.store(length, std::memory_order_release);
    slot.device.store(key_of(device), std::memory_order_release);
    int used = g_slots_used.load(std::memory_order_relaxed);
    while (used < i + 1 && !g_slots_used.compare_exchange_weak(used, i + 1, std::memory_order_acq_rel)) {
    }
    slot.word.store(with_state(claimed, kActive), std::memory_order_release);
    return i;
  }
  return std::unexpected(make_error(Errc::busy, "guard device mapping", device.to_string(),
                                    "the removal guard's table is full (4096 mappings)",
                                    "close regions that are no longer used"));
}

void guard_table_unregister(int index) noexcept {
  if (index < 0 || index >= kGuardSlots) return;
  Slot& slot = g_slots[index];
  std::uint64_t word = slot.word.load(std::memory_order_acquire);
  unsigned spins = 0;
  for (;;) {
    const auto state = state_of(word);
    if (state == kRevoking) {  // the revoker maps over the range until it publishes
      wait_step(spins);
      word = slot.word.load(std::memory_order_acquire);
      continue;
    }
    if (state != kActive && state != kRevoked) return;
    if (slot.word.compare_exchange_weak(word, with_state(word, kReleasing), std::memory_order_seq_cst)) break;
  }
  while (slot.pins.load(std::memory_order_seq_cst) != 0) wait_step(spins);
  // Cleared, so that no stale range is matched by a later look.
  slot.begin.store(0, std::memory_order_release);
  slot.length.store(0, std::memory_order_release);
  slot.device.store(0, std::memory_order_release);
  slot.word.store(with_state(word, kFree), std::memory_order_release);
}

bool guard_table_revoked(int index) noexcept {
  if (index < 0 || index >= kGuardSlots) return false;
  const auto state = state_of(g_slots[index].word.load(std::memory_order_acquire));
  return state == kRevoking || state == kRevoked;
}

bool guard_table_covers_revoked(const void* address) noexcept {
  SlotView view;
  return find_slot(reinterpret_cast<std::uintptr_t>(address), false, view) >= 0;
}

bool guard_table_replace_at(std::uintptr_t address, bool revoke_live) noexcept {
  SlotView view;
  const int index = find_slot(address, revoke_live, view);
  if (index < 0) return false;
  if (state_of(view.word) == kActive && revoke_slot(index, view, kAnyDevice, address)) return true;
  if (state_of(view.word) == kRevoking) wait_out_revocation(index, view);
  // Revoked by this thread's look or by another thread: the chunk at `address` may still be
  // inaccessible (another chunk was mapped first).
  if (!pin(index, view)) return false;
  const int error = map_ones_at(index, view, address);
  unpin(index);
  return error == 0;
}

std::size_t guard_table_revoke_device(const Bdf& device) noexcept {
  const std::uint64_t key = key_of(device);
  std::size_t revoked = 0;
  const int used = g_slots_used.load(std::memory_order_acquire);
  for (int i = 0; i < used; ++i) {
    SlotView view;
    if (!read_slot(i, view) || state_of(view.word) != kActive || view.device != key) continue;
    // The first chunk (where registers usually are) at once; the rest when touched.
    if (revoke_slot(i, view, key, view.begin)) ++revoked;
  }
  return revoked;
}

void guard_table_set_replace_hook(void (*hook)(int slot) noexcept) noexcept {
  g_replace_hook.store(hook, std::memory_order_release);
}

}  // namespace pcie::detail
