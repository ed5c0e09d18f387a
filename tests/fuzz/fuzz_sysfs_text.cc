// Fuzz target: text the kernel exports in sysfs and /proc that the library parses: link
// speeds ("8.0 GT/s PCIe"), numbers in attributes ("0x8086\n", "-1"), and error messages
// built from any of it (printable()).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pcie/error.h"
#include "pcie/link.h"
#include "src/pci/sysfs_links.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto speed = pcie::parse_sysfs_link_speed(text); speed && !(*speed > 0)) std::abort();
  // A number that parses prints back (in decimal) to one that parses to the same value.
  if (auto number = pcie::sysfs::parse_number(text)) {
    if (pcie::sysfs::parse_number(std::to_string(*number)) != *number) std::abort();
  }
  const std::string shown = pcie::printable(text);
  for (const char c : shown) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
  }
  if (shown.size() < text.size() || shown.size() > 4 * text.size()) std::abort();
  return 0;
}
