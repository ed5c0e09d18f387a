#include "pcie/completion_counter.h"

#include <fmt/format.h>

namespace pcie::detail {

namespace {
constexpr const char* kObject = "completion counter";
}

Error counter_layout_error(unsigned word_bits, const CounterLayout& layout) {
  return make_error(Errc::invalid_argument, "create", kObject,
                    fmt::format("a {}-bit word cannot hold a {}-bit count with error bits 0x{:x} (error bits must lie "
                                "in the word, outside the count)",
                                word_bits, layout.count_bits, layout.error_mask));
}

Error counter_range_error(std::uint64_t outstanding, std::uint64_t more, unsigned count_bits) {
  return make_error(Errc::out_of_range, "expect completions", kObject,
                    fmt::format("{} outstanding and {} more would not fit a {}-bit count: a full wrap would look like "
                                "no progress",
                                outstanding, more, count_bits),
                    "wait for completions before starting more requests");
}

Error counter_error_bit(std::uint64_t word, std::uint64_t error_mask) {
  return make_error(
      Errc::io_error, "poll completions", kObject,
      fmt::format("the device reports an error: word 0x{:x} has error bits 0x{:x} set", word, word & error_mask),
      "read the device's status registers for the cause, then stop and reset the queue");
}

Error counter_advance_error(std::uint64_t last, std::uint64_t count, std::uint64_t advance, std::uint64_t outstanding) {
  return make_error(Errc::malformed, "poll completions", kObject,
                    fmt::format("the count moved from {} to {}: {} completions, but only {} are outstanding", last,
                                count, advance, outstanding),
                    "the device's count cannot be trusted: stop and reset the queue");
}

Error counter_wait_error(std::uint64_t at_least, std::uint64_t outstanding) {
  return make_error(Errc::invalid_argument, "wait for completions", kObject,
                    fmt::format("waiting for {} completions with only {} outstanding", at_least, outstanding),
                    "call expect() for the requests started first");
}

Result<void> check_counter_memory(std::span<std::byte> word, std::size_t word_size) {
  if (word.data() == nullptr || word.size() < word_size) {
    return std::unexpected(make_error(Errc::invalid_argument, "create", kObject,
                                      fmt::format("{} bytes given for a {}-byte word", word.size(), word_size)));
  }
  if (reinterpret_cast<std::uintptr_t>(word.data()) % word_size != 0) {
    return std::unexpected(make_error(Errc::misaligned, "create", kObject,
                                      "the word is not naturally aligned, so the device's write may be seen torn",
                                      "place it at a multiple of its size in the DMA buffer"));
  }
  return {};
}

}  // namespace pcie::detail
