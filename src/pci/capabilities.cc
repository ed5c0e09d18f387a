#include "pcie/capabilities.h"

#include <fmt/format.h>

#include <bitset>

#include "pcie/config_space.h"

namespace pcie {
namespace {

constexpr std::uint16_t kExtendedStart = 0x100;

Error walk_error(Errc code, std::string reason, std::string hint = {}) {
  return make_error(code, "walk capabilities", "", std::move(reason), std::move(hint));
}

std::optional<std::uint8_t> standard_list_pointer_offset(std::uint8_t header_type) {
  switch (header_type & cfg::kHeaderTypeMask) {
    case 0:  // endpoint
    case 1:  // PCI-to-PCI bridge
      return static_cast<std::uint8_t>(cfg::kCapabilityPointer);
    case 2:  // CardBus bridge
      return static_cast<std::uint8_t>(cfg::kCardbusCapabilityPointer);
    default: return std::nullopt;
  }
}

}  // namespace

CapabilityWalk walk_standard_capabilities(std::span<const std::uint8_t> config) {
  CapabilityWalk walk;
  if (config.size() < cfg::kUnprivilegedSize) {
    walk.problem = walk_error(Errc::malformed,
                              fmt::format("config space truncated to {} bytes", config.size()));
    return walk;
  }
  // The whole header, not the vendor ID alone: an SR-IOV VF's IDs read 0xffff.
  if (config_reads_all_ones(config)) {
    walk.problem = walk_error(Errc::device_removed, "config space reads all ones");
    return walk;
  }
  if ((load_le16(config, cfg::kStatus) & cfg::kStatusCapabilityList) == 0) return walk;
  const auto pointer_offset = standard_list_pointer_offset(config[cfg::kHeaderType]);
  if (!pointer_offset) {
    walk.problem = walk_error(Errc::malformed, fmt::format("unknown header type 0x{:02x}",
                                                           config[cfg::kHeaderType]));
    return walk;
  }

  // Bounded by `visited`: every step takes a dword-aligned offset in [0x40, 0xfc] not taken
  // before, so a walk ends within kMaxStandardCapabilities steps, a corrupt list as a loop.
  std::bitset<256> visited;
  // The two low bits of every pointer are reserved and must be masked (PCI 3.0, 6.7).
  std::uint32_t offset = config[*pointer_offset] & 0xfcu;
  while (offset != 0) {
    if (offset < cfg::kUnprivilegedSize) {
      walk.problem = walk_error(
          Errc::malformed, fmt::format("capability pointer 0x{:02x} points into the header", offset));
      return walk;
    }
    if (offset + 2 > config.size()) {
      walk.problem = walk_error(
          config.size() < cfg::kConventionalSize ? Errc::out_of_range : Errc::malformed,
          fmt::format("capability at 0x{:02x} lies beyond the {} readable bytes", offset,
                      config.size()),
          "");
      return walk;
    }
    if (visited[offset]) {
      walk.problem = walk_error(
          Errc::malformed, fmt::format("capability list loops back to 0x{:02x}", offset));
      return walk;
    }
    visited[offset] = true;
    if (config[offset] == 0xff && config[offset + 1] == 0xff) {
      walk.problem = walk_error(Errc::device_removed,
                                fmt::format("capability at 0x{:02x} reads all ones", offset));
      return walk;
    }
    walk.capabilities.push_back(
        {Capability::Space::standard, config[offset], 0, static_cast<std::uint16_t>(offset)});
    offset = config[offset + 1] & 0xfcu;
  }
  return walk;
}

CapabilityWalk walk_extended_capabilities(std::span<const std::uint8_t> config) {
  CapabilityWalk walk;
  if (config.size() <= cfg::kConventionalSize) return walk;
  if (config.size() < kExtendedStart + 4) {
    walk.problem = walk_error(Errc::malformed,
                              fmt::format("extended config space truncated to {} bytes",
                                          config.size()));
    return walk;
  }
  std::uint32_t header = load_le32(config, kExtendedStart);
  // 0: no extended capabilities. All ones: no extended config space at all (a conventional
  // device behind a PCIe bridge), as the kernel's pci_cfg_space_size() also concludes.
  if (header == 0 || header == 0xffffffffu) return walk;

  // Bounded by `visited` as the standard walk: dword-aligned offsets in [0x100, 0xffc], each
  // taken once, so at most kMaxExtendedCapabilities steps.
  std::bitset<4096> visited;
  std::uint32_t offset = kExtendedStart;
  for (;;) {
    if (visited[offset]) {
      walk.problem = walk_error(
          Errc::malformed, fmt::format("extended capability list loops back to 0x{:03x}", offset));
      return walk;
    }
    visited[offset] = true;
    header = load_le32(config, offset);
    if (header == 0xffffffffu) {
      walk.problem = walk_error(Errc::device_removed,
                                fmt::format("extended capability at 0x{:03x} reads all ones", offset));
      return walk;
    }
    if (header == 0) return walk;  // an empty header ends the list
    walk.capabilities.push_back({Capability::Space::extended,
                                 static_cast<std::uint16_t>(header & 0xffff),
                                 static_cast<std::uint8_t>((header >> 16) & 0xf),
                                 static_cast<std::uint16_t>(offset)});
    // Next pointer: bits 31:20, low two bits reserved (PCIe Base Spec 6.0, 7.6.3).
    const std::uint32_t next = (header >> 20) & 0xffcu;
    if (next == 0) return walk;
    if (next < kExtendedStart) {
      walk.problem = walk_error(Errc::malformed,
                                fmt::format("extended capability pointer 0x{:03x} points below 0x100",
                                            next));
      return walk;
    }
    if (next + 4 > config.size()) {
      walk.problem = walk_error(Errc::malformed,
                                fmt::format("extended capability at 0x{:03x} lies beyond the {} "
                                            "readable bytes", next, config.size()));
      return walk;
    }
    offset = next;
  }
}

std::optional<Capability> find_capability(const std::vector<Capability>& capabilities,
                                          Capability::Space space, std::uint16_t id) {
  for (const Capability& capability : capabilities) {
    if (capability.space == space && capability.id == id) return capability;
  }
  return std::nullopt;
}

std::string_view Capability::name() const {
  return space == Space::standard ? standard_capability_name(static_cast<std::uint8_t>(id))
                                  : extended_capability_name(id);
}

}  // namespace pcie
