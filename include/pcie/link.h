// PCIe link speed and width, from the PCI Express capability or from sysfs' link files.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/capabilities.h"
#include "pcie/error.h"

namespace pcie {

// PCI Express capability register offsets (PCIe Base Spec 6.0, 7.5.3).
namespace pcie_cap {
inline constexpr std::uint16_t kCapabilities = 0x02;  // bits 7:4 device/port type
inline constexpr std::uint16_t kLinkCapabilities = 0x0c;  // 3:0 max speed, 9:4 max width
inline constexpr std::uint16_t kLinkStatus = 0x12;        // 3:0 speed, 9:4 negotiated width
inline constexpr std::uint16_t kMinimumLength = 0x14;     // through Link Status
// Device/Port Type (kCapabilities bits 7:4) of a Root Complex Integrated Endpoint: no link.
inline constexpr std::uint8_t kTypeRootComplexIntegratedEndpoint = 0x9;
// Device/Port Type of a Root Complex Event Collector: no link either.
inline constexpr std::uint8_t kTypeRootComplexEventCollector = 0xa;
}  // namespace pcie_cap

// A link's negotiated and maximum speed and width; speeds in GT/s per lane, widths in lanes.
struct LinkInfo {
  // Where the figures come from: the device's own PCI Express capability, sysfs' link
  // files, or (for an SR-IOV virtual function, whose link registers are reserved) its
  // physical function, whose link it shares.
  enum class Source { config_space, sysfs, physical_function };
  double current_speed_gts = 0;  // 0 when unknown
  unsigned current_width = 0;    // lanes; 0 when the link is down or unknown
  double max_speed_gts = 0;      // the fastest the link supports; 0 when unknown
  unsigned max_width = 0;        // lanes the link supports; 0 when unknown
  Source source = Source::config_space;  // where the figures were read
};

// GT/s for a Link Speed encoding (1 = 2.5 GT/s ... 6 = 64 GT/s); nullopt for reserved values.
std::optional<double> link_speed_gts(std::uint8_t encoding);

// Decodes link capabilities and status from a config snapshot. nullopt when the device has
// no PCI Express capability or no link (root-complex integrated endpoints); an error when
// the capability is cut off by the readable size (unprivileged reads see 64 bytes).
Result<std::optional<LinkInfo>> decode_link(std::span<const std::uint8_t> config,
                                            const std::vector<Capability>& capabilities);

// Reads <device_dir>/{current,max}_link_{speed,width}, which the kernel exports to every
// user: the fallback when config space beyond 64 bytes is not readable. nullopt when the
// files are absent (conventional PCI) or say "Unknown"; an error when one exists but
// cannot be read.
Result<std::optional<LinkInfo>> read_sysfs_link(const std::string& device_dir);

// Parses a sysfs link speed such as "8.0 GT/s PCIe" or "2.5 GT/s"; nullopt otherwise.
std::optional<double> parse_sysfs_link_speed(std::string_view text);

}  // namespace pcie
