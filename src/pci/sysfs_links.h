// What a device's sysfs links say: its driver (<device>/driver -> …/drivers/nvme) and its
// IOMMU group (<device>/iommu_group -> …/kernel/iommu_groups/7). One readlink each, since
// only the last component is needed (libpci's realpath() costs about eight). Private.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie::sysfs {

// The last component of the link's target; nullopt when there is no such link (ENOENT).
// Any other failure (not a link, EIO, ENOMEM) is an error: "unknown" is not "absent".
Result<std::optional<std::string>> read_link_name(const std::string& link);

// read_link_name, for callers to whom unknown and absent mean the same (error messages).
std::optional<std::string> link_name(const std::string& link);

// The driver bound to the device: nullopt when none is, an error when the link cannot be read.
Result<std::optional<std::string>> device_driver(const SysfsPaths& paths, const Bdf& bdf);

// The device's IOMMU group number, or nullopt (no IOMMU, or a malformed link).
std::optional<int> device_iommu_group(const SysfsPaths& paths, const Bdf& bdf);

// A number as sysfs attributes hold it: decimal or 0x-prefixed hex, optionally negative
// ("-1" for no NUMA node), a trailing newline allowed, nothing else; nullopt otherwise.
std::optional<std::int64_t> parse_number(std::string_view text);

// A group number as sysfs names it: decimal, non-negative, nothing else.
std::optional<int> parse_group_number(std::string_view text);

// An SR-IOV virtual function's physical function (<device>/physfn): nullopt for any other
// device, an error when the link exists but cannot be read or names no device.
Result<std::optional<Bdf>> physical_function(const SysfsPaths& paths, const Bdf& bdf);

// A physical function's enabled virtual functions (<device>/virtfnN), by N; an error when
// the device directory or one of the links cannot be read.
Result<std::vector<Bdf>> virtual_functions(const SysfsPaths& paths, const Bdf& bdf);

// The physical slots: every <pci_root>/slots/<name> whose "address" holds a device's
// "domain:bus:device" (drivers/pci/slot.c; "domain:bus" alone is a slot with no device),
// keyed by that address, the smallest name where several name one device. Empty when
// there is no slots directory; an error when the directory cannot be read. Reads at most
// kMaxSlots entries. Read once for a whole discovery, not once per device.
using SlotAddress = std::array<std::uint32_t, 3>;  // domain, bus, device
using PhysicalSlots = std::map<SlotAddress, std::string>;
Result<PhysicalSlots> read_physical_slots(const SysfsPaths& paths);
inline constexpr std::size_t kMaxSlots = 4096;

// The name of the slot holding `bdf` in `slots`, if any.
std::optional<std::string> slot_of(const PhysicalSlots& slots, const Bdf& bdf);

// The physical slot holding the device (read_physical_slots, then slot_of). libpci fills
// this only for the devices of a bus scan, not for one pci_get_dev() device. nullopt when
// no slot names the device or there is no slots directory; an error when the directory
// cannot be read.
Result<std::optional<std::string>> physical_slot(const SysfsPaths& paths, const Bdf& bdf);

}  // namespace pcie::sysfs
