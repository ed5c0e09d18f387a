// Fuzz target: config space as a device (or a hostile sysfs tree) could present it. Walks
// both capability lists and decodes the link, and checks what every caller relies on:
// bounded walks, capabilities inside the snapshot, link figures from the spec's encodings.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>

#include "pcie/capabilities.h"
#include "pcie/config_space.h"
#include "pcie/link.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::uint8_t> config(data, size < pcie::cfg::kExtendedSize ? size : pcie::cfg::kExtendedSize);
  const pcie::CapabilityWalk standard = pcie::walk_standard_capabilities(config);
  const pcie::CapabilityWalk extended = pcie::walk_extended_capabilities(config);
  if (standard.capabilities.size() > static_cast<std::size_t>(pcie::kMaxStandardCapabilities)) std::abort();
  if (extended.capabilities.size() > static_cast<std::size_t>(pcie::kMaxExtendedCapabilities)) std::abort();
  for (const pcie::Capability& capability : standard.capabilities) {
    if (capability.offset < 0x40 || capability.offset + 2u > config.size()) std::abort();
    (void)capability.name();
  }
  for (const pcie::Capability& capability : extended.capabilities) {
    if (capability.offset < 0x100 || capability.offset + 4u > config.size()) std::abort();
    (void)capability.name();
  }
  if (standard.problem) (void)standard.problem->message();
  if (extended.problem) (void)extended.problem->message();
  auto link = pcie::decode_link(config, standard.capabilities);
  if (link && *link) {
    const pcie::LinkInfo& info = **link;
    if (info.current_width > 63 || info.max_width > 63) std::abort();
    if (info.current_speed_gts < 0 || info.current_speed_gts > 64 || info.max_speed_gts > 64) std::abort();
  } else if (!link) {
    (void)link.error().message();
  }
  (void)pcie::config_reads_all_ones(config);
  return 0;
}
