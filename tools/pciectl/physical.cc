#include "tools/pciectl/physical.h"

#include <fmt/format.h>

#include <algorithm>

#include "pcie/iomem.h"
#include "pcie/physical_window.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"

namespace pciectl {

int dump_region(const pcie::Region& region, pcie::Width width, std::uint64_t start, const std::string& length_text,
                std::uint64_t label_base) {
  const std::uint64_t size = region.size();
  std::uint64_t length = 0;
  if (length_text.empty()) {
    length = start < size ? std::min<std::uint64_t>(256, size - start) : 0;
  } else {
    auto parsed = parse_number(length_text, "length");
    if (!parsed) return fail(parsed.error());
    length = *parsed;
  }
  auto span = pcie::check_span("dump", region.name(), size, start, length);
  if (!span) return fail(span.error());
  const std::uint64_t step = pcie::byte_count(width);
  if (start % step != 0 || length % step != 0) {
    return fail(pcie::make_error(pcie::Errc::misaligned, "dump", region.name(),
                                 fmt::format("offset and length must be multiples of {} bytes", step)));
  }
  constexpr std::uint64_t kBytesPerLine = 16;
  for (std::uint64_t line = 0; line < length; line += kBytesPerLine) {
    std::string text = fmt::format("{:08x}:", label_base + start + line);
    for (std::uint64_t at = line; at < std::min(line + kBytesPerLine, length); at += step) {
      auto value = region.read(width, start + at);
      if (!value) return fail(value.error());
      text += fmt::format(" {:0{}x}", *value, step * 2);
    }
    fmt::print("{}\n", text);
  }
  return kSuccess;
}

namespace {

void print_ranges(const std::vector<pcie::IomemRange>& ranges, int depth) {
  for (const pcie::IomemRange& range : ranges) {
    std::string line = fmt::format("{:{}}{:08x}-{:08x} : {}", "", depth * 2, range.start, range.last,
                                   pcie::printable(range.name));
    if (range.device()) {
      line += range.children.empty() ? "  [device, not claimed]"
                                     : fmt::format("  [device, claimed by {}]", pcie::printable(range.children[0].name));
    }
    fmt::print("{}\n", line);
    print_ranges(range.children, depth + 1);
  }
}

}  // namespace

int run_iomem(const std::string& iomem_path, const std::string& address_text) {
  auto tree = pcie::read_iomem(iomem_path);
  if (!tree) return fail(tree.error());
  if (address_text.empty()) {
    if (tree->addresses_hidden) {
      fmt::print(stderr, "pciectl: {} shows every address as 0 to users other than root: run as root to see them\n",
                 iomem_path);
    }
    print_ranges(tree->ranges, 0);
    return kSuccess;
  }
  auto address = parse_number(address_text, "address");
  if (!address) return fail(address.error());
  if (tree->addresses_hidden) {
    return fail(pcie::make_error(pcie::Errc::permission_denied, "look up", address_text,
                                 "the kernel hides addresses in " + iomem_path + " from this user", "run as root"));
  }
  const auto chain = pcie::iomem_ranges_at(*tree, *address);
  for (std::size_t i = 0; i < chain.size(); ++i) {
    fmt::print("{:{}}{:08x}-{:08x} : {}\n", "", i * 2, chain[i]->start, chain[i]->last, pcie::printable(chain[i]->name));
  }
  fmt::print("owner: {}\n", pcie::printable(pcie::iomem_owner(*tree, *address).description));
  return kSuccess;
}

int run_mem(const MemOptions& options) {
  auto width = pcie::width_from_bits(options.width_bits);
  if (!width) return fail(width.error());
  auto address = parse_number(options.address, "address");
  if (!address) return fail(address.error());
  const bool writing = options.action == "write";
  // The window starts at the address, so its own alignment check cannot see this one.
  if (*address % pcie::byte_count(*width) != 0) {
    return fail(pcie::make_error(pcie::Errc::misaligned, "access physical memory", options.address,
                                 fmt::format("not aligned to the {}-byte access", pcie::byte_count(*width))));
  }
  std::uint64_t length = pcie::byte_count(*width);
  if (options.action == "dump") {
    length = 256;
    if (!options.length.empty()) {
      auto parsed = parse_number(options.length, "length");
      if (!parsed) return fail(parsed.error());
      length = *parsed;
    }
  }
  std::uint64_t value = 0;
  if (writing) {
    auto parsed = parse_number(options.value, "value");
    if (!parsed) return fail(parsed.error());
    value = *parsed;
  }
  auto window = pcie::PhysicalWindow::map(*address, length,
                                          {.writable = writing, .dev_mem = options.dev_mem, .iomem = options.iomem});
  if (!window) return fail(window.error());
  if (options.action == "dump") return dump_region(*window, *width, 0, std::to_string(length), *address);
  if (writing) {
    auto written = window->write(*width, 0, value);
    return written ? kSuccess : fail(written.error());
  }
  auto read = window->read(*width, 0);
  if (!read) return fail(read.error());
  fmt::print("0x{:0{}x}\n", *read, pcie::byte_count(*width) * 2);
  return kSuccess;
}

}  // namespace pciectl
