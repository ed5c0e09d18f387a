// What the kernel says this process has locked and pinned (private to the DMA backends):
// the figures an RLIMIT_MEMLOCK refusal is explained with.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace pcie::detail {

// A "Vm...:  N kB" line of /proc/self/status in bytes, e.g. "VmLck" (mlock and VFIO
// type1's pinned pages, mm->locked_vm) or "VmPin" (pages pinned for devices, such as
// iommufd's, mm->pinned_vm); nullopt when it cannot be read.
std::optional<std::uint64_t> process_status_bytes(std::string_view field);

}  // namespace pcie::detail
