// Completion by a counter the device writes to host memory: instead of marking each entry
// done, the device writes one word that counts (or indexes) what it has finished, and the
// driver takes the difference from the last value it saw. The shapes this covers:
//  - Xilinx XDMA poll mode (PG195, "Poll Mode" and the channel's Poll Mode Write Back
//    Address): a 32-bit word whose low 24 bits are the Completed Descriptor Count and whose
//    bit 31 reports an error (Xilinx's libxdma: WB_COUNT_MASK 0x00ffffff, WB_ERR_MASK
//    1 << 31); {.count_bits = 24, .error_mask = 1u << 31};
//  - virtio's used ring index (virtio 1.2, 2.7.8): a 16-bit counter that wraps at 2^16;
//    CompletionCounter<std::uint16_t>;
//  - a NIC's head write-back (the head index the device has reached, written to memory
//    instead of read from a register): count_bits = log2(ring depth) for a power-of-two
//    ring.
//
// The word is untrusted device data: it is read with an acquire load (what the device
// wrote before it is visible after it), the count wraps at its width, and an advance
// beyond what the driver has outstanding (a count that went backwards, jumped ahead or
// was corrupted) is refused as malformed without changing anything.
//
//   auto done = pcie::CompletionCounter<std::uint32_t>::create(
//                   writeback.bytes().first(4), {.count_bits = 24, .error_mask = 1u << 31}).value();
//   done.reset();                       // the device's count restarts at 0 (XDMA: at Run)
//   done.expect(descriptors);           // then start the engine
//   auto waited = done.wait(descriptors, {.timeout = 1s});  // io_error on the error bit
//
// Threads: one owner's; guard it when threads share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "pcie/error.h"
#include "pcie/wait.h"

namespace pcie {

// Where the count lies in the word, and which bits report an error.
struct CounterLayout {
  // The count is the word's low `count_bits` bits and wraps at 2^count_bits; 0: the whole
  // word.
  unsigned count_bits = 0;
  // Bits that, when set, mean the device reports an error (XDMA: bit 31); 0: none. They
  // must lie outside the count.
  std::uint64_t error_mask = 0;
};

namespace detail {
// The errors CompletionCounter returns (src/queue/completion_counter.cc).
Error counter_layout_error(unsigned word_bits, const CounterLayout& layout);
Error counter_range_error(std::uint64_t outstanding, std::uint64_t more, unsigned count_bits);
Error counter_error_bit(std::uint64_t word, std::uint64_t error_mask);
Error counter_advance_error(std::uint64_t last, std::uint64_t count, std::uint64_t advance, std::uint64_t outstanding);
Error counter_wait_error(std::uint64_t at_least, std::uint64_t outstanding);
// The checks on the word's memory: present, large enough, naturally aligned.
Result<void> check_counter_memory(std::span<std::byte> word, std::size_t word_size);
}  // namespace detail

// A completion counter of type `Word` (8 to 64 bits) in DMA memory the device writes: tracks
// what the driver has outstanding and turns each new count into a number of completions.
// Copyable; copies share the word but not the bookkeeping, so keep one in use.
template <DmaWord Word>
class CompletionCounter {
 public:
  // An empty counter: poll() and wait() fail with invalid_argument.
  CompletionCounter() = default;

  // A counter over the first sizeof(Word) bytes of `word` (DMA memory the device writes;
  // naturally aligned), which are zeroed, with nothing outstanding. Fails with
  // invalid_argument (no memory, too little, a count_bits beyond the word, error bits
  // outside the word or inside the count) or misaligned.
  static Result<CompletionCounter> create(std::span<std::byte> word, CounterLayout layout = {}) {
    if (auto ok = detail::check_counter_memory(word, sizeof(Word)); !ok) return std::unexpected(ok.error());
    constexpr unsigned kBits = 8 * sizeof(Word);
    const unsigned bits = layout.count_bits == 0 ? kBits : layout.count_bits;
    const std::uint64_t count_mask = bits >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << bits) - 1;
    const std::uint64_t word_mask = kBits >= 64 ? ~std::uint64_t{0} : (std::uint64_t{1} << kBits) - 1;
    if (bits > kBits || (layout.error_mask & ~word_mask) != 0 || (layout.error_mask & count_mask) != 0) {
      return std::unexpected(detail::counter_layout_error(kBits, layout));
    }
    CompletionCounter counter;
    counter.word_ = reinterpret_cast<Word*>(word.data());
    counter.bits_ = bits;
    counter.count_mask_ = count_mask;
    counter.error_mask_ = layout.error_mask;
    counter.reset();
    return counter;
  }

  // False for a default-constructed counter (not made by create()).
  bool valid() const { return word_ != nullptr; }
  // Completions the driver expects and has not yet seen.
  std::uint64_t outstanding() const { return outstanding_; }
  // The count last seen (what the next advance is measured from).
  std::uint64_t last_count() const { return last_; }
  // The width the count wraps at (the layout's count_bits, or the whole word's width).
  unsigned count_bits() const { return bits_; }

  // The driver has started `more` requests the device will count. out_of_range when the
  // outstanding total would reach 2^count_bits (a full wrap would then look like no
  // progress: wait for completions first); invalid_argument on an empty counter.
  Result<void> expect(std::uint64_t more) {
    if (!valid()) return std::unexpected(empty_object_error("expect completions", "CompletionCounter", "use create()"));
    if (more > count_mask_ - outstanding_) {
      return std::unexpected(detail::counter_range_error(outstanding_, more, bits_));
    }
    outstanding_ += more;
    return {};
  }

  // Reads the word (acquire) and returns how many completions it shows since the last
  // look, counting across the wrap at 2^count_bits; they are no longer outstanding. Fails,
  // changing nothing, with io_error when an error bit is set, malformed when the advance
  // is more than what is outstanding (a count that went backwards reads as a large
  // advance), invalid_argument on an empty counter.
  Result<std::uint64_t> poll() {
    if (!valid()) return std::unexpected(empty_object_error("poll completions", "CompletionCounter", "use create()"));
    const std::uint64_t value = load_acquire(word_);
    if ((value & error_mask_) != 0) return std::unexpected(detail::counter_error_bit(value, error_mask_));
    const std::uint64_t count = value & count_mask_;
    const std::uint64_t advance = (count - last_) & count_mask_;
    if (advance > outstanding_) {
      return std::unexpected(detail::counter_advance_error(last_, count, advance, outstanding_));
    }
    last_ = count;
    outstanding_ -= advance;
    return advance;
  }

  // Polls on `options`' schedule (pcie/wait.h) until at least `at_least` completions came
  // in this wait. Returns how many came (all consumed) and whether that reached
  // `at_least` (false: the timeout passed first). Fails with poll()'s errors (what came
  // before the failing look stays consumed), options.stop_if's, or invalid_argument when
  // `at_least` is more than is outstanding (it could only be met by a hostile count).
  Result<WaitResult<std::uint64_t>> wait(std::uint64_t at_least, const WaitOptions& options) {
    if (!valid())
      return std::unexpected(empty_object_error("wait for completions", "CompletionCounter", "use create()"));
    if (at_least > outstanding_) return std::unexpected(detail::counter_wait_error(at_least, outstanding_));
    std::uint64_t came = 0;
    std::optional<Error> failed;
    auto waited = wait_until(
        [&] {
          auto advance = poll();
          if (!advance) failed = advance.error();
          came += advance.value_or(0);
          return failed.has_value() || came >= at_least;
        },
        [](bool done) { return done; }, options);
    if (failed) return std::unexpected(*failed);
    if (!waited) return std::unexpected(waited.error());
    return WaitResult<std::uint64_t>{came, waited->matched};
  }

  // Starts over: stores `start` (its count bits) into the word, takes it as the last count
  // seen, and forgets what was outstanding. For when the device's count restarts (XDMA
  // resets its Completed Descriptor Count when Run is set) or after a reset; only while
  // the device cannot write the word. Does nothing on an empty counter.
  void reset(std::uint64_t start = 0) noexcept {
    if (!valid()) return;
    last_ = start & count_mask_;
    outstanding_ = 0;
    __atomic_store_n(word_, static_cast<Word>(last_), __ATOMIC_RELEASE);
  }

 private:
  Word* word_ = nullptr;
  unsigned bits_ = 0;
  std::uint64_t count_mask_ = 0;
  std::uint64_t error_mask_ = 0;
  std::uint64_t last_ = 0;
  std::uint64_t outstanding_ = 0;
};

}  // namespace pcie
