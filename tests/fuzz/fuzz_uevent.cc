// Fuzz target: a kernel uevent datagram, read by the removal watcher (pcie/removal.h). The
// first 4 input bytes choose the watched device, the rest is the message. The reader's
// answer must match a plain field-by-field reading, and appending a genuine removal of the
// device must always be recognised (the last PCI_SLOT_NAME decides).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "pcie/removal.h"

namespace {

bool plain_reading(std::string_view message, const pcie::Bdf& device) {
  bool remove = false;
  bool pci = false;
  bool slot = false;
  std::string field;
  const auto take = [&] {
    if (field == "ACTION=remove") remove = true;
    if (field == "SUBSYSTEM=pci") pci = true;
    if (field.rfind("PCI_SLOT_NAME=", 0) == 0) {
      auto bdf = pcie::Bdf::parse(std::string_view(field).substr(14));
      slot = bdf && *bdf == device;
    }
    field.clear();
  };
  for (const char c : message) {
    if (c == '\0') {
      take();
    } else {
      field += c;
    }
  }
  take();
  return remove && pci && slot;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 4) return 0;
  const pcie::Bdf device{static_cast<std::uint32_t>(data[0]), data[1], static_cast<std::uint8_t>(data[2] & 31),
                         static_cast<std::uint8_t>(data[3] & 7)};
  const std::string_view message(reinterpret_cast<const char*>(data + 4), size - 4);
  if (pcie::detail::uevent_removes(message, device) != plain_reading(message, device)) std::abort();
  std::string removal(message);
  removal += std::string_view("\0ACTION=remove\0SUBSYSTEM=pci\0PCI_SLOT_NAME=", 43);
  removal += device.to_string();
  if (!pcie::detail::uevent_removes(removal, device)) std::abort();
  return 0;
}
