#include "examples/dma-engine/xdma.h"

#include <array>
#include <utility>

namespace examples::xdma {

namespace {
// PG195's H2C/C2H Channel Status bits; bits 9-18 name different errors per direction.
constexpr std::array<std::pair<std::uint32_t, const char*>, 7> kLow = {{
    {1u << 0, "busy"},
    {1u << 1, "descriptor stopped"},
    {1u << 2, "descriptor completed"},
    {1u << 3, "alignment mismatch"},
    {1u << 4, "magic stopped"},
    {1u << 5, "invalid length"},
    {1u << 6, "idle stopped"},
}};
constexpr std::array<std::pair<std::uint32_t, const char*>, 5> kDescriptorErrors = {{
    {1u << 19, "descriptor error: unsupported request"},
    {1u << 20, "descriptor error: completer abort"},
    {1u << 21, "descriptor error: parity"},
    {1u << 22, "descriptor error: poisoned"},
    {1u << 23, "descriptor error: unexpected completion"},
}};
constexpr std::array<std::pair<std::uint32_t, const char*>, 7> kH2c = {{
    {1u << 9, "read error: unsupported request"},
    {1u << 10, "read error: completer abort"},
    {1u << 11, "read error: parity"},
    {1u << 12, "read error: poisoned"},
    {1u << 13, "read error: unexpected completion"},
    {1u << 14, "write error: AXI decode"},
    {1u << 15, "write error: AXI slave"},
}};
constexpr std::array<std::pair<std::uint32_t, const char*>, 2> kC2h = {{
    {1u << 9, "read error: AXI decode"},
    {1u << 10, "read error: AXI slave"},
}};
}  // namespace

std::string describe_status(std::uint32_t status, Direction direction) {
  std::string words;
  auto add = [&](const auto& table) {
    for (const auto& [bit, name] : table) {
      if (!(status & bit)) continue;
      if (!words.empty()) words += ", ";
      words += name;
    }
  };
  add(kLow);
  if (direction == Direction::h2c) {
    add(kH2c);
  } else {
    add(kC2h);
  }
  add(kDescriptorErrors);
  return words.empty() ? "idle" : words;
}

}  // namespace examples::xdma
