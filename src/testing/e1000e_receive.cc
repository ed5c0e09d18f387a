// The 82574L model's receive path (82574 datasheet, 7.1): a frame from the wire (or from
// MAC loopback) padded, size-checked and filtered, then written into the buffers of the
// descriptors from RDH on, each descriptor written back after its buffer and RDH advanced.
#include <fmt/format.h>

#include <algorithm>
#include <array>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;

E1000eRxOutcome E1000eModel::Core::deliver(std::span<const std::byte> frame) {
  if (!link) return E1000eRxOutcome::link_down;
  if (!(reg(kRctl) & kRctlEn)) {
    count(kMpc);
    return E1000eRxOutcome::rx_disabled;
  }
  std::vector<std::byte> bytes(frame.begin(), frame.end());
  count(kTpr);
  count64(kTorl, bytes.size() + kFcsBytes);
  if (bytes.size() < kMinFrame) {
    bytes.resize(kMinFrame);  // QEMU pads what its backend hands it short of a minimum frame
    count(kRuc);
  }
  if (bytes.size() > ((reg(kRctl) & kRctlLpe) ? kMaxLongFrame : kMaxFrame)) {
    count(kRoc);
    return E1000eRxOutcome::oversized;
  }
  if (!accepts(bytes)) return E1000eRxOutcome::filtered;
  if (rx.halted || !ring_usable(kRxRing)) {
    count(kMpc);
    return E1000eRxOutcome::stopped;
  }
  const std::size_t frame_size = bytes.size();
  if (!(reg(kRctl) & kRctlSecrc)) bytes.resize(frame_size + kFcsBytes);  // zeros standing for the FCS
  if (bytes.size() > std::uint64_t{owned_count(kRxRing)} * buffer_size()) {
    count(kRnbc);
    count(kMpc);
    raise(kRxo);
    return E1000eRxOutcome::no_descriptors;
  }
  if (!write_frame(bytes)) return E1000eRxOutcome::dma_error;
  count_frame(std::span(bytes).first(frame_size), false);
  raise(kRxt0 | (msix_enabled() ? kRxq0 : 0));
  return E1000eRxOutcome::delivered;
}

// RCTL's filters, then the exact address filters RAL/RAH 0-15, then (multicast) the MTA.
bool E1000eModel::Core::accepts(std::span<const std::byte> frame) const {
  std::array<std::uint8_t, 6> destination{};
  for (std::size_t i = 0; i < destination.size(); ++i) destination[i] = std::to_integer<std::uint8_t>(frame[i]);
  const std::uint32_t rctl = reg(kRctl);
  const bool broadcast = std::all_of(destination.begin(), destination.end(), [](auto b) { return b == 0xff; });
  const bool multicast = (destination[0] & 1) != 0;
  if (broadcast) return (rctl & kRctlBam) != 0;
  if (multicast && (rctl & kRctlMpe)) return true;
  if (!multicast && (rctl & kRctlUpe)) return true;
  for (std::uint64_t entry = kRal0; entry < kRaEnd; entry += 8) {
    const std::uint32_t low = reg(entry), high = reg(entry + 4);
    if (!(high & kRahAv)) continue;
    const std::array<std::uint8_t, 6> address{
        static_cast<std::uint8_t>(low), static_cast<std::uint8_t>(low >> 8), static_cast<std::uint8_t>(low >> 16),
        static_cast<std::uint8_t>(low >> 24), static_cast<std::uint8_t>(high), static_cast<std::uint8_t>(high >> 8)};
    if (address == destination) return true;
  }
  if (!multicast) return false;
  // RCTL.MO picks which 12 bits of the address's last two bytes index the 4096-bit MTA.
  static constexpr std::array<unsigned, 4> kShift{4, 3, 2, 0};
  const unsigned shift = kShift[(rctl >> 12) & 3];
  const unsigned bit = ((destination[5] << 8 | destination[4]) >> shift) & 0xfff;
  return (reg(kMta + 4 * (bit >> 5)) >> (bit & 31)) & 1;
}

// RCTL.BSIZE with BSEX: 2048, 1024, 512, 256 bytes, or with BSEX 16384, 8192, 4096.
std::uint32_t E1000eModel::Core::buffer_size() const {
  const std::uint32_t size_code = (reg(kRctl) >> 16) & 3;
  if (reg(kRctl) & kRctlBsex) return size_code == 0 ? 2048 : 16384u >> (size_code - 1);
  return 2048u >> size_code;
}

// `bytes` into the buffers of the descriptors from RDH on, one buffer each; false when a DMA
// faulted (the queue stopped). A frame that meets the tail (after null descriptors the
// device skipped) ends where it is, without EOP.
bool E1000eModel::Core::write_frame(std::span<const std::byte> bytes) {
  const std::uint32_t chunk = buffer_size();
  std::size_t offset = 0;
  for (std::uint32_t step = 0; offset < bytes.size() && reg(kRdh) != reg(kRdt) && step < ring_size(kRxRing);
       ++step) {
    const std::uint32_t index = reg(kRdh);
    const std::uint64_t address = ring_base(kRxRing) + std::uint64_t{index} * kDescriptorBytes;
    const std::optional<Descriptor> descriptor = fetch(kRxRing, index);
    if (!descriptor) return false;
    Descriptor done = *descriptor;
    const std::uint64_t buffer = load(done, 0, 8);
    if (buffer == 0) {
      done[12] |= std::byte{kRxDd};  // null descriptor padding: DD, all else unchanged (7.1.7.2)
    } else {
      const std::size_t length = std::min<std::size_t>(chunk, bytes.size() - offset);
      if (!dma_write(buffer, bytes.subspan(offset, length), fmt::format("RX descriptor {}'s buffer", index))) {
        rx.halted = true;
        return false;
      }
      offset += length;
      store(done, 8, length, 2);  // length
      store(done, 10, 0, 2);      // packet checksum: no offload
      store(done, 12, kRxDd | (offset == bytes.size() ? kRxEop : 0), 1);
      store(done, 13, 0, 1);  // errors
      store(done, 14, 0, 2);  // special
    }
    if (!dma_write(address, done, fmt::format("RX descriptor {}", index))) {
      rx.halted = true;
      return false;
    }
    advance_head(kRxRing);
  }
  return true;
}

}  // namespace pcie::testing
