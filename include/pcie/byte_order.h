// Little-endian loads and stores of 1 to 8 bytes. PCI config space and I/O-port data are
// little-endian (PCI Local Bus Spec 3.0, 6.1) whatever the CPU's byte order. Callers check
// bounds first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

namespace pcie {

// The `count` bytes (1 to 8) at `offset` of `bytes` as a little-endian integer. Not
// bounds-checked: the caller ensures offset + count <= bytes.size().
inline std::uint64_t load_le(std::span<const std::uint8_t> bytes, std::size_t offset, std::size_t count) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < count; ++i) value |= static_cast<std::uint64_t>(bytes[offset + i]) << (8 * i);
  return value;
}

// Writes the low `count` bytes (1 to 8) of `value` at `offset` of `bytes`, little-endian.
// Not bounds-checked: the caller ensures offset + count <= bytes.size().
inline void store_le(std::span<std::uint8_t> bytes, std::size_t offset, std::size_t count, std::uint64_t value) {
  for (std::size_t i = 0; i < count; ++i) bytes[offset + i] = static_cast<std::uint8_t>(value >> (8 * i));
}

// The little-endian 16-bit value at `offset` (load_le of 2 bytes; not bounds-checked).
inline std::uint16_t load_le16(std::span<const std::uint8_t> bytes, std::size_t offset) {
  return static_cast<std::uint16_t>(load_le(bytes, offset, 2));
}

// The little-endian 32-bit value at `offset` (load_le of 4 bytes; not bounds-checked).
inline std::uint32_t load_le32(std::span<const std::uint8_t> bytes, std::size_t offset) {
  return static_cast<std::uint32_t>(load_le(bytes, offset, 4));
}

}  // namespace pcie
