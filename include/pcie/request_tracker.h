// Request identifiers a driver hands its device (NVMe command identifiers, a descriptor's
// cookie, a DMA engine's transfer tag) and the completions that come back with them, in
// the manner of libvfn's request tracker:
//  - an identifier is never handed out again while its request is outstanding (the NVMe
//    base spec 2.0, 4.2.1, forbids reusing a Command Identifier still in use on its queue);
//  - freed identifiers are reused oldest first (a queue, not a stack), so a stale or
//    duplicated completion is unlikely to meet a new request that took its identifier;
//  - a completion is matched to its request, and one the device reports for an identifier
//    that is out of range or not outstanding is a device error (malformed), never trusted:
//    the caller stops using the queue (reset it) rather than complete the wrong request.
//
//   auto tracker = pcie::RequestTracker<Slot>::create(depth - 1).value();
//   auto id = tracker.start({.buffer = b});                  // busy when all are outstanding
//   command.command_id = *id; ... submit ...
//   auto slot = tracker.finish(completion.command_id);      // malformed for a stray id
//   ... after a controller reset: tracker.clear(), every request abandoned ...
//
// Threads: one owner's; guard it when threads share a queue.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "pcie/error.h"

namespace pcie {

// Hands out request identifiers and keeps a `Context` (what the driver needs when the
// request completes: a buffer, a callback) for each outstanding one, until its completion.
template <class Context>
class RequestTracker {
 public:
  // An empty tracker (capacity 0): start(), finish() and find() fail with invalid_argument.
  RequestTracker() = default;

  // A tracker of `capacity` identifiers, from first_id up to first_id + capacity - 1.
  // Fails with invalid_argument for a capacity of 0 or above 1 << 24, or a range that does
  // not fit 32 bits.
  static Result<RequestTracker> create(std::uint32_t capacity, std::uint32_t first_id = 0) {
    if (capacity == 0 || capacity > (1u << 24) || first_id > UINT32_MAX - (capacity - 1)) {
      return std::unexpected(make_error(Errc::invalid_argument, "create", "request tracker",
                                        "capacity " + std::to_string(capacity) + " from identifier " +
                                            std::to_string(first_id) + ": 1 to 16777216 identifiers within 32 bits"));
    }
    RequestTracker tracker;
    tracker.first_ = first_id;
    tracker.slots_.resize(capacity);
    tracker.free_.resize(capacity);
    for (std::uint32_t i = 0; i < capacity; ++i) tracker.free_[i] = i;
    tracker.free_count_ = capacity;
    return tracker;
  }

  // False for a default-constructed tracker (not made by create()).
  bool valid() const { return !slots_.empty(); }
  // How many identifiers there are (0 on an empty tracker).
  std::uint32_t capacity() const { return static_cast<std::uint32_t>(slots_.size()); }
  // Requests started and not yet finished.
  std::uint32_t outstanding() const { return capacity() - free_count_; }
  // Identifiers start() can hand out now: capacity() - outstanding().
  std::uint32_t available() const { return free_count_; }

  // Takes the identifier freed longest ago and records `context` under it. busy when every
  // identifier is outstanding; invalid_argument on an empty tracker.
  Result<std::uint32_t> start(Context context) {
    if (!valid()) return std::unexpected(empty_object_error("start request", "RequestTracker", "use create()"));
    if (free_count_ == 0) {
      return std::unexpected(make_error(Errc::busy, "start request", "request tracker",
                                        "all " + std::to_string(capacity()) + " identifiers are outstanding",
                                        "finish requests before starting more"));
    }
    const std::uint32_t index = free_[free_head_];
    free_head_ = (free_head_ + 1) % capacity();
    --free_count_;
    slots_[index].emplace(std::move(context));
    return first_ + index;
  }

  // Ends the request `id` and returns its context. malformed when `id` is outside the
  // tracker's range or not outstanding (a device completing a request twice, or one it
  // never had): nothing changes then.
  Result<Context> finish(std::uint32_t id) {
    auto index = outstanding_index(id);
    if (!index) return std::unexpected(index.error());
    Context context = std::move(*slots_[*index]);
    slots_[*index].reset();
    free_[(free_head_ + free_count_) % capacity()] = *index;
    ++free_count_;
    return context;
  }

  // The context of outstanding request `id`, or malformed as finish().
  Result<Context*> find(std::uint32_t id) {
    auto index = outstanding_index(id);
    if (!index) return std::unexpected(index.error());
    return &*slots_[*index];
  }
  // Whether `id` was started and not yet finished; false outside the range, never fails.
  bool is_outstanding(std::uint32_t id) const {
    return id >= first_ && id - first_ < capacity() && slots_[id - first_].has_value();
  }

  // Calls `visit(id, context)` for each outstanding request, in identifier order.
  template <class Visit>
  void for_each_outstanding(Visit&& visit) {
    for (std::uint32_t i = 0; i < capacity(); ++i) {
      if (slots_[i]) visit(first_ + i, *slots_[i]);
    }
  }

  // Abandons every outstanding request (after the device was reset and can no longer
  // complete them): all identifiers become free, in identifier order.
  void clear() {
    for (auto& slot : slots_) slot.reset();
    for (std::uint32_t i = 0; i < capacity(); ++i) free_[i] = i;
    free_head_ = 0;
    free_count_ = capacity();
  }

 private:
  Result<std::uint32_t> outstanding_index(std::uint32_t id) const {
    if (!valid()) return std::unexpected(empty_object_error("finish request", "RequestTracker", "use create()"));
    if (!is_outstanding(id)) {
      return std::unexpected(make_error(
          Errc::malformed, "match completion", "request tracker",
          "identifier " + std::to_string(id) +
              (id >= first_ && id - first_ < capacity() ? " is not outstanding (completed twice, or never started)"
                                                        : " is outside the identifiers handed out"),
          "the device's completion cannot be trusted: reset the queue or the device"));
    }
    return id - first_;
  }

  std::uint32_t first_ = 0;
  std::vector<std::optional<Context>> slots_;
  std::vector<std::uint32_t> free_;  // a ring of free indices, oldest first
  std::uint32_t free_head_ = 0;
  std::uint32_t free_count_ = 0;
};

}  // namespace pcie
