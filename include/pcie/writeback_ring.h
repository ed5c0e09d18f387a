// A descriptor ring that the device writes back in place: the shape of a NIC's legacy
// receive and transmit rings. The driver posts descriptors at the tail and announces them
// through a tail register (Intel's RDT/TDT: the tail is the next slot the driver fills,
// and the device owns the slots from its head up to, not including, the tail); the device
// processes them in order and writes each back where it lay, setting a done bit in a
// status byte (Intel 82574L datasheet: 7.1.4 for the legacy receive descriptor, 7.2 for
// the legacy transmit one; in both the status byte is byte 12 and Descriptor Done (DD)
// its bit 0). One slot always stays empty, so that a
// full ring is told from an empty one: depth - 1 descriptors fit.
//
// Where pcie/queue.h has a submission ring and a separate completion ring (NVMe), here one
// ring does both; it is built from the same pieces (detail::check_ring_memory, Doorbell)
// and fails the same way. It owns neither its memory (a DmaBuffer or DmaPool slice whose
// bus address the driver gives the device) nor the mapping behind its doorbell.
//
//   auto rx = pcie::WritebackRing<RxDescriptor>::create(rx_buffer.bytes(), 256,
//                 {.byte_offset = 12, .mask = 0x01},                      // 82574L DD
//                 pcie::Doorbell::at(regs, kRdt).value()).value();
//   rx.refill([&](std::uint32_t slot) { return RxDescriptor{.buffer = bus_of(slot)}; });
//   while (auto done = rx.peek()) { deliver(*done); rx.reap(); }
//   rx.refill(...);                                    // one tail write for the batch
//
// Threads: a ring is one owner's; guard it when threads share it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>

#include "pcie/error.h"
#include "pcie/queue.h"
#include "pcie/wait.h"

namespace pcie {

// The bit the device sets in a descriptor it has written back: bit(s) `mask` of the byte
// at `byte_offset` within the descriptor (82574L legacy descriptors: {12, 0x01}).
struct DoneBit {
  std::size_t byte_offset = 0;  // the status byte's offset in the descriptor, in bytes
  std::uint8_t mask = 1;        // the done bit(s) in that byte; any of them set means done
};

// A ring of `Descriptor`s (the device's layout, trivially copyable) that the device writes
// back in place, with the driver's head and tail and the tail doorbell. Copyable, but
// copies share the memory and drift apart: keep one in use.
template <class Descriptor>
requires std::is_trivially_copyable_v<Descriptor>
class WritebackRing {
 public:
  // An empty ring: post() and refill() fail, peek() and reap() find nothing.
  WritebackRing() = default;

  // A ring of `depth` descriptors over `memory` (at least depth * sizeof(Descriptor) bytes,
  // aligned for Descriptor), which is zeroed; `tail` is the register that takes the tail
  // (may be empty for a device that polls the ring). Fails with invalid_argument: depth
  // outside [2, 1 << 24], memory too small or misaligned, the done bit's byte outside the
  // descriptor or a mask of 0.
  static Result<WritebackRing> create(std::span<std::byte> memory, std::uint32_t depth, DoneBit done, Doorbell tail) {
    auto ok = detail::check_ring_memory("writeback ring", memory, depth, sizeof(Descriptor), alignof(Descriptor));
    if (!ok) return std::unexpected(ok.error());
    if (done.byte_offset >= sizeof(Descriptor) || done.mask == 0) {
      return std::unexpected(make_error(Errc::invalid_argument, "create", "writeback ring",
                                        "the done bit's byte is outside the descriptor, or its mask is 0"));
    }
    std::memset(memory.data(), 0, std::size_t{depth} * sizeof(Descriptor));
    WritebackRing ring;
    ring.entries_ = memory.data();
    ring.depth_ = depth;
    ring.done_ = done;
    ring.doorbell_ = tail;
    return ring;
  }

  // False for a default-constructed ring (not made by create()).
  bool valid() const { return entries_ != nullptr; }
  // The number of slots (0 on an empty ring); at most depth - 1 are posted at once.
  std::uint32_t depth() const { return depth_; }
  std::uint32_t head() const { return head_; }  // the oldest posted slot: the next to reap
  std::uint32_t tail() const { return tail_; }  // the slot the next post fills
  // Descriptors posted and not yet reaped (the device's, done or not).
  std::uint32_t posted() const { return tail_ >= head_ ? tail_ - head_ : depth_ - head_ + tail_; }
  // Descriptors that can be posted now: depth - 1 - posted(); 0 on an empty ring.
  std::uint32_t free_slots() const { return depth_ == 0 ? 0 : depth_ - 1 - posted(); }

  // Copies `descriptor` into the tail slot with its done bit cleared (whatever the caller
  // left in it) and advances the tail; the device learns of it at the next ring(). Returns
  // the slot. busy when the ring is full (reap first); invalid_argument on an empty ring.
  Result<std::uint32_t> post(const Descriptor& descriptor) {
    if (!valid()) return std::unexpected(empty_object_error("post", "WritebackRing", "use create()"));
    if (free_slots() == 0) {
      return std::unexpected(make_error(Errc::busy, "post", "writeback ring",
                                        "the ring is full (depth - 1 descriptors posted)",
                                        "reap descriptors the device has written back before posting more"));
    }
    const std::uint32_t slot = tail_;
    std::memcpy(slot_bytes(slot), &descriptor, sizeof(Descriptor));
    *done_byte(slot) &= ~std::byte{done_.mask};
    tail_ = slot + 1 == depth_ ? 0 : slot + 1;
    return slot;
  }

  // Announces every descriptor posted so far: one tail register write, after the
  // descriptors' stores (Doorbell::ring). Does nothing without a doorbell.
  void ring() const noexcept {
    if (doorbell_.valid()) doorbell_.ring(tail_);
  }

  // The oldest posted descriptor, if the device has written it back (its done bit set),
  // else nullopt (also when nothing is posted, or the ring is empty). The status byte is
  // read with acquire ordering first, so the copy is what the device wrote before the bit.
  std::optional<Descriptor> peek() const {
    if (!head_done()) return std::nullopt;
    Descriptor descriptor;
    std::memcpy(&descriptor, slot_bytes(head_), sizeof(Descriptor));
    return descriptor;
  }

  // Consumes the oldest posted descriptor if the device has written it back: clears its
  // done bit (so a later pass does not take the stale bit for a new write-back) and
  // advances the head. Returns whether it did: false when it is not done yet, nothing is
  // posted, or the ring is empty.
  bool reap() noexcept {
    if (!head_done()) return false;
    *done_byte(head_) &= ~std::byte{done_.mask};
    head_ = head_ + 1 == depth_ ? 0 : head_ + 1;
    return true;
  }

  // Posts descriptors until the ring is full, each made by `make_descriptor(slot)` (e.g.
  // with a fresh receive buffer's bus address), then writes the tail once if anything was
  // posted. `make_descriptor` returns the Descriptor, or a std::optional<Descriptor> whose
  // nullopt stops the refill early (no buffer left). Returns how many were posted;
  // invalid_argument on an empty ring.
  template <class Fill>
  Result<std::uint32_t> refill(Fill&& make_descriptor) {
    if (!valid()) return std::unexpected(empty_object_error("refill", "WritebackRing", "use create()"));
    std::uint32_t count = 0;
    while (free_slots() > 0) {
      std::optional<Descriptor> made = make_descriptor(tail_);
      if (!made) break;
      (void)post(*made);  // cannot fail: the ring is valid and has a free slot
      ++count;
    }
    if (count > 0) ring();
    return count;
  }

  // Waits for the oldest posted descriptor to be written back, on `options`' schedule
  // (pcie/wait.h), and returns it (not reaped), or nullopt when the timeout passed first.
  // Fails only with options.stop_if's error.
  Result<std::optional<Descriptor>> wait(const WaitOptions& options) const {
    auto waited = wait_until([this] { return head_done(); }, [](bool done) { return done; }, options);
    if (!waited) return std::unexpected(waited.error());
    if (!waited->matched) return std::optional<Descriptor>();
    return peek();
  }

 private:
  std::byte* slot_bytes(std::uint32_t slot) const { return entries_ + std::size_t{slot} * sizeof(Descriptor); }
  std::byte* done_byte(std::uint32_t slot) const { return slot_bytes(slot) + done_.byte_offset; }
  bool head_done() const {
    if (posted() == 0) return false;  // also an empty ring: head_ == tail_ == 0
    const auto* status = reinterpret_cast<const std::uint8_t*>(done_byte(head_));
    return (load_acquire(status) & done_.mask) != 0;
  }

  std::byte* entries_ = nullptr;
  std::uint32_t depth_ = 0;
  std::uint32_t head_ = 0;
  std::uint32_t tail_ = 0;
  DoneBit done_;
  Doorbell doorbell_;
};

}  // namespace pcie
