// How lspci -nn names a device in one phrase, shared by the listing and the tree.
#pragma once

#include <fmt/format.h>

#include <string>

#include "pcie/discovery.h"
#include "pcie/error.h"

namespace pciectl {

// "Vendor Device [vvvv:dddd]" as lspci -nn names a device ("Device [1234:11e8]" when
// pci.ids knows neither, "Intel Corporation Device [8086:0d57]" when it knows the vendor).
inline std::string render_vendor_and_device(const pcie::DeviceInfo& device) {
  // pci.ids is outside data: its names are printed escaped (pcie::printable).
  std::string text = device.vendor_name.empty() ? std::string() : pcie::printable(device.vendor_name) + " ";
  text += fmt::format("{} [{:04x}:{:04x}]",
                      device.device_name.empty() ? std::string("Device") : pcie::printable(device.device_name),
                      device.vendor_id, device.device_id);
  return text;
}

}  // namespace pciectl
