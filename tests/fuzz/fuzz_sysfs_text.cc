// Fuzz target: text the kernel exports in sysfs and /proc that the library parses: link
// speeds ("8.0 GT/s PCIe"), numbers in attributes ("0x8086\n", "-1"), <device>/resource
// files (what the BAR opener reads), <device>/modalias (discovery's IDs), and error messages
// built from any of it (printable()).
#include <fmt/format.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pcie/error.h"
#include "pcie/link.h"
#include "src/pci/device_identity.h"
#include "src/pci/resource_file.h"
#include "src/pci/sysfs_links.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto speed = pcie::parse_sysfs_link_speed(text); speed && !(*speed > 0)) std::abort();
  // A number that parses prints back (in decimal) to one that parses to the same value.
  if (auto number = pcie::sysfs::parse_number(text)) {
    if (pcie::sysfs::parse_number(std::to_string(*number)) != *number) std::abort();
  }
  // A resource file that parses has at most the bound of lines, and each BAR from it has
  // a size that fits its line.
  if (auto lines = pcie::sysfs::parse_resource_file(text, "resource")) {
    if (lines->size() > pcie::sysfs::kMaxResourceLines) std::abort();
    for (const auto& line : *lines) {
      const auto bar = pcie::sysfs::bar_from_resource(0, line);
      if (bar.size != 0 && (line.end < line.start || bar.size - 1 != line.end - line.start)) std::abort();
    }
  }
  // A modalias that parses is the kernel's text of the same IDs, but for its newline.
  if (const auto ids = pcie::detail::parse_modalias(text)) {
    const std::string kernel = fmt::format("pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}", ids->vendor_id,
                                           ids->device_id, ids->subsystem_vendor_id, ids->subsystem_id,
                                           ids->class_code >> 16, (ids->class_code >> 8) & 0xff, ids->class_code & 0xff);
    std::string_view without_newline = text;
    if (without_newline.ends_with('\n')) without_newline.remove_suffix(1);
    if (pcie::detail::parse_modalias(kernel) != ids || without_newline.size() != kernel.size()) std::abort();
  }
  const std::string shown = pcie::printable(text);
  for (const char c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
  }
  if (shown.size() < text.size() || shown.size() > 4 * text.size()) std::abort();
  return 0;
}
