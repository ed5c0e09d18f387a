// Bounded waits for a device: on a word the device writes by DMA (a completion flag, a
// status word in host memory), and, through MmioView::poll (pcie/mmio.h), on a register.
//
// A wait spins first (completions that come within microseconds are seen at once, as in
// SPDK's and DPDK's polled drivers), then sleeps between tries with an exponential backoff,
// so that a wait bounded by a controller timeout of seconds (NVMe CAP.TO is in units of
// 500 ms) does not burn a core for all of it. An optional check runs between tries and ends
// the wait early with its error: "the controller reports a fatal status" need not wait for
// the timeout.
#pragma once

#include <algorithm>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <functional>
#include <thread>
#include <type_traits>

#include "pcie/error.h"

namespace pcie {

// The CPU's spin-wait hint (x86 PAUSE, arm64 YIELD): lets a sibling hyperthread run and
// avoids a memory-order machine clear when the awaited store lands.
inline void cpu_relax() noexcept {
#if defined(__x86_64__)
  asm volatile("pause");
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How a bounded wait spends its time. The defaults suit a completion expected within
// microseconds that may take up to a second.
struct WaitOptions {
  // The longest the wait lasts; past it, one last read decides. Zero or less: one read.
  std::chrono::nanoseconds timeout = std::chrono::seconds(1);
  // Busy-poll (with cpu_relax) for this long before the first sleep. A spin as long as
  // the timeout never sleeps.
  std::chrono::nanoseconds spin = std::chrono::microseconds(20);
  // Then sleep between tries: min_sleep first, doubling up to max_sleep, never past the
  // deadline. max_sleep of zero: spin for the whole timeout.
  std::chrono::nanoseconds min_sleep = std::chrono::microseconds(1);
  std::chrono::nanoseconds max_sleep = std::chrono::milliseconds(1);  // the longest sleep
  // Called after each try that did not match; an error ends the wait with that error (e.g.
  // NVMe CSTS.CFS set: the controller is dead). Empty: never. It runs as often as the
  // tries, so during the spin it should be cheap (one register read at most).
  std::function<Result<void>()> stop_if = nullptr;
  // For register polls (MmioView::poll): a read of all ones that does not satisfy the wait
  // ends it with device_removed. A read from a removed or reset device completes as an
  // Unsupported Request, which the root complex turns into all ones (PCIe r6.0, 2.3.2 and
  // 6.2.3.2.3). Leave it off for registers that may read all ones while the device is well.
  bool all_ones_means_removed = false;
};

// What a wait ended with: the last value read and whether it satisfied the wait (false:
// the timeout passed first).
template <class T>
struct WaitResult {
  T value{};             // the last value read
  bool matched = false;  // whether `value` satisfied the wait
};

// Calls `read()` until `done(value)` holds, options.stop_if fails or the timeout passes,
// following options' spin-then-sleep schedule. Returns the last value read and whether it
// matched; fails only with stop_if's error. Never waits past the deadline by more than
// one read (and one call of stop_if).
template <class Read, class Done>
  requires std::invocable<Read&> && std::predicate<Done&, std::invoke_result_t<Read&>>
Result<WaitResult<std::invoke_result_t<Read&>>> wait_until(Read&& read, Done&& done, const WaitOptions& options) {
  using Clock = std::chrono::steady_clock;
  using Value = std::invoke_result_t<Read&>;
  const Clock::time_point start = Clock::now();
  // Saturate instead of overflowing: a timeout of nanoseconds::max() means "no deadline".
  const std::chrono::nanoseconds timeout = std::max(options.timeout, std::chrono::nanoseconds::zero());
  const Clock::time_point deadline =
      timeout >= Clock::time_point::max() - start ? Clock::time_point::max() : start + timeout;
  const std::chrono::nanoseconds max_sleep = std::max(options.max_sleep, std::chrono::nanoseconds::zero());
  std::chrono::nanoseconds sleep = std::clamp(options.min_sleep, std::chrono::nanoseconds(1),
                                              std::max(max_sleep, std::chrono::nanoseconds(1)));
  for (;;) {
    Value value = read();
    if (done(value)) return WaitResult<Value>{value, true};
    if (options.stop_if) {
      Result<void> go_on = options.stop_if();
      if (!go_on) return std::unexpected(go_on.error());
    }
    const Clock::time_point now = Clock::now();
    if (now >= deadline) return WaitResult<Value>{value, false};
    if (max_sleep == std::chrono::nanoseconds::zero() || now - start < options.spin) {
      cpu_relax();
      continue;
    }
    std::this_thread::sleep_for(std::min<std::chrono::nanoseconds>(sleep, deadline - now));
    sleep = sleep > max_sleep / 2 ? max_sleep : sleep * 2;
  }
}

// An integer the device writes by DMA and the CPU waits on.
template <class T>
concept DmaWord = std::same_as<T, std::uint8_t> || std::same_as<T, std::uint16_t> ||
                  std::same_as<T, std::uint32_t> || std::same_as<T, std::uint64_t>;

// Loads `*word` with acquire ordering: what the device wrote to other DMA memory before it
// wrote this word is visible to reads that follow (the word must be naturally aligned,
// which keeps the load single-copy atomic).
template <DmaWord T>
T load_acquire(const T* word) noexcept {
  return __atomic_load_n(word, __ATOMIC_ACQUIRE);
}

// Waits until (*word & mask) == expected, reading it with load_acquire(), on options'
// schedule. Returns the last value read and whether it matched. Fails with
// invalid_argument for a null `word`, misaligned for one not naturally aligned (a torn
// read could match a value the device never wrote), or stop_if's error.
template <DmaWord T>
Result<WaitResult<T>> wait_for_dma_word(const T* word, T mask, T expected, const WaitOptions& options) {
  if (word == nullptr) {
    return std::unexpected(make_error(Errc::invalid_argument, "wait for DMA word", "(null)", "no word to wait on"));
  }
  if (reinterpret_cast<std::uintptr_t>(word) % sizeof(T) != 0) {
    return std::unexpected(make_error(Errc::misaligned, "wait for DMA word", "DMA word",
                                      "the word is not naturally aligned, so the device's write may be seen torn",
                                      "place it at a multiple of its size in the DMA buffer"));
  }
  return wait_until([word] { return load_acquire(word); },
                    [mask, expected](T value) { return (value & mask) == expected; }, options);
}

}  // namespace pcie
