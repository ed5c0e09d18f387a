// /proc/iomem: parsing the kernel's resource tree (kernel/resource.c, r_show).
#include "pcie/iomem.h"

#include <fmt/format.h>

#include "src/sys/syscalls.h"

namespace pcie {

namespace {

constexpr std::size_t kMaxLines = 65536;
constexpr std::size_t kMaxDepth = 16;

std::optional<std::uint64_t> parse_hex(std::string_view text) {
  if (text.empty() || text.size() > 16) return std::nullopt;
  std::uint64_t value = 0;
  for (const char c : text) {
    unsigned digit = 0;
    if (c >= '0' && c <= '9') digit = static_cast<unsigned>(c - '0');
    else if (c >= 'a' && c <= 'f') digit = static_cast<unsigned>(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') digit = static_cast<unsigned>(c - 'A' + 10);
    else return std::nullopt;
    value = value << 4 | digit;
  }
  return value;
}

}  // namespace

std::optional<Bdf> IomemRange::device() const {
  // pci_name(): "DDDD:BB:DD.F"; anything else ("PCI Bus 0000:00") is not a device.
  if (name.size() != 12) return std::nullopt;
  auto bdf = Bdf::parse(name);
  if (!bdf) return std::nullopt;
  return *bdf;
}

Result<IomemTree> parse_iomem(std::string_view text) {
  IomemTree tree;
  bool any_address = false;
  std::size_t lines = 0;
  // The chain of open ranges by depth: path[d] is the last range seen at depth d.
  std::vector<IomemRange*> path;
  while (!text.empty()) {
    const std::size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text = newline == std::string_view::npos ? std::string_view() : text.substr(newline + 1);
    if (line.empty()) continue;
    if (++lines > kMaxLines) {
      return std::unexpected(make_error(Errc::malformed, "parse iomem", "", fmt::format("more than {} lines", kMaxLines)));
    }
    const auto bad = [&](std::string_view why) {
      return std::unexpected(make_error(Errc::malformed, "parse iomem", fmt::format("line {}", lines),
                                        fmt::format("{}: \"{}\"", why, printable(line.substr(0, 120)))));
    };
    std::size_t indent = 0;
    while (indent < line.size() && line[indent] == ' ') ++indent;
    if (indent % 2 != 0) return bad("odd indentation");
    const std::size_t depth = indent / 2;
    if (depth >= kMaxDepth) return bad("nested too deep");
    if (depth > path.size()) return bad("indented past its parent");
    line.remove_prefix(indent);
    const std::size_t dash = line.find('-');
    const std::size_t colon = line.find(" : ");
    if (dash == std::string_view::npos || colon == std::string_view::npos || dash > colon) return bad("not START-END : NAME");
    const auto start = parse_hex(line.substr(0, dash));
    const auto last = parse_hex(line.substr(dash + 1, colon - dash - 1));
    if (!start || !last) return bad("addresses are not hex");
    if (*last < *start) return bad("ends before it starts");
    IomemRange range{*start, *last, std::string(line.substr(colon + 3)), {}};
    if (*start != 0 || *last != 0) any_address = true;
    path.resize(depth);
    std::vector<IomemRange>& siblings = depth == 0 ? tree.ranges : path.back()->children;
    if (depth > 0 && (*start != 0 || *last != 0) && (*start < path.back()->start || *last > path.back()->last)) {
      return bad("lies outside its parent");
    }
    siblings.push_back(std::move(range));
    path.push_back(&siblings.back());
  }
  tree.addresses_hidden = lines > 0 && !any_address;
  return tree;
}

Result<IomemTree> read_iomem(const std::string& path) {
  auto text = sys::read_text_file(path, 8 << 20);
  if (!text) return std::unexpected(text.error());
  return parse_iomem(*text);
}

std::vector<const IomemRange*> iomem_ranges_at(const IomemTree& tree, std::uint64_t address) {
  std::vector<const IomemRange*> chain;
  if (tree.addresses_hidden) return chain;
  const std::vector<IomemRange>* level = &tree.ranges;
  for (;;) {
    const IomemRange* found = nullptr;
    for (const IomemRange& range : *level) {
      if (range.start <= address && address <= range.last) {
        found = &range;
        break;
      }
    }
    if (!found) return chain;
    chain.push_back(found);
    level = &found->children;
  }
}

IomemOwner iomem_owner(const IomemTree& tree, std::uint64_t address) {
  IomemOwner owner;
  if (tree.addresses_hidden) {
    owner.description = "unknown (/proc/iomem shows addresses only to root)";
    return owner;
  }
  const auto chain = iomem_ranges_at(tree, address);
  if (chain.empty()) {
    owner.description = "no range of the kernel's resource tree";
    return owner;
  }
  for (std::size_t i = 0; i < chain.size(); ++i) {
    if (chain[i]->name == "System RAM") owner.ram = true;
    if (auto device = chain[i]->device()) {
      owner.device = *device;
      // What requested the device's range: its child (request_mem_region names it after
      // the driver), when there is one at this address.
      if (i + 1 < chain.size()) owner.claimed = chain[i + 1]->name;
    }
  }
  if (owner.device) {
    owner.description = owner.device->to_string() +
                        (owner.claimed ? " (claimed by " + *owner.claimed + ")" : " (not claimed by a driver)");
  } else {
    owner.description = chain.back()->name;
    for (std::size_t i = chain.size() - 1; i-- > 0;) owner.description += " in " + chain[i]->name;
  }
  return owner;
}

}  // namespace pcie
