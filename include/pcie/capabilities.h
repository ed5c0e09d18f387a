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
inline constexpr std::uint8_t kPowerManagement = 0x01;
inline constexpr std::uint8_t kMsi = 0x05;
inline constexpr std::uint8_t kVendorSpecific = 0x09;
inline constexpr std::uint8_t kPciExpress = 0x10;
inline constexpr std::uint8_t kMsiX = 0x11;
}  // namespace cap

// Extended capability IDs (PCI Code and ID Assignment Spec 1.11, 3).
namespace ext_cap {
inline constexpr std::uint16_t kAdvancedErrorReporting = 0x0001;
inline constexpr std::uint16_t kDeviceSerialNumber = 0x0003;
inline constexpr std::uint16_t kAccessControlServices = 0x000d;
inline constexpr std::uint16_t kSingleRootIov = 0x0010;
inline constexpr std::uint16_t kResizableBar = 0x0015;
}  // namespace ext_cap

// Upper bounds on list length: 48 dword-aligned slots exist between 0x40 and 0x100, and
// 960 between 0x100 and 0x1000 (PCIe Base Spec 6.0, 7.6.2). A walk visits each slot at
// most once, so it finds at most this many; a list that goes on is reported as a loop.
inline constexpr int kMaxStandardCapabilities = (256 - 64) / 4;
inline constexpr int kMaxExtendedCapabilities = (4096 - 256) / 4;

struct Capability {
  enum class Space { standard, extended };
  Space space = Space::standard;
  std::uint16_t id = 0;
  std::uint8_t version = 0;  // extended capabilities only
  std::uint16_t offset = 0;  // where the capability header sits in config space

  // "MSI-X", "Advanced Error Reporting", or "unknown" for unassigned IDs.
  std::string_view name() const;
  friend bool operator==(const Capability&, const Capability&) = default;
};

std::string_view standard_capability_name(std::uint8_t id);
std::string_view extended_capability_name(std::uint16_t id);

// The capabilities found, in list order, and why the walk stopped early if it did
// (malformed list, device removed, list beyond the readable bytes). Capabilities found
// before the problem are kept: they were valid.
struct CapabilityWalk {
  std::vector<Capability> capabilities;
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
