// The removal guard's table of device mappings (pcie/removal.h), shared by Mapping (which
// registers and unregisters), the fault handler and revoke_device_mappings(). Lock-free,
// so that a SIGBUS handler can read it: a fixed array of slots, each moving
//   free -> claiming -> active -> (revoking -> revoked) -> free,
// where unregistering waits out a revocation in progress, so that the revocation's
// MAP_FIXED never lands on memory the owner has already unmapped and someone else mapped.
#pragma once

#include <cstddef>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie::detail {

inline constexpr int kGuardSlots = 4096;

// A slot for [address, address + length) of `device`; busy when all are taken.
Result<int> guard_table_register(void* address, std::size_t length, const Bdf& device);
void guard_table_unregister(int slot) noexcept;
bool guard_table_revoked(int slot) noexcept;
// Whether `address` lies in a revoked mapping (the slow path of a read of all ones).
bool guard_table_covers_revoked(const void* address) noexcept;

}  // namespace pcie::detail
