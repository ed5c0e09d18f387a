// Queues in DMA memory that a driver shares with its device: a submission ring the driver
// fills and announces through a tail doorbell, and a completion ring the device fills and
// marks entry by entry with a phase bit (NVMe) or a done bit (NIC descriptor rings), whose
// head the driver hands back through a doorbell. The rings own neither their memory (a
// DmaBuffer or a DmaPool slice, whose bus address the driver gives the device) nor the
// register mapping behind their doorbells: both must outlive them.
//
//   auto sq = pcie::SubmissionRing<Command>::create(sq_buffer.bytes(), 64,
//                 pcie::Doorbell::in_array(regs, 0x1000, 2 * qid, 4 << dstrd).value()).value();
//   sq.push(command); sq.ring();
//   auto cq = pcie::CompletionRing<Completion>::create(cq_buffer.bytes(), 64,
//                 {.byte_offset = 14, .mask = 1}, pcie::Doorbell::in_array(...)).value();
//   if (auto done = cq.wait(options); done && *done) { use(**done); cq.pop(); cq.ring(); }
//
// Threads: a ring is one producer's or one consumer's; guard it when threads share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <type_traits>

#include "pcie/barriers.h"
#include "pcie/error.h"
#include "pcie/mmio.h"
#include "pcie/region.h"
#include "pcie/wait.h"

namespace pcie {

// A 32-bit doorbell register that takes a queue index (a submission tail, a completion
// head). Empty when default-constructed (a queue struct built step by step); valid() says.
class Doorbell {
 public:
  // An empty doorbell (valid() false).
  Doorbell() = default;

  // The doorbell at `offset` of `registers`, checked now (inside, 4-byte aligned, 32-bit
  // accesses allowed): out_of_range, misaligned, width_not_allowed.
  static Result<Doorbell> at(const MmioView& registers, std::uint64_t offset);
  // Doorbell `index` of an array of doorbells `stride` bytes apart from `base` (NVMe: base
  // 0x1000, stride 4 << CAP.DSTRD, queue y's submission tail at index 2y and completion
  // head at 2y + 1; NVMe base spec 2.0, 3.1.4.21). Fails as at(), and out_of_range when
  // base + index * stride overflows; invalid_argument for a stride below 4.
  static Result<Doorbell> in_array(const MmioView& registers, std::uint64_t base, std::uint64_t index,
                                   std::uint64_t stride);
  // The same through a Region's checked accessors, for registers without a mapping (a
  // register model in unit tests, pcie/testing/register_model.h; a VFIO region reached by
  // pwrite). The region must outlive the doorbell. Fails as the MmioView overloads, and
  // permission_denied for a read-only region.
  static Result<Doorbell> at(Region& registers, std::uint64_t offset);
  // As the MmioView in_array(), through a Region's checked accessors as at(Region&) is.
  static Result<Doorbell> in_array(Region& registers, std::uint64_t base, std::uint64_t index, std::uint64_t stride);

  // False for an empty (default-constructed) doorbell, which must not be rung.
  bool valid() const { return region_ != nullptr || registers_.base() != nullptr; }
  // The register's offset in its MmioView or Region, in bytes; 0 when empty.
  std::uint64_t offset() const { return offset_; }

  // Writes `value`, after every earlier store of this thread to DMA memory (the entries it
  // announces): an ordered MMIO write (pcie/mmio.h), behind an sfence first when the
  // registers are mapped write-combined, whose stores may pass earlier ones (Intel SDM
  // vol. 3A, 11.3). Through a Region, a write the region refuses (its device removed and
  // the mapping revoked) is dropped, as a store to a revoked mapping is: the driver's next
  // status read reports the removal. Must not be called on an empty doorbell.
  void ring(std::uint32_t value) const noexcept {
    if (region_ != nullptr) {
      // Region::write is an ordered write (pcie/region.h) like MmioView::write.
      if (region_->memory_type() == MemoryType::write_combined) barrier_before_doorbell();
      (void)region_->write(Width::bits32, offset_, value);  // see above: a refused write is a dropped store
      return;
    }
    if (registers_.memory_type() == MemoryType::write_combined) barrier_before_doorbell();
    registers_.write<std::uint32_t>(offset_, value);
  }

 private:
  Doorbell(const MmioView& registers, std::uint64_t offset) : registers_(registers), offset_(offset) {}
  Doorbell(Region& registers, std::uint64_t offset) : region_(&registers), offset_(offset) {}
  MmioView registers_;
  Region* region_ = nullptr;
  std::uint64_t offset_ = 0;
};

namespace detail {
// The checks every ring makes of its memory: not empty, aligned for the entry, large
// enough for `depth` entries (overflow-safe), depth within [2, 1 << 24].
Result<void> check_ring_memory(std::string_view ring, std::span<std::byte> memory, std::uint32_t depth,
                               std::size_t entry_size, std::size_t entry_alignment);
}  // namespace detail

// `depth` entries the driver writes and the device reads, in order, from the head the
// device has reached to the tail the driver last announced. One slot always stays empty,
// so that a full ring is told from an empty one (NVMe base spec 2.0, 4.1.1): depth - 1
// entries fit.
template <class Entry>
  requires std::is_trivially_copyable_v<Entry>
class SubmissionRing {
 public:
  // An empty ring (valid() false, depth 0), for a queue struct built step by step.
  SubmissionRing() = default;

  // A ring over `memory` (at least depth * sizeof(Entry) bytes, aligned for Entry), which
  // is zeroed; `tail` is the doorbell that announces new entries (may be empty for a ring
  // whose device polls it). Fails with invalid_argument (depth outside [2, 1 << 24], a
  // buffer too small or misaligned).
  static Result<SubmissionRing> create(std::span<std::byte> memory, std::uint32_t depth, Doorbell tail) {
    auto ok = detail::check_ring_memory("submission ring", memory, depth, sizeof(Entry), alignof(Entry));
    if (!ok) return std::unexpected(ok.error());
    std::memset(memory.data(), 0, std::size_t{depth} * sizeof(Entry));
    SubmissionRing ring;
    ring.entries_ = reinterpret_cast<Entry*>(memory.data());
    ring.depth_ = depth;
    ring.doorbell_ = tail;
    return ring;
  }

  // False for an empty (default-constructed) ring.
  bool valid() const { return entries_ != nullptr; }
  // Slots in the ring, as given to create(); 0 when empty.
  std::uint32_t depth() const { return depth_; }
  std::uint32_t head() const { return head_; }  // the oldest entry the device may not have read
  std::uint32_t tail() const { return tail_; }  // where the next entry goes
  // Entries that can be pushed now; 0 on an empty ring.
  std::uint32_t free_slots() const { return depth_ == 0 ? 0 : depth_ - 1 - in_flight(); }
  // Entries pushed and not yet consumed by the device.
  std::uint32_t in_flight() const { return tail_ >= head_ ? tail_ - head_ : depth_ - head_ + tail_; }

  // Copies `entry` into the tail slot and advances the tail; the device learns of it at
  // the next ring(). Returns the slot's index. busy when the ring is full (free_slots()
  // is 0: consume completions first); invalid_argument on an empty (default-constructed) ring.
  Result<std::uint32_t> push(const Entry& entry) {
    if (!valid()) return std::unexpected(empty_object_error("push", "SubmissionRing", "use create()"));
    if (free_slots() == 0) {
      return std::unexpected(make_error(Errc::busy, "push", "submission ring",
                                        "the ring is full (depth - 1 entries in flight)",
                                        "consume completions (consumed_up_to) before pushing more"));
    }
    const std::uint32_t slot = tail_;
    std::memcpy(static_cast<void*>(entries_ + slot), &entry, sizeof(Entry));
    tail_ = slot + 1 == depth_ ? 0 : slot + 1;
    return slot;
  }

  // Announces every entry pushed so far: one doorbell write of the tail, whatever the
  // number of pushes since the last one. Does nothing without a doorbell.
  void ring() const noexcept {
    if (doorbell_.valid()) doorbell_.ring(tail_);
  }

  // The device has read the entries before `head` (NVMe: the SQ Head Pointer of a
  // completion), which frees their slots. out_of_range for a head outside the entries in
  // flight (a device's hostile or stale value): nothing changes then.
  Result<void> consumed_up_to(std::uint32_t head) {
    const std::uint32_t distance = head >= head_ ? head - head_ : depth_ - head_ + head;
    if (head >= depth_ || distance > in_flight()) {
      return std::unexpected(make_error(Errc::out_of_range, "consume", "submission ring",
                                        "head " + std::to_string(head) + " is not between the head " +
                                            std::to_string(head_) + " and the tail " + std::to_string(tail_)));
    }
    head_ = head;
    return {};
  }

  // The slot's entry, for drivers that fill it in place; nullptr for an index not below
  // depth() (an empty ring's every index).
  Entry* slot(std::uint32_t index) const { return index < depth_ ? entries_ + index : nullptr; }

 private:
  Entry* entries_ = nullptr;
  std::uint32_t depth_ = 0;
  std::uint32_t head_ = 0;
  std::uint32_t tail_ = 0;
  Doorbell doorbell_;
};

// How the device marks a completion entry as new: one bit of one byte of the entry.
struct CompletionTag {
  std::size_t byte_offset = 0;  // of the byte that holds the bit, within an entry
  std::uint8_t mask = 1;        // the bit
  // What the bit means: the phase of the pass that wrote the entry, or done.
  enum class Kind {
    // The device writes the bit inverted on each pass over the ring, 1 on the first: the
    // NVMe Phase Tag (NVMe base spec 2.0, 4.2.4). The ring starts zeroed.
    phase,
    // The device sets the bit; the driver clears it as it consumes the entry (a NIC's
    // descriptor-done bit, e.g. Intel 82599 DD).
    done,
  } kind = Kind::phase;  // how this ring's device marks new entries
};

// `depth` entries the device writes, in order, and the driver consumes from its head.
template <class Entry>
  requires std::is_trivially_copyable_v<Entry>
class CompletionRing {
 public:
  // An empty ring (valid() false, depth 0), for a queue struct built step by step.
  CompletionRing() = default;

  // A ring over `memory` (at least depth * sizeof(Entry) bytes, aligned for Entry), which
  // is zeroed; `head` is the doorbell that hands consumed entries back (may be empty).
  // Fails with invalid_argument (as SubmissionRing::create, and a tag byte outside the
  // entry or a mask of 0).
  static Result<CompletionRing> create(std::span<std::byte> memory, std::uint32_t depth, CompletionTag tag,
                                       Doorbell head) {
    auto ok = detail::check_ring_memory("completion ring", memory, depth, sizeof(Entry), alignof(Entry));
    if (!ok) return std::unexpected(ok.error());
    if (tag.byte_offset >= sizeof(Entry) || tag.mask == 0) {
      return std::unexpected(make_error(Errc::invalid_argument, "create", "completion ring",
                                        "the tag's byte is outside the entry, or its mask is 0"));
    }
    std::memset(memory.data(), 0, std::size_t{depth} * sizeof(Entry));
    CompletionRing ring;
    ring.entries_ = reinterpret_cast<std::byte*>(memory.data());
    ring.depth_ = depth;
    ring.tag_ = tag;
    ring.doorbell_ = head;
    return ring;
  }

  // False for an empty (default-constructed) ring.
  bool valid() const { return entries_ != nullptr; }
  // Slots in the ring, as given to create(); 0 when empty.
  std::uint32_t depth() const { return depth_; }
  // The slot of the next entry to consume (what ring() hands back to the device).
  std::uint32_t head() const { return head_; }
  // The phase bit value that marks a new entry at the head now (phase rings; starts true).
  bool phase() const { return phase_; }

  // The entry at the head, if the device has posted it; nullopt if not (always on an empty
  // ring). Its tag is read with acquire ordering first, so the copy returned is what the
  // device wrote before it.
  std::optional<Entry> peek() const {
    if (!posted()) return std::nullopt;
    Entry entry;
    std::memcpy(&entry, entries_ + std::size_t{head_} * sizeof(Entry), sizeof(Entry));
    return entry;
  }

  // Consumes the head entry (the one peek() returned): clears its done bit (done rings),
  // advances the head and, at the wrap, flips the phase expected next. Nothing on an
  // empty ring.
  void pop() noexcept {
    if (!valid()) return;
    if (tag_.kind == CompletionTag::Kind::done) {
      std::byte* tag = entries_ + std::size_t{head_} * sizeof(Entry) + tag_.byte_offset;
      *tag &= ~std::byte{tag_.mask};
    }
    if (++head_ == depth_) {
      head_ = 0;
      phase_ = !phase_;
    }
  }

  // Hands the consumed entries back: one doorbell write of the head. Does nothing without
  // a doorbell.
  void ring() const noexcept {
    if (doorbell_.valid()) doorbell_.ring(head_);
  }

  // Waits for the head entry on `options`' schedule (pcie/wait.h) and returns it (not
  // consumed: pop() does that), or nullopt when the timeout passed first (an empty ring
  // posts nothing). Fails only with options.stop_if's error.
  Result<std::optional<Entry>> wait(const WaitOptions& options) const {
    auto waited = wait_until([this] { return posted(); }, [](bool ready) { return ready; }, options);
    if (!waited) return std::unexpected(waited.error());
    if (!waited->matched) return std::optional<Entry>();
    return peek();
  }

 private:
  bool posted() const {
    if (entries_ == nullptr) return false;  // an empty ring
    const auto* tag = reinterpret_cast<const std::uint8_t*>(entries_ + std::size_t{head_} * sizeof(Entry) +
                                                            tag_.byte_offset);
    const bool set = (load_acquire(tag) & tag_.mask) != 0;
    return tag_.kind == CompletionTag::Kind::phase ? set == phase_ : set;
  }

  std::byte* entries_ = nullptr;
  std::uint32_t depth_ = 0;
  std::uint32_t head_ = 0;
  bool phase_ = true;
  CompletionTag tag_;
  Doorbell doorbell_;
};

}  // namespace pcie
