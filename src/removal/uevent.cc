// Reading a kernel uevent: "remove@/devices/pci0000:00/0000:00:1c.0/0000:01:00.0" followed
// by NUL-terminated KEY=value fields (lib/kobject_uevent.c). Only the fields are trusted
// for the decision; the header is skipped.
#include <string_view>

#include "pcie/removal.h"

namespace pcie::detail {

bool uevent_removes(std::string_view message, const Bdf& device) {
  bool remove = false;
  bool pci = false;
  bool this_device = false;
  // Fields are at most a few hundred bytes; a datagram at most a page or two. The walk is
  // bounded by the message and never reads past it.
  std::size_t start = 0;
  while (start < message.size()) {
    std::size_t end = message.find('\0', start);
    if (end == std::string_view::npos) end = message.size();
    const std::string_view field = message.substr(start, end - start);
    if (field == "ACTION=remove") remove = true;
    if (field == "SUBSYSTEM=pci") pci = true;
    constexpr std::string_view kSlot = "PCI_SLOT_NAME=";
    if (field.starts_with(kSlot)) {
      auto bdf = Bdf::parse(field.substr(kSlot.size()));
      this_device = bdf && *bdf == device;
    }
    start = end + 1;
  }
  return remove && pci && this_device;
}

}  // namespace pcie::detail
