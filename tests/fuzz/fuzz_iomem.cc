// Fuzzes the parsers of what the kernel says about physical memory: /proc/iomem text
// (parse_iomem, then every lookup on the tree it built) and /proc/self/pagemap entries
// (contiguous_physical_address). Checks the invariants, not just the absence of crashes:
// every child lies inside its parent, a lookup's chain nests, a translated address covers
// its pages without overflowing.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string_view>
#include <vector>

#include "pcie/iomem.h"
#include "src/dma/pagemap.h"

namespace {

void check_nesting(const std::vector<pcie::IomemRange>& ranges, const pcie::IomemRange* parent, bool hidden) {
  for (const pcie::IomemRange& range : ranges) {
    if (range.last < range.start) std::abort();
    if (parent && !hidden && (range.start != 0 || range.last != 0) &&
        (range.start < parent->start || range.last > parent->last)) {
      std::abort();
    }
    (void)range.device();
    check_nesting(range.children, &range, hidden);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte picks the parser.
  const std::uint8_t selector = data[0];
  ++data;
  --size;
  if (selector % 2 == 0) {
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    auto tree = pcie::parse_iomem(text);
    if (!tree) return 0;
    check_nesting(tree->ranges, nullptr, tree->addresses_hidden);
    // Look up a few addresses taken from the input itself and the ends of the space.
    std::vector<std::uint64_t> addresses = {0, ~std::uint64_t{0}};
    if (size >= 8) {
      std::uint64_t value = 0;
      std::memcpy(&value, data + size - 8, 8);
      addresses.push_back(value);
    }
    if (!tree->ranges.empty()) {
      addresses.push_back(tree->ranges.back().start);
      addresses.push_back(tree->ranges.back().last);
    }
    for (const std::uint64_t address : addresses) {
      const auto chain = pcie::iomem_ranges_at(*tree, address);
      for (std::size_t i = 0; i < chain.size(); ++i) {
        if (address < chain[i]->start || address > chain[i]->last) std::abort();
      }
      (void)pcie::iomem_owner(*tree, address);
    }
  } else {
    std::vector<std::uint64_t> entries(size / 8);
    if (!entries.empty()) std::memcpy(entries.data(), data, entries.size() * 8);
    auto address = pcie::pagemap::contiguous_physical_address(entries, "fuzz");
    if (address) {
      if (entries.empty() || *address % 4096 != 0) std::abort();
      // The whole range must be addressable.
      if (*address > ~std::uint64_t{0} - (entries.size() * 4096 - 1)) std::abort();
    }
  }
  return 0;
}
