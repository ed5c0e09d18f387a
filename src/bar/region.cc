#include "pcie/region.h"

#include <fmt/format.h>

namespace pcie {

Result<Width> width_from_bits(unsigned bits) {
  switch (bits) {
    case 8: return Width::bits8;
    case 16: return Width::bits16;
    case 32: return Width::bits32;
    case 64: return Width::bits64;
    default:
      return std::unexpected(make_error(Errc::invalid_argument, "parse width",
                                        fmt::format("{}", bits), "width must be 8, 16, 32 or 64 bits"));
  }
}

const char* to_string(MemoryType type) {
  switch (type) {
    case MemoryType::uncached: return "uncached";
    case MemoryType::write_combined: return "write-combined";
    case MemoryType::write_back: return "write-back";
  }
  return "unknown";
}

std::string WidthSet::to_string() const {
  std::string text;
  for (Width width : {Width::bits8, Width::bits16, Width::bits32, Width::bits64}) {
    if (!allows(width)) continue;
    if (!text.empty()) text += '/';
    text += std::to_string(bit_count(width));
  }
  return text.empty() ? "none" : text;
}

Error access_error(std::string_view operation, std::string_view region_name,
                   std::uint64_t region_size, WidthSet allowed, Width width, std::uint64_t offset) {
  const std::uint64_t bytes = byte_count(width);
  const std::string object = fmt::format("{} offset 0x{:x}", region_name, offset);
  if (!allowed.allows(width)) {
    return make_error(Errc::width_not_allowed, std::string(operation), object,
                      fmt::format("{}-bit access; this region accepts {}-bit", bit_count(width),
                                  allowed.to_string()));
  }
  if (offset % bytes != 0) {
    return make_error(Errc::misaligned, std::string(operation), object,
                      fmt::format("a {}-bit access must be {}-byte aligned", bit_count(width), bytes));
  }
  return make_error(Errc::out_of_range, std::string(operation), object,
                    fmt::format("{}-bit access past the end of the 0x{:x}-byte region", bit_count(width),
                                region_size));
}

Error removed_error(std::string_view operation, std::string_view region_name, std::uint64_t offset) {
  return make_error(Errc::device_removed, std::string(operation), fmt::format("{} offset 0x{:x}", region_name, offset),
                    "the device went away (hot unplug, surprise removal, or its memory decoding was turned off): "
                    "the removal guard replaced the mapping by one that reads all ones",
                    "release the device and open it again when it is back");
}

Result<void> check_span(std::string_view operation, std::string_view region_name,
                        std::uint64_t region_size, std::uint64_t offset, std::uint64_t length) {
  if (offset > region_size || length > region_size - offset) {
    return std::unexpected(make_error(
        Errc::out_of_range, std::string(operation),
        fmt::format("{} [0x{:x}, +0x{:x})", region_name, offset, length),
        fmt::format("range extends past the end of the 0x{:x}-byte region", region_size)));
  }
  return {};
}

Error Region::empty_error(std::string_view operation) const {
  return empty_object_error(std::string(operation), "region", "open the region (Device::open_bar) and move it in");
}

Result<void> Region::write64_halves(std::uint64_t offset, std::uint64_t value, HalfOrder order) {
  auto ok = check_access("write", name(), size(), allowed_, Width::bits32, offset);
  // The first check keeps offset below the size, so offset + 4 cannot wrap around.
  if (ok) ok = check_access("write", name(), size(), allowed_, Width::bits32, offset + 4);
  // An empty region has size 0, so every check fails for it: its test costs nothing on
  // the path of an access that passes.
  if (!ok) return std::unexpected(valid() ? ok.error() : empty_error("write"));
  const std::uint64_t low = value & 0xffff'ffffu;
  const std::uint64_t high = value >> 32;
  const bool low_first = order == HalfOrder::low_first;
  auto first = write(Width::bits32, low_first ? offset : offset + 4, low_first ? low : high);
  if (!first) return first;
  return write(Width::bits32, low_first ? offset + 4 : offset, low_first ? high : low);
}

Result<std::uint64_t> Region::read64_halves(std::uint64_t offset, HalfOrder order) const {
  auto ok = check_access("read", name(), size(), allowed_, Width::bits32, offset);
  if (ok) ok = check_access("read", name(), size(), allowed_, Width::bits32, offset + 4);
  if (!ok) return std::unexpected(valid() ? ok.error() : empty_error("read"));
  const bool low_first = order == HalfOrder::low_first;
  auto first = read(Width::bits32, low_first ? offset : offset + 4);
  if (!first) return first;
  auto second = read(Width::bits32, low_first ? offset + 4 : offset);
  if (!second) return second;
  const std::uint64_t low = low_first ? *first : *second;
  const std::uint64_t high = low_first ? *second : *first;
  return (high << 32) | low;
}

Result<std::uint64_t> Region::read(Width width, std::uint64_t offset) const {
  auto ok = check_access("read", name(), size(), allowed_, width, offset);
  if (!ok) return std::unexpected(valid() ? ok.error() : empty_error("read"));
  return read_checked(width, offset);
}

Result<void> Region::write(Width width, std::uint64_t offset, std::uint64_t value) {
  auto ok = check_access("write", name(), size(), allowed_, width, offset);
  if (!ok) return std::unexpected(valid() ? ok.error() : empty_error("write"));
  if (!writable_) {
    return std::unexpected(make_error(Errc::permission_denied, "write",
                                      fmt::format("{} offset 0x{:x}", name(), offset),
                                      "the region was opened read-only"));
  }
  if (width != Width::bits64 && (value >> bit_count(width)) != 0) {
    return std::unexpected(make_error(Errc::invalid_argument, "write",
                                      fmt::format("{} offset 0x{:x}", name(), offset),
                                      fmt::format("value 0x{:x} does not fit in {} bits", value,
                                                  bit_count(width))));
  }
  return write_checked(width, offset, value);
}

}  // namespace pcie
