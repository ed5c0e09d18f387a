#include "tools/pciectl/setpci.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <strings.h>
#include <vector>

#include "pcie/capabilities.h"

namespace pciectl {
namespace {

struct NamedRegister {
  const char* name;
  std::uint16_t offset;
  unsigned width_bytes;
};

// setpci's names for the header registers (PCI Local Bus 3.0, 6.1; type 1 headers,
// PCI-to-PCI Bridge 1.2, 3.2), with their widths.
constexpr NamedRegister kHeaderRegisters[] = {
    {"VENDOR_ID", 0x00, 2},          {"DEVICE_ID", 0x02, 2},          {"COMMAND", 0x04, 2},
    {"STATUS", 0x06, 2},             {"REVISION", 0x08, 1},           {"CLASS_PROG", 0x09, 1},
    {"CLASS_DEVICE", 0x0a, 2},       {"CACHE_LINE_SIZE", 0x0c, 1},    {"LATENCY_TIMER", 0x0d, 1},
    {"HEADER_TYPE", 0x0e, 1},        {"BIST", 0x0f, 1},               {"BASE_ADDRESS_0", 0x10, 4},
    {"BASE_ADDRESS_1", 0x14, 4},     {"BASE_ADDRESS_2", 0x18, 4},     {"BASE_ADDRESS_3", 0x1c, 4},
    {"BASE_ADDRESS_4", 0x20, 4},     {"BASE_ADDRESS_5", 0x24, 4},     {"CARDBUS_CIS", 0x28, 4},
    {"SUBSYSTEM_VENDOR_ID", 0x2c, 2}, {"SUBSYSTEM_ID", 0x2e, 2},      {"ROM_ADDRESS", 0x30, 4},
    {"CAPABILITY_LIST", 0x34, 1},    {"INTERRUPT_LINE", 0x3c, 1},     {"INTERRUPT_PIN", 0x3d, 1},
    {"MIN_GNT", 0x3e, 1},            {"MAX_LAT", 0x3f, 1},            {"PRIMARY_BUS", 0x18, 1},
    {"SECONDARY_BUS", 0x19, 1},      {"SUBORDINATE_BUS", 0x1a, 1},    {"SEC_LATENCY_TIMER", 0x1b, 1},
    {"IO_BASE", 0x1c, 1},            {"IO_LIMIT", 0x1d, 1},           {"SEC_STATUS", 0x1e, 2},
    {"MEMORY_BASE", 0x20, 2},        {"MEMORY_LIMIT", 0x22, 2},       {"PREF_MEMORY_BASE", 0x24, 2},
    {"PREF_MEMORY_LIMIT", 0x26, 2},  {"PREF_BASE_UPPER32", 0x28, 4},  {"PREF_LIMIT_UPPER32", 0x2c, 4},
    {"IO_BASE_UPPER16", 0x30, 2},    {"IO_LIMIT_UPPER16", 0x32, 2},   {"BRIDGE_ROM_ADDRESS", 0x38, 4},
    {"BRIDGE_CONTROL", 0x3e, 2},
};

struct NamedCapability {
  const char* name;
  std::uint16_t id;
};

// Capability IDs (PCI Code and ID Assignment 1.11, 2 and 3), named as setpci names them.
constexpr NamedCapability kCapabilities[] = {
    {"PM", 0x01},   {"AGP", 0x02},   {"VPD", 0x03},     {"SLOTID", 0x04}, {"MSI", 0x05},  {"CHSWP", 0x06},
    {"PCIX", 0x07}, {"HT", 0x08},    {"VNDR", 0x09},    {"DBG", 0x0a},    {"CCRC", 0x0b}, {"HOTPLUG", 0x0c},
    {"SSVID", 0x0d}, {"AGP3", 0x0e}, {"SECURE", 0x0f},  {"EXP", 0x10},    {"MSIX", 0x11}, {"SATA", 0x12},
    {"AF", 0x13},   {"EA", 0x14},    {"FPB", 0x15},
};

constexpr NamedCapability kExtendedCapabilities[] = {
    {"AER", 0x01},    {"VC", 0x02},      {"DSN", 0x03},    {"PB", 0x04},      {"RCLINK", 0x05}, {"RCILINK", 0x06},
    {"RCEC", 0x07},   {"MFVC", 0x08},    {"VC2", 0x09},    {"RBCB", 0x0a},    {"VNDR", 0x0b},   {"CAC", 0x0c},
    {"ACS", 0x0d},    {"ARI", 0x0e},     {"ATS", 0x0f},    {"SRIOV", 0x10},   {"MRIOV", 0x11},  {"MCAST", 0x12},
    {"PRI", 0x13},    {"REBAR", 0x15},   {"DPA", 0x16},    {"TPH", 0x17},     {"LTR", 0x18},    {"SECPCI", 0x19},
    {"PMUX", 0x1a},   {"PASID", 0x1b},   {"LNR", 0x1c},    {"DPC", 0x1d},     {"L1PM", 0x1e},   {"PTM", 0x1f},
    {"M_PCIE", 0x20}, {"FRS", 0x21},     {"RTR", 0x22},    {"DVSEC", 0x23},   {"VF_REBAR", 0x24}, {"DLNK", 0x25},
    {"16GT", 0x26},   {"LMR", 0x27},     {"HIER_ID", 0x28}, {"NPEM", 0x29},   {"32GT", 0x2a},   {"DOE", 0x2e},
    {"IDE", 0x30},
};

pcie::Error bad(std::string_view text, std::string reason, std::string hint = "") {
  if (hint.empty()) hint = "setpci syntax: REG[+OFFSET][.b|.w|.l][=VALUE[:MASK]], numbers in hex, e.g. CAP_EXP+0x10.w";
  return pcie::make_error(pcie::Errc::invalid_argument, "parse register", fmt::format("'{}'", text), std::move(reason),
                          std::move(hint));
}

bool equal_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && strncasecmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace

pcie::Result<std::uint32_t> parse_hex32(std::string_view text, std::string_view what) {
  std::string_view digits = text;
  if (digits.starts_with("0x") || digits.starts_with("0X")) digits.remove_prefix(2);
  std::uint32_t value = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), value, 16);
  if (digits.empty() || ec != std::errc{} || end != digits.data() + digits.size()) {
    return std::unexpected(pcie::make_error(pcie::Errc::invalid_argument, fmt::format("parse {}", what),
                                            fmt::format("'{}'", text),
                                            ec == std::errc::result_out_of_range ? "wider than 32 bits" : "not a hex number",
                                            "config offsets and values are hexadecimal, as in setpci (0x optional)"));
  }
  return value;
}

namespace {

// The parts of "BASE[+OFFSET][.b|.w|.l][=VALUE[:MASK]]", split but not yet parsed.
struct ExpressionParts {
  std::string_view base;
  std::optional<std::uint32_t> added;  // +OFFSET
  std::string_view assignment;         // VALUE[:MASK]; empty without '='
};

// Splits off "=VALUE[:MASK]", ".b/.w/.l" (into `expression`) and "+OFFSET", in that order.
pcie::Result<ExpressionParts> split_expression(std::string_view text, RegisterExpression& expression) {
  ExpressionParts parts;
  std::string_view rest = text;
  if (const auto equals = rest.find('='); equals != std::string_view::npos) {
    parts.assignment = rest.substr(equals + 1);
    rest = rest.substr(0, equals);
    if (parts.assignment.empty()) return std::unexpected(bad(text, "'=' without a value"));
  }
  if (const auto dot = rest.rfind('.'); dot != std::string_view::npos) {
    const std::string_view suffix = rest.substr(dot + 1);
    if (equal_ignoring_case(suffix, "b")) expression.width_bytes = 1;
    else if (equal_ignoring_case(suffix, "w")) expression.width_bytes = 2;
    else if (equal_ignoring_case(suffix, "l")) expression.width_bytes = 4;
    else return std::unexpected(bad(text, fmt::format("width '.{}' is not .b, .w or .l", suffix)));
    expression.width_from_suffix = true;
    rest = rest.substr(0, dot);
  }
  if (const auto plus = rest.find('+'); plus != std::string_view::npos) {
    auto offset = parse_hex32(rest.substr(plus + 1), "register offset");
    if (!offset) return std::unexpected(bad(text, "the offset after '+' is not a hex number"));
    parts.added = *offset;
    rest = rest.substr(0, plus);
  }
  if (rest.empty()) return std::unexpected(bad(text, "no register"));
  parts.base = rest;
  return parts;
}

// A capability base: PREFIX_NAME (from `table`) or PREFIXhh (setpci's numeric form, CAP10,
// ECAP0001). Nullopt when `base` does not start with `prefix`; else the result of setting
// the expression's base and capability id.
std::optional<pcie::Result<void>> capability_base(std::string_view text, std::string_view base,
                                                  std::string_view prefix, std::span<const NamedCapability> table,
                                                  RegisterExpression::Base kind, std::uint32_t max_id,
                                                  RegisterExpression& expression) {
  if (base.size() <= prefix.size() || !equal_ignoring_case(base.substr(0, prefix.size()), prefix)) return std::nullopt;
  std::string_view name = base.substr(prefix.size());
  expression.base = kind;
  if (name.front() == '_') {
    name.remove_prefix(1);
    for (const auto& capability : table) {
      if (equal_ignoring_case(name, capability.name)) {
        expression.capability_id = capability.id;
        return pcie::Result<void>{};
      }
    }
    return std::unexpected(bad(text, fmt::format("unknown capability '{}'", base)));
  }
  auto id = parse_hex32(name, "capability id");
  if (!id || *id > max_id) return std::unexpected(bad(text, fmt::format("unknown capability '{}'", base)));
  expression.capability_id = static_cast<std::uint16_t>(*id);
  return pcie::Result<void>{};
}

const NamedRegister* find_header_register(std::string_view name) {
  const NamedRegister* named = nullptr;
  for (const auto& reg : kHeaderRegisters) {
    if (equal_ignoring_case(name, reg.name)) named = &reg;
  }
  return named;
}

// A base that is a hex offset; too wide a hex number keeps parse_hex32's own error.
pcie::Result<std::uint32_t> numeric_base(std::string_view text, std::string_view base) {
  auto number = parse_hex32(base, "register offset");
  if (number) return *number;
  const std::string_view digits = base.starts_with("0x") || base.starts_with("0X") ? base.substr(2) : base;
  if (!digits.empty() && digits.find_first_not_of("0123456789abcdefABCDEF") == std::string_view::npos) {
    return std::unexpected(number.error());  // hex, but too wide
  }
  return std::unexpected(bad(text, fmt::format("'{}' is neither a hex offset nor a register name", base),
                             "a hex offset (0x optional), one of setpci's names (COMMAND, STATUS, BASE_ADDRESS_0, "
                             "...), CAP_name[+OFF] or ECAP_name[+OFF], e.g. CAP_EXP+0x10.w"));
}

// A header base (named register or hex offset) plus +OFFSET, into the expression's offset.
pcie::Result<void> resolve_header_base(std::string_view text, const ExpressionParts& parts,
                                       const NamedRegister* named, RegisterExpression& expression) {
  if (named != nullptr) {
    expression.offset = named->offset;
    if (expression.width_bytes == 0) expression.width_bytes = named->width_bytes;
  } else {
    auto number = numeric_base(text, parts.base);
    if (!number) return std::unexpected(number.error());
    expression.offset = *number;
  }
  if (parts.added) {
    if (*parts.added > 0xffffffffu - expression.offset) return std::unexpected(bad(text, "offset overflows"));
    expression.offset += *parts.added;
  }
  return {};
}

// The base: a capability, a named header register, or a number.
pcie::Result<void> resolve_base(std::string_view text, const ExpressionParts& parts, RegisterExpression& expression) {
  const NamedRegister* named = find_header_register(parts.base);
  std::optional<pcie::Result<void>> capability;
  if (named == nullptr) {
    capability = capability_base(text, parts.base, "ECAP", kExtendedCapabilities,
                                 RegisterExpression::Base::extended_capability, 0xffff, expression);
    if (!capability) {
      capability = capability_base(text, parts.base, "CAP", kCapabilities, RegisterExpression::Base::capability, 0xff,
                                   expression);
    }
  }
  if (!capability) return resolve_header_base(text, parts, named, expression);
  if (!*capability) return std::unexpected(capability->error());
  expression.offset = parts.added.value_or(0);
  return {};
}

// "VALUE[:MASK]" into the expression's value and mask.
pcie::Result<void> parse_assignment(std::string_view text, std::string_view assignment,
                                    RegisterExpression& expression) {
  std::string_view value_text = assignment;
  std::optional<std::string_view> mask_text;
  if (const auto colon = assignment.find(':'); colon != std::string_view::npos) {
    value_text = assignment.substr(0, colon);
    mask_text = assignment.substr(colon + 1);
  }
  if (value_text.find(',') != std::string_view::npos) {
    return std::unexpected(bad(text, "several values (setpci's VALUE,VALUE) are not supported",
                               "write one register per expression: REG.w=1 REG+2.w=2"));
  }
  auto value = parse_hex32(value_text, "value");
  if (!value) return std::unexpected(bad(text, fmt::format("value '{}' is not a hex number", value_text)));
  expression.value = *value;
  if (mask_text) {
    auto mask = parse_hex32(*mask_text, "mask");
    if (!mask) return std::unexpected(bad(text, fmt::format("mask '{}' is not a hex number", *mask_text)));
    expression.mask = *mask;
  }
  expression.has_mask = mask_text.has_value();
  return {};
}

}  // namespace

pcie::Result<RegisterExpression> parse_register_expression(std::string_view text) {
  RegisterExpression expression;
  expression.text = std::string(text);
  auto parts = split_expression(text, expression);
  if (!parts) return std::unexpected(parts.error());
  if (auto based = resolve_base(text, *parts, expression); !based) return std::unexpected(based.error());
  if (!parts->assignment.empty()) {
    if (auto assigned = parse_assignment(text, parts->assignment, expression); !assigned) {
      return std::unexpected(assigned.error());
    }
  }
  if (expression.width_bytes != 0) {  // else the caller settles it once -w is known
    if (auto checked = settle_width(expression, 0); !checked) return std::unexpected(checked.error());
  }
  return expression;
}

std::uint32_t write_mask(const RegisterExpression& expression) {
  const std::uint32_t all = expression.width_bytes >= 4 ? 0xffffffffu : (1u << (8 * expression.width_bytes)) - 1;
  return expression.has_mask ? expression.mask & all : all;
}

pcie::Result<void> settle_width(RegisterExpression& expression, unsigned width_bytes) {
  if (width_bytes != 0 && !expression.width_from_suffix) expression.width_bytes = width_bytes;
  if (expression.width_bytes == 0) {
    if (expression.value) {
      return std::unexpected(bad(expression.text, "a write needs a width",
                                 "add .b, .w or .l (as setpci requires), or pass -w 8|16|32"));
    }
    expression.width_bytes = 4;  // a read of a bare offset: 32 bits
  }
  if (!expression.value) return {};
  const std::uint32_t limit = expression.width_bytes == 4 ? 0xffffffffu : (1u << (8 * expression.width_bytes)) - 1;
  if (*expression.value > limit || (expression.has_mask && expression.mask > limit)) {
    return std::unexpected(
        bad(expression.text, fmt::format("value or mask does not fit in {} bits", 8 * expression.width_bytes)));
  }
  return {};
}

pcie::Result<std::uint32_t> resolve_register_offset(const RegisterExpression& expression,
                                                    std::span<const std::uint8_t> config) {
  std::uint32_t base = 0;
  if (expression.base != RegisterExpression::Base::header) {
    const bool extended = expression.base == RegisterExpression::Base::extended_capability;
    const pcie::CapabilityWalk walk =
        extended ? pcie::walk_extended_capabilities(config) : pcie::walk_standard_capabilities(config);
    const auto found = pcie::find_capability(
        walk.capabilities, extended ? pcie::Capability::Space::extended : pcie::Capability::Space::standard,
        expression.capability_id);
    if (!found) {
      const std::string name(extended ? pcie::extended_capability_name(expression.capability_id)
                                      : pcie::standard_capability_name(static_cast<std::uint8_t>(expression.capability_id)));
      return std::unexpected(pcie::make_error(
          pcie::Errc::not_found, "find capability", fmt::format("'{}'", expression.text),
          fmt::format("the device has no {} capability {:#x} ({}){}", extended ? "extended" : "standard",
                      expression.capability_id, name,
                      walk.problem ? "; the walk stopped early: " + walk.problem->reason : ""),
          config.size() <= 256 && extended ? "extended config space (from 0x100) needs root and a PCIe device" : ""));
    }
    base = found->offset;
  }
  // Bounds, alignment and privilege are ConfigSpace's to check, with its own messages.
  if (expression.offset > 0xffffffffu - base) {
    return std::unexpected(pcie::make_error(pcie::Errc::out_of_range, "resolve register", fmt::format("'{}'", expression.text),
                                            "the offset overflows"));
  }
  return base + expression.offset;
}

}  // namespace pciectl
