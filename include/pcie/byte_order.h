// Little-endian loads and stores of 1 to 8 bytes. PCI config space and I/O-port data are
// little-endian (PCI Local Bus Spec 3.0, 6.1) whatever the CPU's byte order. Callers check
// bounds first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace pcie {

inline std::uint64_t load_le(std::span<const std::uint8_t> bytes, std::size_t offset, std::size_t count) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < count; ++i) value |= static_cast<std::uint64_t>(bytes[offset + i]) << (8 * i);
  return value;
}

inline void store_le(std::span<std::uint8_t> bytes, std::size_t offset, std::size_t count, std::uint64_t value) {
  for (std::size_t i = 0; i < count; ++i) bytes[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
}

inline std::uint16_t load_le16(std::span<const std::uint8_t> bytes, std::size_t offset) {
  return static_cast<std::uint16_t>(load_le(bytes, offset, 2));
}

inline std::uint32_t load_le32(std::span<const std::uint8_t> bytes, std::size_t offset) {
  return static_cast<std::uint32_t>(load_le(bytes, offset, 4));
}

}  // namespace pcie
