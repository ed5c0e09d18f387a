// Walking the standard and extended capability lists of a config-space snapshot.
// Config space comes from a device and is untrusted: walks are bounded, reject pointers
// into the header or past the end, detect loops, and report why they stopped instead of
// crashing or hanging.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

#include "pcie/error.h"

namespace pcie {

// Standard capability IDs (PCI Code and ID Assignment Spec 1.11, 2).
namespace cap {
// PCI Power Management: D-states and PME (PCIe Base Spec 6.0, 7.5.2).
inline constexpr std::uint8_t kPowerManagement = 0x01;
// Message Signaled Interrupts (PCIe Base Spec 6.0, 7.7.1; PCI 3.0, 6.8.1).
inline constexpr std::uint8_t kMsi = 0x05;
// Vendor Specific: byte 2 of the capability holds its length, the rest is the vendor's.
inline constexpr std::uint8_t kVendorSpecific = 0x09;
// PCI Express: device, link and slot registers (PCIe Base Spec 6.0, 7.5.3).
inline constexpr std::uint8_t kPciExpress = 0x10;
// MSI-X, its table and pending bit array in a BAR (PCIe Base Spec 6.0, 7.7.2; PCI 3.0,
// 6.8.2).
inline constexpr std::uint8_t kMsiX = 0x11;
}  // namespace cap

// Extended capability IDs (PCI Code and ID Assignment Spec 1.11, 3).
namespace ext_cap {
// Advanced Error Reporting: error status, mask and severity registers (PCIe Base Spec 6.0,
// 7.8.4).
inline constexpr std::uint16_t kAdvancedErrorReporting = 0x0001;
// Device Serial Number: a 64-bit EUI-64 (PCIe Base Spec 6.0, 7.9.3).
inline constexpr std::uint16_t kDeviceSerialNumber = 0x0003;
// Access Control Services: peer-to-peer request redirection and blocking, which Linux
// looks at to draw IOMMU group boundaries (PCIe Base Spec 6.2, 7.7.11).
inline constexpr std::uint16_t kAccessControlServices = 0x000d;
// Single Root I/O Virtualization: a physical function's VF controls (PCIe Base Spec 6.0,
// 9.3.3).
inline constexpr std::uint16_t kSingleRootIov = 0x0010;
// Resizable BAR: the BAR sizes a function supports and the one in use (PCIe Base Spec 6.0,
// 7.8.6).
inline constexpr std::uint16_t kResizableBar = 0x0015;
}  // namespace ext_cap

// Upper bounds on list length: 48 dword-aligned slots exist between 0x40 and 0x100, and
// 960 between 0x100 and 0x1000 (PCIe Base Spec 6.0, 7.6.2). A walk visits each slot at
// most once, so it finds at most this many; a list that goes on is reported as a loop.
inline constexpr int kMaxStandardCapabilities = (256 - 64) / 4;    // 48: 0x40 to 0xfc
inline constexpr int kMaxExtendedCapabilities = (4096 - 256) / 4;  // 960: 0x100 to 0xffc

// One capability found by a walk: its list, ID, version and offset in config space.
struct Capability {
  // Which list it is in: the standard list in the first 256 bytes (8-bit IDs, `pcie::cap`)
  // or the extended list from 0x100 in PCIe extended config space (16-bit IDs,
  // `pcie::ext_cap`).
  enum class Space { standard, extended };
  Space space = Space::standard;  // the list it was found in
  std::uint16_t id = 0;           // a pcie::cap ID (8 bits) or a pcie::ext_cap ID (16 bits)
  std::uint8_t version = 0;  // extended capabilities only
  std::uint16_t offset = 0;  // where the capability header sits in config space

  // "MSI-X", "Advanced Error Reporting", or "unknown" for unassigned IDs.
  std::string_view name() const;
  // Equal when all four fields are.
  friend bool operator==(const Capability&, const Capability&) = default;
};

// A standard capability ID's name as the PCI Code and ID Assignment Spec 1.11 gives it
// ("Power Management", "MSI-X"); "unknown" for IDs above 0x15.
std::string_view standard_capability_name(std::uint8_t id);
// An extended capability ID's name as the same spec gives it ("Advanced Error Reporting",
// "Single Root I/O Virtualization"); "unknown" for IDs above 0x34.
std::string_view extended_capability_name(std::uint16_t id);

// The capabilities found, in list order, and why the walk stopped early if it did
// (malformed list, device removed, list beyond the readable bytes). Capabilities found
// before the problem are kept: they were valid.
struct CapabilityWalk {
  std::vector<Capability> capabilities;  // in list order
  // Why the walk stopped early: malformed (a pointer into the header or out of bounds, a
  // loop, a truncated snapshot, an unknown header type), device_removed (all ones) or
  // out_of_range (the list goes past a snapshot shorter than 256 bytes, such as an
  // unprivileged reader's 64); nullopt when the list ended normally.
  std::optional<Error> problem;
};

// Walks the list that starts at the header's capability pointer. `config` is a snapshot
// of at least 64 bytes (fewer is reported as a problem).
CapabilityWalk walk_standard_capabilities(std::span<const std::uint8_t> config);

// Walks the list at 0x100. A snapshot of 256 bytes or fewer has no extended space, which
// is not a problem; nor is a header of 0 or all ones at 0x100 (no extended capabilities).
CapabilityWalk walk_extended_capabilities(std::span<const std::uint8_t> config);

// The first capability with `id` in a walk result, if any.
std::optional<Capability> find_capability(const std::vector<Capability>& capabilities,
                                          Capability::Space space, std::uint16_t id);

}  // namespace pcie
