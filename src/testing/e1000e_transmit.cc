// The 82574L model's transmit path (82574 datasheet, 7.2): legacy descriptors from TDH to
// TDT, buffers read by DMA and assembled into frames until EOP, the frame sent to the wire
// or looped back, DD written back when RS (or IVAR bit 31) asks for it, TDH advanced.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string>
#include <utility>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;

namespace {

// Why a transmit descriptor's frame is dropped, or nullopt for a legacy descriptor the
// model takes.
std::optional<std::string> descriptor_problem(std::uint32_t index, std::uint8_t command, std::uint32_t length) {
  if (command & kTxDext) {
    return fmt::format("TX descriptor {} has DEXT set (a context or data descriptor); the model takes legacy "
                       "descriptors only: its frame is dropped",
                       index);
  }
  if (length == 0 || length > kMaxTxBuffer) {
    return fmt::format("TX descriptor {} has length {}; a legacy descriptor's buffer is 1 to {} bytes: its "
                       "frame is dropped",
                       index, length, kMaxTxBuffer);
  }
  return std::nullopt;
}

std::string too_many_descriptors(std::uint32_t index, unsigned descriptors) {
  return fmt::format("TX descriptor {} is the {}th of a frame without EOP; a frame spans at most {} "
                     "descriptors: it is dropped",
                     index, descriptors, kMaxTxDescriptorsPerFrame);
}

// The upper 4 bytes (status, CSS, special) with DD, as QEMU writes them back.
std::array<std::byte, 4> done_status(const Descriptor& descriptor) {
  std::array<std::byte, 4> upper;
  std::copy(descriptor.begin() + 12, descriptor.begin() + 16, upper.begin());
  upper[0] |= std::byte{kTxDd};
  return upper;
}

}  // namespace

std::size_t E1000eModel::Core::transmit() {
  std::size_t sent = 0;
  std::uint32_t causes = 0;
  bool progressed = false;
  // Bounded by the ring: one pass at most, whatever the registers say.
  for (std::uint32_t step = 0; ring_enabled(kTxRing) && !tx.halted && ring_usable(kTxRing) &&
                               reg(kTdh) != reg(kTdt) && step < ring_size(kTxRing);
       ++step) {
    const std::optional<bool> done = transmit_one(causes);
    if (!done) break;
    progressed = true;
    if (*done) ++sent;
  }
  if (progressed && reg(kTdh) == reg(kTdt)) causes |= kTxqe;
  if (causes != 0) raise(causes);
  return sent;
}

// The descriptor at TDH: checked, its buffer appended to the frame, the frame sent at EOP,
// DD written back, TDH advanced. Returns whether a frame was sent; nullopt when a DMA
// faulted (the queue stopped with TDH on the descriptor).
std::optional<bool> E1000eModel::Core::transmit_one(std::uint32_t& causes) {
  const std::uint32_t index = reg(kTdh);
  const std::uint64_t address = ring_base(kTxRing) + std::uint64_t{index} * kDescriptorBytes;
  const std::optional<Descriptor> descriptor = fetch(kTxRing, index);
  if (!descriptor) return std::nullopt;
  const std::uint64_t buffer = load(*descriptor, 0, 8);
  const auto length = static_cast<std::uint32_t>(load(*descriptor, 8, 2));
  const auto command = static_cast<std::uint8_t>(load(*descriptor, 11, 1));
  if (const std::optional<std::string> problem = descriptor_problem(index, command, length)) {
    violation(e1000e_rule::kTxDescriptor, *problem, kCiteTransmit);
    tx_frame.dropped = true;
  } else if (!tx_frame.dropped) {
    const std::size_t at = tx_frame.bytes.size();
    tx_frame.bytes.resize(at + length);
    const std::span<std::byte> chunk(tx_frame.bytes.data() + at, length);
    if (!dma_read(buffer, chunk, fmt::format("TX descriptor {}'s buffer", index))) {
      tx.halted = true;
      return std::nullopt;
    }
  }
  ++tx_frame.descriptors;
  if (!(command & kTxEop) && tx_frame.descriptors == kMaxTxDescriptorsPerFrame + 1) {
    violation(e1000e_rule::kTxNoEop, too_many_descriptors(index, tx_frame.descriptors), kCiteTransmit);
    tx_frame.dropped = true;
  }
  const bool sent = (command & kTxEop) ? finish_frame() : false;
  if ((command & kTxRs) || (reg(kIvar) & kIvarTxEveryWriteback)) {
    if (!dma_write(address + 12, done_status(*descriptor), fmt::format("TX descriptor {}'s status", index))) {
      tx.halted = true;
      return std::nullopt;
    }
    causes |= kTxdw | (msix_enabled() ? kTxq0 : 0);
  }
  advance_head(kTxRing);
  return sent;
}

bool E1000eModel::Core::finish_frame() {
  TxFrame frame = std::exchange(tx_frame, {});
  if (frame.dropped) return false;
  const std::size_t limit = (reg(kRctl) & kRctlLpe) ? kMaxLongFrame : kMaxFrame;
  if (frame.bytes.size() > limit) {
    violation(e1000e_rule::kTxFrameTooLong,
              fmt::format("a {}-byte frame (without FCS) in {} descriptors; the limit is {} bytes{}: not sent",
                          frame.bytes.size(), frame.descriptors, limit,
                          limit == kMaxFrame ? " without RCTL.LPE" : ""),
              kCiteTransmit);
    return false;
  }
  if ((reg(kTctl) & kTctlPsp) && frame.bytes.size() < kMinFrame) frame.bytes.resize(kMinFrame);
  count_frame(frame.bytes, true);
  send(std::move(frame.bytes));
  return true;
}

void E1000eModel::Core::send(std::vector<std::byte> frame) {
  if ((reg(kRctl) & kRctlLbmMask) == kRctlLbmMac) {
    (void)deliver(frame);  // what the receiver does with it is the receive path's to record
    return;
  }
  wire.push_back(std::move(frame));
}

// The statistics of a frame sent or delivered (octets with the 4 FCS bytes).
void E1000eModel::Core::count_frame(std::span<const std::byte> frame, bool sent) {
  const bool broadcast = frame.size() >= 6 && std::all_of(frame.begin(), frame.begin() + 6, [](std::byte b) {
                           return b == std::byte{0xff};
                         });
  const bool multicast = !frame.empty() && (std::to_integer<unsigned>(frame[0]) & 1) != 0 && !broadcast;
  const std::uint64_t octets = frame.size() + kFcsBytes;
  if (sent) {
    count(kTpt);
    count(kGptc);
    count64(kGotcl, octets);
    count64(kTotl, octets);
    if (broadcast) count(kBptc);
    if (multicast) count(kMptc);
    return;
  }
  count(kGprc);
  count64(kGorcl, octets);
  if (broadcast) count(kBprc);
  if (multicast) count(kMprc);
}

}  // namespace pcie::testing
