#include "src/pci/resource_file.h"

#include <fmt/format.h>

#include <charconv>

#include "src/sys/syscalls.h"

namespace pcie::sysfs {
namespace {

// include/linux/ioport.h
constexpr std::uint64_t kIoresourceIo = 0x100;
constexpr std::uint64_t kIoresourcePrefetch = 0x2000;
constexpr std::uint64_t kIoresourceMem64 = 0x100000;

// One "0x…" field, all of it hex digits that fit 64 bits.
bool parse_hex(std::string_view field, std::uint64_t& value) {
  if (!field.starts_with("0x") || field.size() == 2) return false;
  field.remove_prefix(2);
  const auto [end, error] = std::from_chars(field.data(), field.data() + field.size(), value, 16);
  return error == std::errc{} && end == field.data() + field.size();
}

bool parse_line(std::string_view line, ResourceLine& parsed) {
  std::uint64_t* fields[] = {&parsed.start, &parsed.end, &parsed.flags};
  for (std::size_t i = 0; i < 3; ++i) {
    const std::size_t space = line.find(' ');
    const bool last = i == 2;
    if (last != (space == std::string_view::npos)) return false;
    if (!parse_hex(line.substr(0, space), *fields[i])) return false;
    line = last ? std::string_view{} : line.substr(space + 1);
  }
  return true;
}

}  // namespace

Result<std::vector<ResourceLine>> parse_resource_file(std::string_view text, const std::string& path) {
  std::vector<ResourceLine> lines;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    const std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view{} : text.substr(newline + 1);
    ResourceLine parsed;
    if (lines.size() == kMaxResourceLines || !parse_line(line, parsed)) {
      return std::unexpected(make_error(
          Errc::malformed, "read", path,
          fmt::format("line {} is not 'start end flags' in hex: '{}'", lines.size() + 1, printable(line)),
          "a kernel's resource file has one '0x… 0x… 0x…' line per resource"));
    }
    lines.push_back(parsed);
  }
  return lines;
}

bool resource_assigned(std::uint64_t flags) {
  constexpr std::uint64_t kIoresourceDisabled = 0x10000000;
  constexpr std::uint64_t kIoresourceUnset = 0x20000000;
  return (flags & (kIoresourceDisabled | kIoresourceUnset)) == 0;
}

BarInfo bar_from_resource(unsigned index, const ResourceLine& line) {
  BarInfo bar;
  bar.index = index;
  bar.size = line.end > line.start ? line.end - line.start + 1 : 0;
  bar.space = (line.flags & kIoresourceIo) != 0 ? BarInfo::Space::io : BarInfo::Space::memory;
  bar.is_64bit = bar.space == BarInfo::Space::memory && (line.flags & kIoresourceMem64) != 0;
  bar.prefetchable = bar.space == BarInfo::Space::memory && (line.flags & kIoresourcePrefetch) != 0;
  bar.bus_address = line.start;
  bar.assigned = resource_assigned(line.flags);
  return bar;
}

Result<std::vector<BarInfo>> read_bars(const SysfsPaths& paths, const Bdf& bdf) {
  const std::string dir = paths.device_dir(bdf);
  if (!sys::path_exists(dir)) {
    return std::unexpected(make_error(Errc::not_found, "find device", bdf.to_string(),
                                      fmt::format("{} does not exist", dir), "list devices with 'pciectl ls'"));
  }
  const std::string path = dir + "/resource";
  auto text = sys::read_text_file(path, 64 * 1024);
  if (!text) return std::unexpected(text.error());
  auto lines = parse_resource_file(*text, path);
  if (!lines) return std::unexpected(lines.error());
  std::vector<BarInfo> bars;
  for (unsigned index = 0; index < 6 && index < lines->size(); ++index) {
    BarInfo bar = bar_from_resource(index, (*lines)[index]);
    if (bar.size != 0) bars.push_back(bar);
  }
  return bars;
}

}  // namespace pcie::sysfs
