// The removal guard's table of device mappings (pcie/removal.h), beside Mapping, which
// registers and unregisters; the fault handler and revoke_device_mappings() (src/removal/)
// revoke through it. Lock-free, so that a SIGBUS handler can use it: a fixed array of
// slots, each holding one word (a generation and a state) that moves
//   free -> claiming -> active -> (revoking -> revoked) -> releasing -> free,
// the generation counting registrations, so that a slot freed and registered again between
// two looks is never mistaken for the one first seen.
//
// The rule that keeps memory safe: no MAP_FIXED lands on a slot's range unless the slot is
// "revoking" (the revoker's own) or pinned by the one writing, and unregistering waits for
// both to end before it returns, after which the owner may munmap and anyone may map that
// range again. A revocation maps its first all-ones chunk before it publishes "revoked".
#pragma once

#include <cstddef>
#include <cstdint>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie::detail {

inline constexpr int kGuardSlots = 4096;

// Makes the all-ones memory the guard maps over revoked ranges. Returns an error from
// memfd_create/ftruncate/mmap. Idempotent; needed before any revocation maps memory.
Result<void> guard_table_prepare();

// A slot for [address, address + length) of `device`. Fails busy when all are taken.
Result<int> guard_table_register(void* address, std::size_t length, const Bdf& device);
// Frees `slot`: waits out a revocation or replacement in flight over its range, so that
// none lands after this returns. Does nothing for a slot out of range or not registered.
// The slot number carries no generation: call it once per registration (Mapping does, by
// exchanging its slot for -1), or it frees whoever registered the slot since.
void guard_table_unregister(int slot) noexcept;
// Whether registered `slot` has been (or is being) revoked.
bool guard_table_revoked(int slot) noexcept;
// Whether `address` lies in a revoked mapping (the slow path of a read of all ones).
bool guard_table_covers_revoked(const void* address) noexcept;

// The fault handler's work for a fault at `address`: when it lies in a revoked mapping (or,
// with `revoke_live`, in a live one, which is revoked first), maps all ones over the chunk
// that holds it and returns true; false when the address is not the guard's or the
// replacement failed (the fault then takes its course). Signal-safe.
bool guard_table_replace_at(std::uintptr_t address, bool revoke_live) noexcept;
// Revokes every live mapping of `device` and returns how many. Signal-safe.
std::size_t guard_table_revoke_device(const Bdf& device) noexcept;

// For tests: called with the slot before every MAP_FIXED over a registered range (the
// inaccessible replacement and each all-ones chunk), on the thread doing it (a signal
// handler's among them). nullptr (the default) calls nothing.
void guard_table_set_replace_hook(void (*hook)(int slot) noexcept) noexcept;

}  // namespace pcie::detail
