#include "pcie/bdf.h"

#include <fmt/format.h>

#include <vector>

namespace pcie {
namespace {

constexpr std::uint32_t kMaxDevice = 31;   // 5-bit device number (PCI Local Bus 3.0, 3.2.2.3.1)
constexpr std::uint32_t kMaxFunction = 7;  // 3-bit function number

Error bdf_error(std::string_view text, std::string reason) {
  return make_error(Errc::invalid_argument, "parse BDF", fmt::format("'{}'", text),
                    std::move(reason), "expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:03:00.0");
}

// Parses 1..max_digits hex digits, nothing else.
Result<std::uint32_t> parse_hex_field(std::string_view whole, std::string_view field,
                                      std::string_view name, std::size_t max_digits) {
  if (field.empty()) return std::unexpected(bdf_error(whole, fmt::format("{} is empty", name)));
  // The characters first: "0é" is not hexadecimal, whatever its length in bytes.
  std::uint32_t value = 0;
  for (const char c : field) {
    std::uint32_t digit = 0;
    if (c >= '0' && c <= '9') {
      digit = static_cast<std::uint32_t>(c - '0');
    } else if (c >= 'a' && c <= 'f') {
      digit = static_cast<std::uint32_t>(c - 'a' + 10);
    } else if (c >= 'A' && c <= 'F') {
      digit = static_cast<std::uint32_t>(c - 'A' + 10);
    } else {
      return std::unexpected(
          bdf_error(whole, fmt::format("{} '{}' is not hexadecimal", name, field)));
    }
    value = value * 16 + digit;
  }
  if (field.size() > max_digits) {
    return std::unexpected(bdf_error(
        whole, fmt::format("{} '{}' has more than {} hex digits", name, field, max_digits)));
  }
  return value;
}

}  // namespace

Result<Bdf> Bdf::parse(std::string_view text) {
  if (text.empty()) return std::unexpected(bdf_error(text, "empty string"));
  for (const char c : text) {
    // Compared unsigned: as a (signed) char, every byte of a non-ASCII character is below
    // ' ' and would be reported as whitespace. Error::message() escapes what is printed.
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= ' ' || byte == 0x7f) {
      return std::unexpected(bdf_error(text, "contains whitespace or a control character"));
    }
  }
  const auto dot = text.rfind('.');
  if (dot == std::string_view::npos) {
    return std::unexpected(bdf_error(text, "missing '.' before the function number"));
  }
  const std::string_view function_text = text.substr(dot + 1);
  const std::string_view head = text.substr(0, dot);

  std::vector<std::string_view> parts;
  std::size_t start = 0;
  for (std::size_t i = 0; i <= head.size(); ++i) {
    if (i == head.size() || head[i] == ':') {
      parts.push_back(head.substr(start, i - start));
      start = i + 1;
    }
  }
  if (parts.size() != 2 && parts.size() != 3) {
    return std::unexpected(
        bdf_error(text, "expected 'bus:device' or 'domain:bus:device' before the '.'"));
  }

  Bdf bdf;
  std::size_t next = 0;
  if (parts.size() == 3) {
    auto domain = parse_hex_field(text, parts[next++], "domain", 8);
    if (!domain) return std::unexpected(domain.error());
    bdf.domain = *domain;
  }
  auto bus = parse_hex_field(text, parts[next++], "bus", 2);
  if (!bus) return std::unexpected(bus.error());
  auto device = parse_hex_field(text, parts[next++], "device", 2);
  if (!device) return std::unexpected(device.error());
  if (*device > kMaxDevice) {
    return std::unexpected(
        bdf_error(text, fmt::format("device 0x{:x} is out of range (max 0x1f)", *device)));
  }
  auto function = parse_hex_field(text, function_text, "function", 1);
  if (!function) return std::unexpected(function.error());
  if (*function > kMaxFunction) {
    return std::unexpected(
        bdf_error(text, fmt::format("function {} is out of range (max 7)", *function)));
  }
  bdf.bus = static_cast<std::uint8_t>(*bus);
  bdf.device = static_cast<std::uint8_t>(*device);
  bdf.function = static_cast<std::uint8_t>(*function);
  return bdf;
}

std::string Bdf::to_string() const {
  return fmt::format("{:04x}:{:02x}:{:02x}.{:x}", domain, bus, device, function);
}

}  // namespace pcie
