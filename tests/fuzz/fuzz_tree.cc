// Fuzz target: pciectl ls -t's bus tree built from bridge bus numbers (device data: any
// config space can claim any primary, secondary and subordinate bus). Each 7 input bytes
// make one device: domain (0-2), bus, device/function, whether it is a bridge (class 06h
// with a type 1 or 2 header), and its three bus numbers; a selection bit per device comes
// from the last byte. The tree must be finite (no loop through bridges that forward their
// own bus), each device must be in it once or be named as left out, and a selection keeps a
// subset.
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "pcie/discovery.h"
#include "tools/pciectl/tree.h"

namespace {

std::size_t count_devices(const nlohmann::ordered_json& buses, std::size_t depth) {
  if (depth > 4096) std::abort();  // deeper than the devices could nest
  std::size_t count = 0;
  for (const auto& bus : buses) {
    for (const auto& device : bus["devices"]) {
      ++count;
      if (device.contains("buses")) count += count_devices(device["buses"], depth + 1);
    }
  }
  return count;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  constexpr std::size_t kBytesPerDevice = 7;
  std::vector<pcie::DeviceInfo> devices;
  for (std::size_t at = 0; at + kBytesPerDevice <= size && devices.size() < 512; at += kBytesPerDevice) {
    pcie::DeviceInfo device;
    device.bdf = pcie::Bdf{static_cast<std::uint32_t>(data[at] % 3), data[at + 1],
                           static_cast<std::uint8_t>((data[at + 2] >> 3) & 0x1f),
                           static_cast<std::uint8_t>(data[at + 2] & 7)};
    if ((data[at + 3] & 1) != 0) {
      device.base_class = 0x06;
      device.subclass = 0x04;
      device.header_type = 1;
      device.bridge_buses = pcie::BridgeBuses{data[at + 4], data[at + 5], data[at + 6]};
    } else if ((data[at + 3] & 2) != 0) {  // bus numbers on a device that is no bridge
      device.base_class = 0x01;
      device.header_type = 1;
      device.bridge_buses = pcie::BridgeBuses{data[at + 4], data[at + 5], data[at + 6]};
    }
    devices.push_back(device);
  }
  // discover() returns one entry per BDF, sorted.
  std::sort(devices.begin(), devices.end(), [](const auto& a, const auto& b) { return a.bdf < b.bdf; });
  devices.erase(std::unique(devices.begin(), devices.end(), [](const auto& a, const auto& b) { return a.bdf == b.bdf; }),
                devices.end());

  const std::vector<pcie::Bdf> outside = pciectl::devices_outside_the_tree(devices);
  const nlohmann::ordered_json whole = pciectl::tree_to_json(devices, {});
  if (count_devices(whole, 0) + outside.size() != devices.size()) std::abort();
  const std::string drawn = pciectl::render_tree(devices, {}, true);
  if (drawn.empty() || drawn.back() != '\n') std::abort();

  std::vector<bool> selected;
  const std::uint8_t bits = size > 0 ? data[size - 1] : 0;
  for (std::size_t i = 0; i < devices.size(); ++i) selected.push_back(((bits >> (i % 8)) & 1) != 0);
  const nlohmann::ordered_json part = pciectl::tree_to_json(devices, selected);
  if (count_devices(part, 0) > devices.size() - outside.size()) std::abort();
  const std::string drawn_part = pciectl::render_tree(devices, selected, false);
  if (!drawn_part.empty() && drawn_part.back() != '\n') std::abort();
  return 0;
}
