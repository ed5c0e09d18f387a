// The 82574L model's descriptor rings (82574 datasheet, 7.1.8 and 7.2): the base, length,
// head and tail registers and their rules, descriptor prefetch at tail writes and the check
// that a prefetched descriptor did not change before use, the DMA every queue does (faults
// recorded and the queue stopped), and memory the driver unmapped under a live queue.
#include <fmt/format.h>

#include <cstring>

#include "src/testing/e1000e_core.h"

namespace pcie::testing {

using namespace e1000e;

namespace {

std::string register_name(const RingRegisters& ring, std::uint64_t offset) {
  const char prefix = ring.receive() ? 'R' : 'T';
  if (offset == ring.base_low) return fmt::format("{}DBAL", prefix);
  if (offset == ring.base_high) return fmt::format("{}DBAH", prefix);
  if (offset == ring.length) return fmt::format("{}DLEN", prefix);
  if (offset == ring.head) return fmt::format("{}DH", prefix);
  return fmt::format("{}DT", prefix);
}

std::string control_name(const RingRegisters& ring) { return ring.receive() ? "RCTL.EN" : "TCTL.EN"; }

std::string hex(const Descriptor& descriptor) {
  std::string text;
  for (const std::byte byte : descriptor) text += fmt::format("{:02x}", std::to_integer<unsigned>(byte));
  return text;
}

bool overlap(std::uint64_t a, std::uint64_t a_length, std::uint64_t b, std::uint64_t b_length) {
  if (a_length == 0 || b_length == 0) return false;
  return a >= b ? a - b < b_length : b - a < a_length;  // overflow-safe
}

}  // namespace

std::uint64_t e1000e::load(const Descriptor& descriptor, std::size_t offset, std::size_t bytes) {
  std::uint64_t value = 0;
  for (std::size_t i = 0; i < bytes; ++i) value |= std::to_integer<std::uint64_t>(descriptor[offset + i]) << (8 * i);
  return value;
}

void e1000e::store(Descriptor& descriptor, std::size_t offset, std::uint64_t value, std::size_t bytes) {
  for (std::size_t i = 0; i < bytes; ++i) descriptor[offset + i] = static_cast<std::byte>(value >> (8 * i));
}

// ---- Geometry ----

std::uint64_t E1000eModel::Core::ring_base(const RingRegisters& ring) const {
  return std::uint64_t{reg(ring.base_high)} << 32 | reg(ring.base_low);
}

std::uint32_t E1000eModel::Core::ring_size(const RingRegisters& ring) const {
  return reg(ring.length) / kDescriptorBytes;
}

bool E1000eModel::Core::ring_enabled(const RingRegisters& ring) const {
  return (reg(ring.control) & ring.enable) != 0;
}

bool E1000eModel::Core::ring_usable(const RingRegisters& ring) const {
  const std::uint32_t size = ring_size(ring);
  return size != 0 && ring_base(ring) != 0 && reg(ring.head) < size && reg(ring.tail) < size;
}

std::uint32_t E1000eModel::Core::owned_count(const RingRegisters& ring) const {
  const std::uint32_t size = ring_size(ring);
  if (size == 0 || reg(ring.head) >= size || reg(ring.tail) >= size) return 0;
  return (reg(ring.tail) + size - reg(ring.head)) % size;
}

// ---- Registers ----

void E1000eModel::Core::write_ring_register(const RingRegisters& ring, std::uint64_t offset, std::uint32_t value) {
  Queue& state = queue(ring);
  const std::string name = register_name(ring, offset);
  const bool enabled = ring_enabled(ring);
  if (enabled) {
    violation(e1000e_rule::kRingChangedWhileEnabled,
              fmt::format("{} written (0x{:x}) while {} is set; program the ring before enabling the queue", name,
                          value, control_name(ring)),
              ring.cite);
  }
  if (offset == ring.base_low) {
    if (value % 16 != 0) {
      violation(e1000e_rule::kRingAlignment,
                fmt::format("{} 0x{:x} is not 16-byte aligned; the 82574 ignores bits 3:0", name, value),
                ring.cite);
    }
    value &= ~0xfu;
    state.base_written = true;
  } else if (offset == ring.length) {
    if (value % 128 != 0 || (value == 0 && enabled)) {
      violation(e1000e_rule::kRingLength,
                fmt::format("{} 0x{:x} is {}; it must be a non-zero multiple of 128 bytes (8 descriptors)", name,
                            value, value == 0 ? "zero while the queue is enabled" : "not a multiple of 128"),
                ring.cite);
    }
    value &= 0xfff80;
    state.length_written = true;
  } else if (offset == ring.head) {
    value &= 0xffff;
    if (value != 0 && value >= ring_size(ring)) {
      violation(e1000e_rule::kIndexBeyondRing,
                fmt::format("{} {} is past the ring's {} descriptors (ignored)", name, value, ring_size(ring)),
                ring.cite);
      return;
    }
  }
  reg(offset) = value;
  state.owned.clear();  // the ring moved under what was prefetched
}

void E1000eModel::Core::write_tail(const RingRegisters& ring, std::uint32_t value) {
  value &= 0xffff;
  const std::uint32_t size = ring_size(ring);
  const std::uint32_t old = reg(ring.tail);
  const std::string name = register_name(ring, ring.tail);
  if (value != 0 && value >= size) {
    violation(e1000e_rule::kIndexBeyondRing,
              fmt::format("{} {} is past the ring's {} descriptors (ignored)", name, value, size), ring.cite);
    return;
  }
  const bool live = ring_enabled(ring) && ring_usable(ring);
  if (live) {
    // The driver may hand over at most the descriptors it owns: size - 1 - those the device has.
    const std::uint32_t advance = (value + size - old) % size;
    const std::uint32_t room = size - 1 - owned_count(ring);
    if (advance > room) {
      violation(e1000e_rule::kTailPastHead,
                fmt::format("{} {} -> {} with {}DH at {}: {} descriptors handed over where the driver owned {}; "
                            "the tail passed the head, handing the device descriptors it still owns (ignored)",
                            name, old, value, ring.receive() ? 'R' : 'T', reg(ring.head), advance, room),
                ring.cite);
      return;
    }
  }
  reg(ring.tail) = value;
  if (live && !queue(ring).halted) prefetch(ring, old, value);
  if (!ring.receive() && options.completion == Completion::immediate) (void)transmit();
}

// RCTL.EN or TCTL.EN changed: at the enable the ring must be set, and what the driver
// handed over before is fetched; at the disable the device gives up its prefetched copies.
void E1000eModel::Core::enable_changed(const RingRegisters& ring, bool was_enabled) {
  const bool enabled = ring_enabled(ring);
  if (enabled == was_enabled) return;
  Queue& state = queue(ring);
  state.owned.clear();
  if (!enabled) {
    if (!ring.receive()) tx_frame = {};  // a frame cut short by the disable is not sent
    return;
  }
  const char prefix = ring.receive() ? 'R' : 'T';
  if (!state.base_written || !state.length_written) {
    violation(e1000e_rule::kRingNotSet,
              fmt::format("{} set before {}DBAL and {}DLEN were written", control_name(ring), prefix, prefix),
              ring.cite);
  } else if (ring_size(ring) == 0) {
    violation(e1000e_rule::kRingLength, fmt::format("{} set with {}DLEN 0", control_name(ring), prefix), ring.cite);
  } else if (ring_base(ring) == 0) {
    violation(e1000e_rule::kRingNotSet, fmt::format("{} set with the ring at bus address 0", control_name(ring)),
              ring.cite);
  }
  if (ring_usable(ring) && !state.halted) prefetch(ring, reg(ring.head), reg(ring.tail));
  if (!ring.receive() && options.completion == Completion::immediate) (void)transmit();
}

// ---- Descriptors ----

void E1000eModel::Core::prefetch(const RingRegisters& ring, std::uint32_t from, std::uint32_t to) {
  Queue& state = queue(ring);
  const std::uint32_t size = ring_size(ring);
  for (std::uint32_t index = from; index != to; index = (index + 1) % size) {
    Descriptor descriptor{};
    const std::uint64_t address = ring_base(ring) + std::uint64_t{index} * kDescriptorBytes;
    if (!dma_read(address, descriptor, fmt::format("{} descriptor {}", ring.name, index))) {
      state.halted = true;
      return;
    }
    if (ring.receive() && load(descriptor, 0, 8) == 0) {
      violation(e1000e_rule::kRxBufferNull,
                fmt::format("RX descriptor {} was handed over with buffer address 0; the 82574 skips it (null "
                            "descriptor padding) and a frame lands in the next one",
                            index),
                kCiteNullDescriptor);
    }
    state.owned[index] = descriptor;
  }
}

std::optional<Descriptor> E1000eModel::Core::fetch(const RingRegisters& ring, std::uint32_t index) {
  Queue& state = queue(ring);
  Descriptor descriptor{};
  const std::uint64_t address = ring_base(ring) + std::uint64_t{index} * kDescriptorBytes;
  if (!dma_read(address, descriptor, fmt::format("{} descriptor {}", ring.name, index))) {
    state.halted = true;
    return std::nullopt;
  }
  if (auto found = state.owned.find(index); found != state.owned.end() && found->second != descriptor) {
    violation(e1000e_rule::kDescriptorChanged,
              fmt::format("{} descriptor {} at 0x{:x} changed after the tail write handed it over (then {}, now "
                          "{}); the 82574 may already have fetched it",
                          ring.name, index, address, hex(found->second), hex(descriptor)),
              ring.cite);
  }
  return descriptor;
}

void E1000eModel::Core::advance_head(const RingRegisters& ring) {
  queue(ring).owned.erase(reg(ring.head));
  reg(ring.head) = (reg(ring.head) + 1) % ring_size(ring);
}

// ---- DMA ----

namespace {
// The violation for a DMA the DeviceModel refused.
void report(E1000eModel::Core& core, const Error& error, std::uint64_t bus, std::size_t length,
            std::string_view what, bool writes) {
  if (error.code == Errc::permission_denied) {
    core.violation(e1000e_rule::kDmaWithoutBusMaster,
                   fmt::format("the NIC tried to {} {} at 0x{:x} with bus mastering off: the driver let go of a "
                               "device it had not stopped (clear RCTL.EN and TCTL.EN first)",
                               writes ? "write" : "read", what, bus),
                   kCiteBusMaster);
    return;
  }
  core.violation(e1000e_rule::kDmaFault,
                 fmt::format("the driver gave the NIC bus address 0x{:x} for {} (0x{:x} bytes), not mapped for the "
                             "device to {}; the queue stops",
                             bus, what, length, writes ? "write" : "read"),
                 what.starts_with("TX") ? kCiteTransmit : kCiteReceive);
}
}  // namespace

bool E1000eModel::Core::dma_read(std::uint64_t bus, std::span<std::byte> into, std::string_view what) {
  auto done = device.dma_read(bus, into);
  if (!done) report(*this, done.error(), bus, into.size(), what, false);
  return done.has_value();
}

bool E1000eModel::Core::dma_write(std::uint64_t bus, std::span<const std::byte> from, std::string_view what) {
  auto done = device.dma_write(bus, from);
  if (!done) report(*this, done.error(), bus, from.size(), what, true);
  return done.has_value();
}

// ---- Memory the driver unmapped ----

void E1000eModel::Core::unmapped(std::uint64_t bus, std::uint64_t size) {
  for (const RingRegisters* ring : {&kRxRing, &kTxRing}) {
    if (!ring_enabled(*ring) || ring_size(*ring) == 0) continue;
    const auto report_unmapped = [&](const std::string& what) {
      violation(e1000e_rule::kLiveMemoryUnmapped,
                fmt::format("the buffer at bus address 0x{:x} (0x{:x} bytes) was unmapped while {} and {} is set; "
                            "clear {} and wait for the queue to stop first",
                            bus, size, what, control_name(*ring), control_name(*ring)),
                ring->cite);
    };
    if (overlap(bus, size, ring_base(*ring), std::uint64_t{ring_size(*ring)} * kDescriptorBytes)) {
      report_unmapped(fmt::format("it holds the {} descriptor ring", ring->name));
    }
    for (const auto& [index, descriptor] : queue(*ring).owned) {
      const std::uint64_t buffer = load(descriptor, 0, 8);
      const std::uint64_t length = ring->receive() ? buffer_size() : load(descriptor, 8, 2);
      if (overlap(bus, size, buffer, length)) {
        report_unmapped(fmt::format("it holds the buffer of {} descriptor {}, which the device owns", ring->name,
                                    index));
        break;
      }
    }
  }
}

}  // namespace pcie::testing
