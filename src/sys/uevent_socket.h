// The kernel's uevent netlink socket (NETLINK_KOBJECT_UEVENT, multicast group 1): where the
// kernel announces that a device node appeared or went away. Any user may listen.
#pragma once

#include <cstddef>
#include <optional>
#include <span>

#include "pcie/error.h"
#include "pcie/sys/unique_fd.h"

namespace pcie::sys {

// A non-blocking socket bound to the kernel's uevent group.
Result<UniqueFd> open_uevent_socket();

// One datagram into `buffer` (truncated to its size); its length, or nullopt when none is
// waiting or it did not come from the kernel (port id 0: only the kernel sends on group 1,
// but a datagram from anyone else is dropped all the same).
Result<std::optional<std::size_t>> receive_uevent(int fd, std::span<char> buffer);

}  // namespace pcie::sys
