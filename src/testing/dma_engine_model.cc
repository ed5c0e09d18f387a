#include "pcie/testing/dma_engine_model.h"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <limits>
#include <mutex>
#include <optional>
#include <utility>

namespace pcie::testing {

namespace {

using Direction = DmaEngineModel::Direction;

// PG195 v4.1, "Register Space": the DMA BAR's targets, 4 KiB each, channels 0x100 apart.
constexpr std::uint64_t kBarSize = 0x10000;
constexpr std::uint64_t kH2cChannels = 0x0000;
constexpr std::uint64_t kC2hChannels = 0x1000;
constexpr std::uint64_t kIrqBlock = 0x2000;
constexpr std::uint64_t kConfigBlock = 0x3000;
constexpr std::uint64_t kH2cSgdma = 0x4000;
constexpr std::uint64_t kC2hSgdma = 0x5000;
constexpr std::uint64_t kSgdmaCommon = 0x6000;
constexpr std::uint64_t kChannelStride = 0x100;
constexpr std::uint32_t kIdentifier = 0x1fc00000;  // subsystem 0x1fc in 31:20, target in 19:16
constexpr std::uint32_t kVersion = 0x06;           // 2017.1 and later

// H2C/C2H Channel registers (PG195 tables "H2C Channel Registers", "C2H Channel Registers").
constexpr std::uint64_t kControl = 0x04, kControlW1s = 0x08, kControlW1c = 0x0c;
constexpr std::uint64_t kStatus = 0x40, kStatusRc = 0x44, kCompletedCount = 0x48, kAlignments = 0x4c;
constexpr std::uint64_t kPollWbLo = 0x88, kPollWbHi = 0x8c;
constexpr std::uint64_t kIeMask = 0x90, kIeMaskW1s = 0x94, kIeMaskW1c = 0x98;
// SGDMA registers ("H2C SGDMA Registers", "C2H SGDMA Registers").
constexpr std::uint64_t kDescriptorLo = 0x80, kDescriptorHi = 0x84, kDescriptorAdjacent = 0x88;
// IRQ Block registers ("IRQ Block Registers").
constexpr std::uint64_t kChannelIntEnable = 0x10, kChannelIntEnableW1s = 0x14, kChannelIntEnableW1c = 0x18;
constexpr std::uint64_t kChannelIntRequest = 0x44, kChannelIntPending = 0x4c;
constexpr std::uint64_t kChannelVectorH2c = 0xa0, kChannelVectorC2h = 0xa4;

// Control bits; each ie_* bit enables logging of the Status bit in the same position.
constexpr std::uint32_t kRun = 1u << 0;
constexpr std::uint32_t kPollModeWriteBack = 1u << 26;
// Status bits.
constexpr std::uint32_t kBusy = 1u << 0;
constexpr std::uint32_t kDescriptorStopped = 1u << 1;
constexpr std::uint32_t kDescriptorCompleted = 1u << 2;
constexpr std::uint32_t kMagicStopped = 1u << 4;
constexpr std::uint32_t kIdleStopped = 1u << 6;
constexpr std::uint32_t kReadError = 1u << 9;         // H2C: unsupported request; C2H: AXI decode error
constexpr std::uint32_t kWriteError = 1u << 14;       // H2C: AXI decode error
constexpr std::uint32_t kDescriptorError = 1u << 19;  // unsupported request
constexpr std::uint32_t kErrorBits = 0x00fffe38;      // align, magic, length, read, write, descriptor errors

// Descriptors ("Descriptors"): 32 bytes, little-endian words.
constexpr std::uint64_t kDescriptorBytes = 32;
constexpr std::uint32_t kMagic = 0xad4b;
constexpr std::uint32_t kStop = 1u << 0, kCompleted = 1u << 1;
constexpr std::uint32_t kLengthMask = 0x0fffffff;
constexpr std::uint32_t kWriteBackCountMask = 0x00ffffff, kWriteBackError = 1u << 31;

struct Descriptor {
  std::uint32_t control = 0;
  std::uint32_t length = 0;
  std::uint64_t source = 0;
  std::uint64_t destination = 0;
  std::uint64_t next = 0;
  std::uint32_t next_adjacent() const { return (control >> 8) & 0x3f; }
};

Descriptor decode(const std::array<std::byte, kDescriptorBytes>& bytes) {
  std::array<std::uint32_t, 8> words{};
  std::memcpy(words.data(), bytes.data(), bytes.size());
  return {words[0], words[1], words[2] | std::uint64_t{words[3]} << 32, words[4] | std::uint64_t{words[5]} << 32,
          words[6] | std::uint64_t{words[7]} << 32};
}

struct Fetched {
  std::uint64_t address = 0;
  std::array<std::byte, kDescriptorBytes> bytes{};
};

struct Channel {
  Direction direction = Direction::h2c;
  unsigned index = 0;
  unsigned irq_bit = 0;  // in the IRQ block: H2C channels first, then C2H
  std::string name;      // "H2C0"
  std::uint32_t control = 0;
  std::uint32_t status = 0;  // without Busy, which `busy` gives
  std::uint32_t completed = 0;
  std::uint32_t ie_mask = 0;
  std::uint64_t descriptor_address = 0;
  std::uint32_t adjacent = 0;
  std::uint64_t writeback_address = 0;
  bool busy = false;
  // The run in progress: the block fetched and the place in it, where the next block is.
  std::vector<Fetched> block;
  std::size_t position = 0;
  std::uint64_t next_address = 0;
  std::uint32_t next_adjacent = 0;
  std::uint32_t run_index = 0;
  std::vector<Fetched> fetched;  // every descriptor of the run, to catch changes
  std::optional<std::uint32_t> flip_magic_at;
  std::optional<std::uint32_t> writeback_instead;
};

}  // namespace

struct DmaEngineModel::Engine {
  Engine(DeviceModel device_model, RegisterModel& registers, const DmaEngineModelOptions& model_options);

  // The BAR's hooks.
  std::uint64_t read(const RegisterAccess& access);
  std::uint64_t write(const RegisterAccess& access);
  std::uint64_t read_channel(Channel& channel, std::uint64_t reg);
  void write_channel(Channel& channel, std::uint64_t reg, std::uint32_t value);
  std::uint64_t read_irq_block(std::uint64_t reg) const;
  void write_irq_block(std::uint64_t reg, std::uint32_t value);
  void write_sgdma(Channel& channel, std::uint64_t reg, std::uint32_t value);
  Channel* channel_at(std::uint64_t target, std::uint64_t offset);

  // The engine.
  void set_control(Channel& channel, std::uint32_t control);
  void start(Channel& channel);
  std::size_t run(Channel& channel, std::size_t limit);
  bool step(Channel& channel);
  bool fetch_block(Channel& channel);
  bool move_data(Channel& channel, const Descriptor& descriptor);
  void check_block_links(Channel& channel, const Fetched& fetched, const Descriptor& descriptor);
  void check_unchanged(Channel& channel);
  void stop_idle(Channel& channel);
  void fail(Channel& channel, std::uint32_t status_bit);
  void log_status(Channel& channel, std::uint32_t bits);
  void write_back(Channel& channel, bool error);
  void update_request(Channel& channel);
  void send_interrupt(const Channel& channel);
  Result<void> dma(const Channel& channel, std::uint64_t bus, std::span<std::byte> host_side, bool device_writes);
  void violation(std::string text) { violations.push_back(std::move(text)); }
  Channel& channel(Direction direction, unsigned index) {
    return channels[(direction == Direction::h2c ? 0 : options.channels) + index];
  }

  DeviceModel device;
  RegisterModel& bar;
  DmaEngineModelOptions options;
  mutable std::mutex mutex;
  std::vector<std::byte> card;
  std::vector<Channel> channels;  // H2C 0..n-1, then C2H 0..n-1: the IRQ block's bit order
  std::uint32_t channel_int_enable = 0;
  std::uint32_t channel_int_request = 0;
  std::uint64_t completed_total = 0;
  std::vector<std::string> violations;
};

namespace {

using Engine = DmaEngineModel::Engine;

// The identifier registers and the other read-only ones, set in the BAR's storage.
void set_identifiers(RegisterModel& bar, unsigned channels) {
  auto identify = [&](std::uint64_t offset, std::uint32_t target, unsigned channel) {
    bar.set32(offset, kIdentifier | target << 16 | channel << 8 | kVersion);
    bar.read_only(offset, Width::bits32);
  };
  for (unsigned c = 0; c < channels; ++c) {
    identify(kH2cChannels + c * kChannelStride, 0, c);
    identify(kC2hChannels + c * kChannelStride, 1, c);
    identify(kH2cSgdma + c * kChannelStride, 4, c);
    identify(kC2hSgdma + c * kChannelStride, 5, c);
    for (const std::uint64_t block : {kH2cChannels, kC2hChannels}) {
      // Any address alignment, length granularity 1, 64 address bits.
      bar.set32(block + c * kChannelStride + kAlignments, 0x00010140);
      bar.read_only(block + c * kChannelStride + kAlignments, Width::bits32);
    }
  }
  identify(kIrqBlock, 2, 0);
  identify(kConfigBlock, 3, 0);
  identify(kSgdmaCommon, 6, 0);
  // Channel Vector Numbers, 5 bits a channel, a byte apart: the IRQ block's bit order.
  std::uint32_t h2c = 0, c2h = 0;
  for (unsigned c = 0; c < channels; ++c) {
    h2c |= c << (8 * c);
    c2h |= (channels + c) << (8 * c);
  }
  bar.set32(kIrqBlock + kChannelVectorH2c, h2c);
  bar.set32(kIrqBlock + kChannelVectorC2h, c2h);
}

// Read and write hooks on `offset` that reach the engine while it lives.
void hook(RegisterModel& bar, std::uint64_t offset, const std::weak_ptr<Engine>& engine) {
  bar.on_read(offset, [engine](const RegisterAccess& access) -> std::uint64_t {
    const auto alive = engine.lock();
    return alive ? alive->read(access) : access.value;
  });
  bar.on_write(offset, [engine](const RegisterAccess& access) -> std::uint64_t {
    const auto alive = engine.lock();
    return alive ? alive->write(access) : access.value;
  });
}

void hook_registers(RegisterModel& bar, unsigned channels, const std::weak_ptr<Engine>& engine) {
  for (unsigned c = 0; c < channels; ++c) {
    for (const std::uint64_t block : {kH2cChannels, kC2hChannels}) {
      for (const std::uint64_t reg : {kControl, kControlW1s, kControlW1c, kStatus, kStatusRc, kCompletedCount,
                                      kPollWbLo, kPollWbHi, kIeMask, kIeMaskW1s, kIeMaskW1c}) {
        hook(bar, block + c * kChannelStride + reg, engine);
      }
    }
    for (const std::uint64_t block : {kH2cSgdma, kC2hSgdma}) {
      for (const std::uint64_t reg : {kDescriptorLo, kDescriptorHi, kDescriptorAdjacent}) {
        hook(bar, block + c * kChannelStride + reg, engine);
      }
    }
  }
  for (const std::uint64_t reg :
       {kChannelIntEnable, kChannelIntEnableW1s, kChannelIntEnableW1c, kChannelIntRequest, kChannelIntPending}) {
    hook(bar, kIrqBlock + reg, engine);
  }
}

}  // namespace

DmaEngineModel::Engine::Engine(DeviceModel device_model, RegisterModel& registers,
                               const DmaEngineModelOptions& model_options)
    : device(std::move(device_model)), bar(registers), options(model_options), card(model_options.card_memory_bytes) {
  for (const Direction direction : {Direction::h2c, Direction::c2h}) {
    for (unsigned c = 0; c < options.channels; ++c) {
      Channel channel;
      channel.direction = direction;
      channel.index = c;
      channel.irq_bit = static_cast<unsigned>(channels.size());
      channel.name = fmt::format("{}{}", direction == Direction::h2c ? "H2C" : "C2H", c);
      channels.push_back(std::move(channel));
    }
  }
}

// ---- Registers ----

Channel* DmaEngineModel::Engine::channel_at(std::uint64_t target, std::uint64_t offset) {
  const std::uint64_t index = (offset & 0xfff) / kChannelStride;
  if (index >= options.channels) return nullptr;
  const bool h2c = target == kH2cChannels || target == kH2cSgdma;
  return &channel(h2c ? Direction::h2c : Direction::c2h, static_cast<unsigned>(index));
}

std::uint64_t DmaEngineModel::Engine::read(const RegisterAccess& access) {
  const std::lock_guard lock(mutex);
  if (access.width != Width::bits32) {
    violation(fmt::format("a {}-bit read at 0x{:x}: XDMA registers take 32-bit accesses (PG195)",
                          bit_count(access.width), access.offset));
  }
  const std::uint64_t target = access.offset & ~std::uint64_t{0xfff};
  const std::uint64_t reg = access.offset & 0xff;
  if (target == kIrqBlock) return read_irq_block(access.offset & 0xfff);
  Channel* channel = channel_at(target, access.offset);
  if (channel == nullptr) return access.value;
  if (target == kH2cSgdma || target == kC2hSgdma) {
    if (reg == kDescriptorLo) return channel->descriptor_address & 0xffffffffu;
    if (reg == kDescriptorHi) return channel->descriptor_address >> 32;
    return channel->adjacent;
  }
  return read_channel(*channel, reg);
}

std::uint64_t DmaEngineModel::Engine::read_channel(Channel& channel, std::uint64_t reg) {
  switch (reg) {
    case kControl:
    case kControlW1s:
    case kControlW1c:
      return channel.control;
    case kStatus:
      return channel.status | (channel.busy ? kBusy : 0);
    case kStatusRc: {
      const std::uint32_t status = channel.status | (channel.busy ? kBusy : 0);
      channel.status = 0;  // clear on read; Busy is the engine's state, not a logged event
      update_request(channel);
      return status;
    }
    case kCompletedCount:
      return channel.completed;
    case kPollWbLo:
      return channel.writeback_address & 0xffffffffu;
    case kPollWbHi:
      return channel.writeback_address >> 32;
    default:
      return channel.ie_mask;  // the mask and its W1S/W1C aliases
  }
}

std::uint64_t DmaEngineModel::Engine::read_irq_block(std::uint64_t reg) const {
  switch (reg) {
    case kChannelIntRequest:
      return channel_int_request;
    case kChannelIntPending:
      return channel_int_request & channel_int_enable;
    default:
      return channel_int_enable;  // the enable register and its W1S/W1C aliases
  }
}

std::uint64_t DmaEngineModel::Engine::write(const RegisterAccess& access) {
  const std::lock_guard lock(mutex);
  if (access.width != Width::bits32) {
    violation(fmt::format("a {}-bit write at 0x{:x}: XDMA registers take 32-bit accesses (PG195)",
                          bit_count(access.width), access.offset));
  }
  const auto value = static_cast<std::uint32_t>(access.value);
  const std::uint64_t target = access.offset & ~std::uint64_t{0xfff};
  if (target == kIrqBlock) {
    write_irq_block(access.offset & 0xfff, value);
    return access.value;
  }
  Channel* channel = channel_at(target, access.offset);
  if (channel == nullptr) return access.value;
  if (target == kH2cSgdma || target == kC2hSgdma) {
    write_sgdma(*channel, access.offset & 0xff, value);
  } else {
    write_channel(*channel, access.offset & 0xff, value);
  }
  return access.value;
}

void DmaEngineModel::Engine::write_channel(Channel& channel, std::uint64_t reg, std::uint32_t value) {
  switch (reg) {
    case kControl:
      return set_control(channel, value);
    case kControlW1s:
      return set_control(channel, channel.control | value);
    case kControlW1c:
      return set_control(channel, channel.control & ~value);
    case kStatus:
      channel.status &= ~value;  // write 1 to clear
      return update_request(channel);
    case kPollWbLo:
    case kPollWbHi:
      if (channel.busy) violation(fmt::format("{}'s Poll Mode Write Back Address written while busy", channel.name));
      channel.writeback_address = reg == kPollWbLo
                                      ? (channel.writeback_address & ~0xffffffffull) | value
                                      : (channel.writeback_address & 0xffffffffull) | std::uint64_t{value} << 32;
      return;
    case kIeMask:
      channel.ie_mask = value;
      return update_request(channel);
    case kIeMaskW1s:
      channel.ie_mask |= value;
      return update_request(channel);
    case kIeMaskW1c:
      channel.ie_mask &= ~value;
      return update_request(channel);
    default:
      return;  // read-only
  }
}

void DmaEngineModel::Engine::write_sgdma(Channel& channel, std::uint64_t reg, std::uint32_t value) {
  if (channel.busy) {
    violation(fmt::format("{}'s SGDMA descriptor registers written while the channel is busy", channel.name));
  }
  if (reg == kDescriptorLo) channel.descriptor_address = (channel.descriptor_address & ~0xffffffffull) | value;
  if (reg == kDescriptorHi) {
    channel.descriptor_address = (channel.descriptor_address & 0xffffffffull) | std::uint64_t{value} << 32;
  }
  if (reg == kDescriptorAdjacent) channel.adjacent = value & 0x3f;
}

void DmaEngineModel::Engine::write_irq_block(std::uint64_t reg, std::uint32_t value) {
  const std::uint32_t before = channel_int_enable;
  if (reg == kChannelIntEnable) channel_int_enable = value;
  if (reg == kChannelIntEnableW1s) channel_int_enable |= value;
  if (reg == kChannelIntEnableW1c) channel_int_enable &= ~value;
  // A request pending while its channel was disabled is sent once it is enabled.
  for (const Channel& channel : channels) {
    const std::uint32_t bit = 1u << channel.irq_bit;
    if ((channel_int_request & bit) && (channel_int_enable & bit) && !(before & bit)) send_interrupt(channel);
  }
}

// ---- Interrupts and status ----

void DmaEngineModel::Engine::log_status(Channel& channel, std::uint32_t bits) {
  const std::uint32_t logged = bits & channel.control;  // ie_* bits sit where their status bits do
  channel.status |= logged;
  if ((logged & channel.ie_mask) == 0) return;
  const std::uint32_t bit = 1u << channel.irq_bit;
  channel_int_request |= bit;
  if (channel_int_enable & bit) send_interrupt(channel);
}

void DmaEngineModel::Engine::update_request(Channel& channel) {
  if ((channel.status & channel.ie_mask) == 0) channel_int_request &= ~(1u << channel.irq_bit);
}

void DmaEngineModel::Engine::send_interrupt(const Channel& channel) {
  const std::uint64_t reg = kIrqBlock + (channel.direction == Direction::h2c ? kChannelVectorH2c : kChannelVectorC2h);
  const unsigned vector = (bar.get32(reg) >> (8 * channel.index)) & 0x1f;
  if (device.interrupts_enabled(IrqKind::msix)) {
    (void)device.fire(IrqKind::msix, vector);  // false when masked or off: the driver's choice
  } else {
    (void)device.fire(IrqKind::msi, 0);
  }
}

// ---- The engine ----

void DmaEngineModel::Engine::set_control(Channel& channel, std::uint32_t control) {
  const std::uint32_t before = channel.control;
  channel.control = control;
  if (!(before & kRun) && (control & kRun)) return start(channel);
  if ((before & kRun) && !(control & kRun) && channel.busy && options.execution == Execution::on_run) {
    stop_idle(channel);  // nothing is in progress between two register writes
  }
}

void DmaEngineModel::Engine::start(Channel& channel) {
  if (channel.busy) violation(fmt::format("Run set again on {} before it stopped (Busy still set)", channel.name));
  channel.status = 0;  // PG195: status and the count reset when Run is set
  channel.completed = 0;
  update_request(channel);
  if (channel.descriptor_address == 0) {
    violation(fmt::format("Run set on {} with no descriptor address", channel.name));
  }
  if ((channel.control & kPollModeWriteBack) && channel.writeback_address == 0) {
    violation(fmt::format("poll-mode write-back enabled on {} with no write-back address", channel.name));
  }
  channel.busy = true;
  channel.block.clear();
  channel.position = 0;
  channel.next_address = channel.descriptor_address;
  channel.next_adjacent = channel.adjacent;
  channel.run_index = 0;
  channel.fetched.clear();
  // A chain that loops never stops: the bound leaves it busy, as the IP would stay.
  if (options.execution == Execution::on_run) (void)run(channel, std::size_t{1} << 20);
}

std::size_t DmaEngineModel::Engine::run(Channel& channel, std::size_t limit) {
  std::size_t done = 0;
  while (channel.busy && done < limit && step(channel)) ++done;
  return done;
}

// One descriptor: fetched (with its block) if need be, checked, its data moved, counted.
// False when the channel stopped on an error before completing it.
bool DmaEngineModel::Engine::step(Channel& channel) {
  if (channel.position == channel.block.size() && !fetch_block(channel)) return false;
  const Fetched& fetched = channel.block[channel.position++];
  const bool last_in_block = channel.position == channel.block.size();
  Descriptor descriptor = decode(fetched.bytes);
  if (channel.flip_magic_at == channel.run_index) {
    descriptor.control ^= 0x00010000u;
    channel.flip_magic_at.reset();
  }
  ++channel.run_index;
  if ((descriptor.control >> 16) != kMagic) {
    fail(channel, kMagicStopped);
    return false;
  }
  if (!last_in_block) check_block_links(channel, fetched, descriptor);
  if (!move_data(channel, descriptor)) return false;
  ++channel.completed;
  ++completed_total;
  if (descriptor.control & kCompleted) {
    write_back(channel, false);
    log_status(channel, kDescriptorCompleted);
  }
  if (descriptor.control & kStop) {
    channel.busy = false;
    log_status(channel, kDescriptorStopped);
  } else if (last_in_block) {
    channel.next_address = descriptor.next;
    channel.next_adjacent = descriptor.next_adjacent();
  }
  return true;
}

bool DmaEngineModel::Engine::fetch_block(Channel& channel) {
  const std::uint64_t address = channel.next_address;
  const std::size_t count = 1 + channel.next_adjacent;
  const std::uint64_t bytes = count * kDescriptorBytes;
  if (address % kDescriptorBytes != 0) {
    violation(fmt::format("{}: descriptor address 0x{:x} is not 32-byte aligned", channel.name, address));
  }
  if (address / 4096 != (address + bytes - 1) / 4096) {
    violation(
        fmt::format("{}: a block of {} adjacent descriptors at 0x{:x} crosses a 4 KiB boundary (PG195, "
                    "Nxt_adj)",
                    channel.name, count, address));
  }
  std::vector<std::byte> raw(bytes);
  if (auto read = dma(channel, address, raw, false); !read) {
    fail(channel, kDescriptorError);
    return false;
  }
  channel.block.assign(count, {});
  for (std::size_t i = 0; i < count; ++i) {
    channel.block[i].address = address + i * kDescriptorBytes;
    std::memcpy(channel.block[i].bytes.data(), raw.data() + i * kDescriptorBytes, kDescriptorBytes);
  }
  channel.position = 0;
  channel.fetched.insert(channel.fetched.end(), channel.block.begin(), channel.block.end());
  return true;
}

// Inside a block the engine takes the next descriptor from memory right after this one:
// the driver's next pointer and Stop bit must agree with that.
void DmaEngineModel::Engine::check_block_links(Channel& channel, const Fetched& fetched, const Descriptor& descriptor) {
  if (descriptor.control & kStop) {
    violation(fmt::format("{}: descriptor at 0x{:x} has Stop but is not the last of its adjacent block (PG195)",
                          channel.name, fetched.address));
  }
  if (descriptor.next != fetched.address + kDescriptorBytes) {
    violation(
        fmt::format("{}: descriptor at 0x{:x} links to 0x{:x}, but Nxt_adj made the engine fetch 0x{:x} "
                    "after it",
                    channel.name, fetched.address, descriptor.next, fetched.address + kDescriptorBytes));
  }
}

bool DmaEngineModel::Engine::move_data(Channel& channel, const Descriptor& descriptor) {
  const std::uint64_t length = descriptor.length & kLengthMask;
  const bool h2c = channel.direction == Direction::h2c;
  const std::uint64_t card_address = h2c ? descriptor.destination : descriptor.source;
  const std::uint64_t host_address = h2c ? descriptor.source : descriptor.destination;
  if (card_address > card.size() || length > card.size() - card_address) {
    fail(channel, h2c ? kWriteError : kReadError);  // the AXI interconnect's decode error
    return false;
  }
  const std::span<std::byte> card_side(card.data() + card_address, length);
  auto moved = dma(channel, host_address, card_side, !h2c);
  if (!moved && h2c) {
    fail(channel, kReadError);
    return false;
  }
  return true;  // a C2H write that faulted was a posted write: dropped (dma() recorded it)
}

// A DMA by `channel`'s engine; faults the driver caused are recorded as violations.
Result<void> DmaEngineModel::Engine::dma(const Channel& channel, std::uint64_t bus, std::span<std::byte> host_side,
                                         bool device_writes) {
  Result<void> done = device_writes ? device.dma_write(bus, host_side) : device.dma_read(bus, host_side);
  if (!done && done.error().code == Errc::permission_denied) {
    violation(
        fmt::format("{} attempted DMA at 0x{:x} with bus mastering off: the driver let go of a device it had "
                    "not stopped",
                    channel.name, bus));
  } else if (!done) {
    violation(
        fmt::format("{}: the driver gave the engine bus address 0x{:x} (0x{:x} bytes), not mapped for the "
                    "device to {}",
                    channel.name, bus, host_side.size(), device_writes ? "write" : "read"));
  }
  return done;
}

// The channel stops on an error, which the driver learns of from Status (and the write-back).
void DmaEngineModel::Engine::fail(Channel& channel, std::uint32_t status_bit) {
  channel.busy = false;
  write_back(channel, true);
  log_status(channel, status_bit);
}

void DmaEngineModel::Engine::write_back(Channel& channel, bool error) {
  if (!(channel.control & kPollModeWriteBack) || channel.writeback_address == 0) return;
  std::uint32_t word =
      (channel.completed & kWriteBackCountMask) | (error || (channel.status & kErrorBits) ? kWriteBackError : 0);
  if (channel.writeback_instead) word = *std::exchange(channel.writeback_instead, std::nullopt);
  std::array<std::byte, 4> bytes{};
  std::memcpy(bytes.data(), &word, sizeof(word));
  (void)dma(channel, channel.writeback_address, bytes, true);
}

// Run cleared while busy: the descriptor in progress is done; the channel goes idle.
void DmaEngineModel::Engine::stop_idle(Channel& channel) {
  channel.busy = false;
  log_status(channel, kIdleStopped);
}

void DmaEngineModel::Engine::check_unchanged(Channel& channel) {
  if (!device.bus_master()) return;  // the engine's next DMA reports it
  for (Fetched& fetched : channel.fetched) {
    std::array<std::byte, kDescriptorBytes> now{};
    if (!device.dma_read(fetched.address, now)) {
      violation(fmt::format("{}: descriptor memory at 0x{:x} was unmapped while the channel was running", channel.name,
                            fetched.address));
      channel.fetched.clear();  // reported once
      return;
    }
    if (now == fetched.bytes) continue;
    violation(
        fmt::format("{}: descriptor at 0x{:x} changed while the channel was running", channel.name, fetched.address));
    fetched.bytes = now;  // reported once
  }
}

// ---- The test's side ----

DmaEngineModel::DmaEngineModel(DeviceModel device, const DmaEngineModelOptions& options)
    : device_(std::move(device)), bar_(device_.add_bar(options.bar, kBarSize)) {
  DmaEngineModelOptions clamped = options;
  clamped.channels = std::clamp(options.channels, 1u, 4u);
  engine_ = std::make_shared<Engine>(device_, bar_, clamped);
  set_identifiers(bar_, clamped.channels);
  hook_registers(bar_, clamped.channels, engine_);
}

DmaEngineModel::~DmaEngineModel() = default;

Result<std::vector<std::byte>> DmaEngineModel::card_memory(std::uint64_t offset, std::size_t size) const {
  const std::lock_guard lock(engine_->mutex);
  if (auto inside = check_span("read card memory", "DMA engine model", engine_->card.size(), offset, size); !inside) {
    return std::unexpected(inside.error());
  }
  const auto* first = engine_->card.data() + offset;
  return std::vector<std::byte>(first, first + size);
}

Result<void> DmaEngineModel::write_card_memory(std::uint64_t offset, std::span<const std::byte> data) {
  const std::lock_guard lock(engine_->mutex);
  if (auto inside = check_span("write card memory", "DMA engine model", engine_->card.size(), offset, data.size());
      !inside) {
    return inside;
  }
  std::memcpy(engine_->card.data() + offset, data.data(), data.size());
  return {};
}

std::size_t DmaEngineModel::card_memory_size() const { return engine_->card.size(); }

std::size_t DmaEngineModel::advance(std::size_t descriptors) {
  const std::lock_guard lock(engine_->mutex);
  if (engine_->options.execution == Execution::on_run) return 0;
  std::size_t done = 0;
  for (Channel& channel : engine_->channels) {
    if (!channel.busy) continue;
    engine_->check_unchanged(channel);
    const bool stopping = !(channel.control & kRun);
    done += engine_->run(channel, stopping ? 1 : descriptors);
    if (stopping && channel.busy) engine_->stop_idle(channel);
  }
  return done;
}

std::size_t DmaEngineModel::run_until_idle() {
  std::size_t done = 0;
  for (;;) {
    const std::size_t step = advance(std::numeric_limits<std::size_t>::max());
    done += step;
    if (step == 0) return done;
  }
}

bool DmaEngineModel::busy(Direction direction, unsigned channel) const {
  const std::lock_guard lock(engine_->mutex);
  return channel < engine_->options.channels && engine_->channel(direction, channel).busy;
}

std::uint32_t DmaEngineModel::status(Direction direction, unsigned channel) const {
  const std::lock_guard lock(engine_->mutex);
  if (channel >= engine_->options.channels) return 0;
  const Channel& state = engine_->channel(direction, channel);
  return state.status | (state.busy ? kBusy : 0);
}

std::uint32_t DmaEngineModel::completed_count(Direction direction, unsigned channel) const {
  const std::lock_guard lock(engine_->mutex);
  return channel < engine_->options.channels ? engine_->channel(direction, channel).completed : 0;
}

std::uint64_t DmaEngineModel::descriptors_completed() const {
  const std::lock_guard lock(engine_->mutex);
  return engine_->completed_total;
}

void DmaEngineModel::flip_magic(Direction direction, unsigned channel, std::uint32_t index) {
  const std::lock_guard lock(engine_->mutex);
  if (channel < engine_->options.channels) engine_->channel(direction, channel).flip_magic_at = index;
}

void DmaEngineModel::write_back_instead(Direction direction, unsigned channel, std::uint32_t word) {
  const std::lock_guard lock(engine_->mutex);
  if (channel < engine_->options.channels) engine_->channel(direction, channel).writeback_instead = word;
}

std::vector<std::string> DmaEngineModel::violations() const {
  const std::lock_guard lock(engine_->mutex);
  return engine_->violations;
}

}  // namespace pcie::testing
