#include "pcie/iova.h"

#include <fmt/format.h>

#include <algorithm>
#include <bit>

namespace pcie {

IovaAllocator::IovaAllocator(const std::vector<IovaRange>& ranges, std::uint64_t reserved_low) {
  for (const IovaRange& range : ranges) {
    if (range.last < range.start || range.last < reserved_low) continue;
    usable_.push_back(IovaRange{std::max(range.start, reserved_low), range.last});
  }
  std::sort(usable_.begin(), usable_.end(), [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
  for (const IovaRange& range : usable_) add_free(range.start, range.last);
}

Result<Iova> IovaAllocator::allocate(std::uint64_t size, std::uint64_t alignment, std::uint64_t limit) {
  if (size == 0 || alignment == 0 || !std::has_single_bit(alignment)) {
    return std::unexpected(make_error(Errc::invalid_argument, "allocate IOVA",
                                      fmt::format("{} bytes aligned to {}", size, alignment),
                                      "the size must be non-zero and the alignment a power of two"));
  }
  for (auto it = free_.begin(); it != free_.end() && it->first <= limit; ++it) {
    const auto [start, last] = *it;
    // Round up without overflow: an aligned start past the block's end fails the fit test.
    const std::uint64_t aligned = start + ((alignment - start % alignment) % alignment);
    if (aligned < start || aligned > last) continue;
    const std::uint64_t room_to = std::min(last, limit);
    if (aligned > room_to || size - 1 > room_to - aligned) continue;
    const std::uint64_t end = aligned + size - 1;
    free_.erase(it);
    if (start < aligned) free_[start] = aligned - 1;
    if (end < last) free_[end + 1] = last;
    return Iova{aligned};
  }
  return std::unexpected(make_error(Errc::out_of_range, "allocate IOVA",
                                    fmt::format("{} bytes aligned to {:#x}", size, alignment),
                                    fmt::format("no free IOVA space at or below {:#x}", limit),
                                    "free DMA buffers, or raise the device's DMA mask if it can address more"));
}

namespace {
// Calls add(first, last) for each part of [start, last] that lies inside one of `ranges`.
template <class Add>
void intersect(const std::vector<IovaRange>& ranges, std::uint64_t start, std::uint64_t last, Add add) {
  for (const IovaRange& range : ranges) {
    if (range.last < range.start || range.last < start || range.start > last) continue;
    add(std::max(start, range.start), std::min(last, range.last));
  }
}
}  // namespace

void IovaAllocator::release(Iova iova, std::uint64_t size) {
  if (size == 0) return;
  const std::uint64_t start = iova.value;
  const std::uint64_t last = size - 1 > ~std::uint64_t{0} - start ? ~std::uint64_t{0} : start + (size - 1);
  // Only what is still usable comes back: a range reserved since it was handed out (another
  // group attached to the context: its MSI window, RMRRs) stays out of the free list.
  intersect(usable_, start, last, [this](std::uint64_t a, std::uint64_t b) { add_free(a, b); });
}

void IovaAllocator::add_free(std::uint64_t start, std::uint64_t last) {
  // Merge with the free block after, then the one before.
  if (auto next = free_.upper_bound(start); next != free_.end() && last != ~std::uint64_t{0} && next->first == last + 1) {
    last = next->second;
    free_.erase(next);
  }
  if (auto after = free_.lower_bound(start); after != free_.begin()) {
    auto previous = std::prev(after);
    if (previous->second + 1 == start) {
      start = previous->first;
      free_.erase(previous);
    }
  }
  free_[start] = last;
}

void IovaAllocator::restrict_to(const std::vector<IovaRange>& ranges) {
  std::map<std::uint64_t, std::uint64_t> kept;
  for (const auto& [start, last] : free_) {
    intersect(ranges, start, last, [&](std::uint64_t a, std::uint64_t b) { kept[a] = b; });
  }
  free_ = std::move(kept);
  std::vector<IovaRange> usable;
  for (const IovaRange& range : usable_) {
    intersect(ranges, range.start, range.last, [&](std::uint64_t a, std::uint64_t b) { usable.push_back(IovaRange{a, b}); });
  }
  std::sort(usable.begin(), usable.end(), [](const IovaRange& a, const IovaRange& b) { return a.start < b.start; });
  usable_ = std::move(usable);
}

std::uint64_t IovaAllocator::free_bytes() const {
  std::uint64_t total = 0;
  for (const auto& [start, last] : free_) total += last - start + 1;
  return total;
}

}  // namespace pcie
