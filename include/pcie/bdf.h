// A PCI address: domain:bus:device.function.
#pragma once

#include <compare>
#include <cstdint>
#include <string>
#include <string_view>

#include "pcie/error.h"

namespace pcie {

// A function's PCI address (domain:bus:device.function), as sysfs names it under
// /sys/bus/pci/devices.
struct Bdf {
  std::uint32_t domain = 0;   // "segment"; 16 bits on most hosts, wider behind Intel VMD
  std::uint8_t bus = 0;       // 0..255
  std::uint8_t device = 0;    // 0..31
  std::uint8_t function = 0;  // 0..7

  // Parses "0000:03:00.0", "03:00.0" (domain 0) or the short "3:0.0". Fields are hex
  // without prefix or sign; the domain has at most 8 digits, bus and device at most 2,
  // the function 1. Fails with Errc::invalid_argument naming the offending field.
  static Result<Bdf> parse(std::string_view text);

  // The canonical sysfs name, "0000:03:00.0" (the domain widens past 4 digits if needed).
  std::string to_string() const;

  // Compares field by field: domain, then bus, device and function.
  friend auto operator<=>(const Bdf&, const Bdf&) = default;
};

}  // namespace pcie
