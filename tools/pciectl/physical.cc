#include "tools/pciectl/physical.h"

#include <fmt/format.h>

#include <algorithm>
#include <nlohmann/json.hpp>

#include "pcie/iomem.h"
#include "pcie/physical_window.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"

namespace pciectl {

namespace {

// --length, or 256 bytes (fewer at the region's end).
pcie::Result<std::uint64_t> dump_length(std::uint64_t size, std::uint64_t start, const std::string& length_text) {
  if (length_text.empty()) return start < size ? std::min<std::uint64_t>(256, size - start) : 0;
  return parse_number(length_text, "length");
}

void print_json(const nlohmann::ordered_json& out) {
  print_json_document(out);
}

// --json: every register read, by address.
int dump_json(const pcie::Region& region, pcie::Width width, std::uint64_t start, std::uint64_t length,
              std::uint64_t label_base) {
  const std::uint64_t step = pcie::byte_count(width);
  nlohmann::ordered_json values = nlohmann::ordered_json::array();
  for (std::uint64_t at = 0; at < length; at += step) {
    auto value = region.read(width, start + at);
    if (!value) return fail(value.error());
    values.push_back({{"offset", label_base + start + at}, {"value", *value}});
  }
  print_json({{"region", region.name()}, {"width", step * 8}, {"values", values}});
  return kSuccess;
}

int dump_text(const pcie::Region& region, pcie::Width width, std::uint64_t start, std::uint64_t length,
              std::uint64_t label_base) {
  constexpr std::uint64_t kBytesPerLine = 16;
  const std::uint64_t step = pcie::byte_count(width);
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

}  // namespace

int dump_region(const pcie::Region& region, pcie::Width width, std::uint64_t start, const std::string& length_text,
                std::uint64_t label_base) {
  auto length = dump_length(region.size(), start, length_text);
  if (!length) return fail(length.error());
  auto span = pcie::check_span("dump", region.name(), region.size(), start, *length);
  if (!span) return fail(span.error());
  const std::uint64_t step = pcie::byte_count(width);
  if (start % step != 0 || *length % step != 0) {
    return fail(pcie::make_error(pcie::Errc::misaligned, "dump", region.name(),
                                 fmt::format("offset and length must be multiples of {} bytes", step)));
  }
  if (json_errors()) return dump_json(region, width, start, *length, label_base);
  return dump_text(region, width, start, *length, label_base);
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

nlohmann::ordered_json ranges_json(const std::vector<pcie::IomemRange>& ranges) {
  nlohmann::ordered_json list = nlohmann::ordered_json::array();
  for (const pcie::IomemRange& range : ranges) {
    nlohmann::ordered_json entry = {{"start", range.start}, {"last", range.last}, {"name", range.name}};
    if (range.device()) entry["device"] = range.device()->to_string();
    if (!range.children.empty()) entry["children"] = ranges_json(range.children);
    list.push_back(entry);
  }
  return list;
}

// The whole map: JSON, or the indented tree (with a note when the kernel hides addresses).
int print_iomem_map(const pcie::IomemTree& tree, const std::string& iomem_path) {
  if (json_errors()) {
    print_json({{"addresses_hidden", tree.addresses_hidden}, {"ranges", ranges_json(tree.ranges)}});
    return kSuccess;
  }
  if (tree.addresses_hidden) {
    fmt::print(stderr, "pciectl: {} shows every address as 0 to users other than root: run as root to see them\n",
               iomem_path);
  }
  print_ranges(tree.ranges, 0);
  return kSuccess;
}

// The ranges holding `address`, outermost first, and its owner.
void print_address_owner(const pcie::IomemTree& tree, std::uint64_t address) {
  const auto chain = pcie::iomem_ranges_at(tree, address);
  if (json_errors()) {
    nlohmann::ordered_json ranges = nlohmann::ordered_json::array();
    for (const pcie::IomemRange* range : chain) {
      ranges.push_back({{"start", range->start}, {"last", range->last}, {"name", range->name}});
    }
    const pcie::IomemOwner owner = pcie::iomem_owner(tree, address);
    nlohmann::ordered_json out = {{"address", address}, {"ranges", ranges}, {"owner", owner.description},
                                  {"ram", owner.ram}};
    out["device"] = owner.device ? nlohmann::ordered_json(owner.device->to_string()) : nullptr;
    out["claimed_by"] = owner.claimed ? nlohmann::ordered_json(*owner.claimed) : nullptr;
    print_json(out);
    return;
  }
  for (std::size_t i = 0; i < chain.size(); ++i) {
    fmt::print("{:{}}{:08x}-{:08x} : {}\n", "", i * 2, chain[i]->start, chain[i]->last, pcie::printable(chain[i]->name));
  }
  fmt::print("owner: {}\n", pcie::printable(pcie::iomem_owner(tree, address).description));
}

}  // namespace

int run_iomem(const std::string& iomem_path, const std::string& address_text) {
  auto tree = pcie::read_iomem(iomem_path);
  if (!tree) return fail(tree.error());
  if (address_text.empty()) return print_iomem_map(*tree, iomem_path);
  auto address = parse_number(address_text, "address");
  if (!address) return fail(address.error());
  if (tree->addresses_hidden) {
    return fail(pcie::make_error(pcie::Errc::permission_denied, "look up", address_text,
                                 "the kernel hides addresses in " + iomem_path + " from this user", "run as root"));
  }
  print_address_owner(*tree, *address);
  return kSuccess;
}

namespace {

// A mem command's parsed arguments.
struct MemAccess {
  pcie::Width width = pcie::Width::bits32;
  std::uint64_t address = 0;
  std::uint64_t length = 0;  // the window: one access, or the dump's length
  std::uint64_t value = 0;   // for write
};

pcie::Result<MemAccess> parse_mem_access(const MemOptions& options) {
  MemAccess access;
  auto width = pcie::width_from_bits(options.width_bits);
  if (!width) return std::unexpected(width.error());
  access.width = *width;
  auto address = parse_number(options.address, "address");
  if (!address) return std::unexpected(address.error());
  access.address = *address;
  // The window starts at the address, so its own alignment check cannot see this one.
  if (access.address % pcie::byte_count(access.width) != 0) {
    return std::unexpected(pcie::make_error(pcie::Errc::misaligned, "access physical memory", options.address,
                                            fmt::format("not aligned to the {}-byte access",
                                                        pcie::byte_count(access.width))));
  }
  access.length = pcie::byte_count(access.width);
  if (options.action == "dump") {
    auto length = options.length.empty() ? pcie::Result<std::uint64_t>(256) : parse_number(options.length, "length");
    if (!length) return std::unexpected(length.error());
    access.length = *length;
  }
  if (options.action == "write") {
    auto value = parse_number(options.value, "value");
    if (!value) return std::unexpected(value.error());
    access.value = *value;
  }
  return access;
}

}  // namespace

int run_mem(const MemOptions& options) {
  auto access = parse_mem_access(options);
  if (!access) return fail(access.error());
  const bool writing = options.action == "write";
  const std::uint64_t bits = pcie::byte_count(access->width) * 8;
  auto window = pcie::PhysicalWindow::map(access->address, access->length,
                                          {.writable = writing, .dev_mem = options.dev_mem, .iomem = options.iomem});
  if (!window) return fail(window.error());
  if (options.action == "dump") {
    return dump_region(*window, access->width, 0, std::to_string(access->length), access->address);
  }
  if (writing) {
    auto written = window->write(access->width, 0, access->value);
    if (!written) return fail(written.error());
    if (json_errors()) print_json({{"address", access->address}, {"width", bits}, {"written", access->value}});
    return kSuccess;
  }
  auto read = window->read(access->width, 0);
  if (!read) return fail(read.error());
  if (json_errors()) {
    print_json({{"address", access->address}, {"width", bits}, {"value", *read}});
    return kSuccess;
  }
  fmt::print("0x{:0{}x}\n", *read, pcie::byte_count(access->width) * 2);
  return kSuccess;
}

}  // namespace pciectl
