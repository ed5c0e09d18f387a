// setpci's register syntax for `pciectl config`, so that commands copied from setpci work:
//
//   [NAME | CAP_NAME | CAPhh | ECAP_NAME | ECAPhhhh | HEX] [+HEX] [.b|.w|.l] [=HEX[:HEX]]
//
// e.g. COMMAND, STATUS.w, 0x40.l, CAP_EXP+0x10.w, ECAP_AER+4.l=0x1:0x1, 4.w=0x0006:0x0006.
// Numbers are hexadecimal with or without 0x (as in setpci). A named header register has
// its own width (COMMAND is 16 bits); a suffix overrides it. VALUE:MASK writes
// (old & ~MASK) | (VALUE & MASK). Capability offsets are resolved against the device's
// capability lists (PCI Local Bus 3.0, 6.7; PCIe Base 6.0, 7.6).
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "pcie/error.h"

namespace pciectl {

struct RegisterExpression {
  enum class Base { header, capability, extended_capability };
  Base base = Base::header;
  std::uint16_t capability_id = 0;  // for capability / extended_capability
  std::uint32_t offset = 0;         // from the start of config space, or of the capability
  unsigned width_bytes = 0;         // 1, 2 or 4; 0 when neither a name nor a suffix gave one
  bool width_from_suffix = false;   // .b/.w/.l given: wins over -w
  std::optional<std::uint32_t> value;
  bool has_mask = false;
  std::uint32_t mask = 0;           // with has_mask: which bits of `value` are written
  std::string text;                 // as given, for messages
};

// Parses one expression. Fails (invalid_argument) on unknown names, bad numbers, a width
// other than b/w/l, a value or mask wider than the width, or text after the expression.
pcie::Result<RegisterExpression> parse_register_expression(std::string_view text);

// Applies a -w width (bytes; 0: none) unless a suffix gave one, defaults a read of a bare
// offset to 32 bits, and checks that a write has a width and its value and mask fit it.
// parse_register_expression already did this when the expression carried a width.
pcie::Result<void> settle_width(RegisterExpression& expression, unsigned width_bytes);

// The bits a write changes: the mask, or the whole width.
std::uint32_t write_mask(const RegisterExpression& expression);

// The absolute config-space offset of `expression` for a device whose config space is
// `config` (a snapshot): capability bases are looked up in the capability lists. Fails
// (not_found) when the device lacks the capability, (out_of_range) when the offset
// overflows 32 bits; the caller's ConfigSpace checks bounds and alignment.
pcie::Result<std::uint32_t> resolve_register_offset(const RegisterExpression& expression,
                                                    std::span<const std::uint8_t> config);

// Hexadecimal with or without 0x, at most 32 bits: setpci's numbers.
pcie::Result<std::uint32_t> parse_hex32(std::string_view text, std::string_view what);

}  // namespace pciectl
