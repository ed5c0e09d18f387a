#include "examples/dma-engine/dma_engine_driver.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <utility>

#include "pcie/wait.h"

namespace examples {

using pcie::Errc;
using pcie::make_error;
using pcie::Result;
using pcie::Width;

namespace {

std::string hex(std::uint64_t value) {
  char text[24];
  std::snprintf(text, sizeof text, "0x%08llx", static_cast<unsigned long long>(value));
  return text;
}

constexpr std::uint32_t kLogged = xdma::kIeDescriptorStopped | xdma::kIeDescriptorCompleted | xdma::kIeAlignMismatch |
                                  xdma::kIeMagicStopped | xdma::kIeInvalidLength | xdma::kIeReadError |
                                  xdma::kIeDescriptorError;
// What raises the channel's interrupt: the end of the chain, and every error.
constexpr std::uint32_t kInterruptOn = xdma::kIeDescriptorStopped | xdma::kIeDescriptorCompleted | xdma::kErrorBits;

Result<void> check_options(const DmaEngineOptions& options, const std::string& name) {
  const std::size_t descriptors =
      options.max_descriptor_bytes == 0
          ? 0
          : (options.bounce_bytes + options.max_descriptor_bytes - 1) / options.max_descriptor_bytes;
  if (options.channel >= xdma::kMaxChannels || options.max_descriptor_bytes == 0 ||
      options.max_descriptor_bytes > xdma::kMaxLength || options.bounce_bytes == 0 || descriptors > (1u << 20)) {
    return std::unexpected(make_error(Errc::invalid_argument, "open XDMA", name,
                                      "channel 0-3, descriptors of 1 to 2^28 - 1 bytes, a bounce buffer of at most "
                                      "2^20 descriptors"));
  }
  return {};
}

}  // namespace

DmaEngineDriver::DmaEngineDriver(std::unique_ptr<pcie::Device> device, std::unique_ptr<pcie::Region> bar,
                                 const DmaEngineOptions& options)
    : device_(std::move(device)), bar_(std::move(bar)), options_(options) {
  const std::string bdf = device_->bdf().to_string();
  const std::uint64_t channel = options.channel * xdma::kChannelStride;
  h2c_.direction = xdma::Direction::h2c;
  h2c_.registers = xdma::kH2cChannel + channel;
  h2c_.sgdma = xdma::kH2cSgdma + channel;
  h2c_.name = "XDMA H2C" + std::to_string(options.channel) + " of " + bdf;
  c2h_.direction = xdma::Direction::c2h;
  c2h_.registers = xdma::kC2hChannel + channel;
  c2h_.sgdma = xdma::kC2hSgdma + channel;
  c2h_.name = "XDMA C2H" + std::to_string(options.channel) + " of " + bdf;
}

Result<DmaEngineDriver> DmaEngineDriver::open(std::unique_ptr<pcie::Device> device, const DmaEngineOptions& options) {
  if (auto valid = check_options(options, device->bdf().to_string()); !valid) return std::unexpected(valid.error());
  auto bar = device->open_bar(options.bar);
  if (!bar) return std::unexpected(bar.error());
  DmaEngineDriver driver(std::move(device), std::move(*bar), options);
  if (auto identified = driver.identify(); !identified) return std::unexpected(identified.error());
  // A previous owner may have left a chain running: stop it and see it idle before bus
  // mastering lets it write into whatever this driver maps at its addresses.
  if (auto idle = pcie::quiesce(*driver.device_, driver.quiesce_steps()); !idle) {
    return std::unexpected(idle.error());
  }
  // From here on, however open() ends, the destructor stops the channels and turns bus
  // mastering off before any buffer is freed.
  driver.quiesce_ = pcie::Quiescer(*driver.device_, driver.quiesce_steps());
  if (auto enabled = driver.device_->enable_bus_master(); !enabled) return std::unexpected(enabled.error());
  if (auto allocated = driver.allocate(); !allocated) return std::unexpected(allocated.error());
  if (options.completion == DmaEngineOptions::Completion::interrupt) {
    if (auto enabled = driver.enable_interrupts(); !enabled) return std::unexpected(enabled.error());
  }
  return driver;
}

// Stop: clear Run on both channels (the engine finishes the descriptor in progress);
// idle: Busy clear on both. The steps keep the BAR's address, which moves of the driver
// do not change.
pcie::QuiesceSteps DmaEngineDriver::quiesce_steps() const {
  pcie::Region* regs = bar_.get();
  const std::uint64_t h2c = h2c_.registers;
  const std::uint64_t c2h = c2h_.registers;
  pcie::QuiesceSteps steps;
  steps.stop = [regs, h2c, c2h]() -> Result<void> {
    if (auto stopped = regs->write(Width::bits32, h2c + xdma::kControlW1c, xdma::kRun); !stopped) return stopped;
    return regs->write(Width::bits32, c2h + xdma::kControlW1c, xdma::kRun);
  };
  steps.idle = [regs, h2c, c2h]() -> Result<bool> {
    for (const std::uint64_t block : {h2c, c2h}) {
      auto status = regs->read(Width::bits32, block + xdma::kStatus);
      if (!status) return std::unexpected(status.error());
      if (*status == 0xffffffffu) return true;  // gone: it does no DMA either
      if (*status & xdma::kBusy) return false;
    }
    return true;
  };
  steps.wait.timeout = options_.quiesce_timeout;
  return steps;
}

Result<std::uint32_t> DmaEngineDriver::read32(std::uint64_t offset) const {
  auto value = bar_->read(Width::bits32, offset);
  if (!value) return std::unexpected(value.error());
  return static_cast<std::uint32_t>(*value);
}

Result<void> DmaEngineDriver::write32(std::uint64_t offset, std::uint32_t value) const {
  return bar_->write(Width::bits32, offset, value);
}

// ---- Identification, memory, interrupts ----

Result<void> DmaEngineDriver::check_identifier(std::uint64_t block, std::uint32_t target,
                                               const std::string& what) const {
  auto id = read32(block + xdma::kIdentifier);
  if (!id) return std::unexpected(id.error());
  const std::uint32_t channel = block == xdma::kIrqBlock ? 0 : (block & 0xfff) / xdma::kChannelStride;
  if ((*id >> 20) != xdma::kSubsystemId || ((*id >> 16) & 0xf) != target || ((*id >> 8) & 0xf) != channel) {
    return std::unexpected(make_error(Errc::not_supported, "open XDMA", what,
                                      "identifier reads " + hex(*id) + ", not XDMA's (subsystem 0x1fc, target " +
                                          std::to_string(target) + ", channel " + std::to_string(channel) + ")",
                                      "check the BAR: the DMA BAR is BAR1 when the IP has an AXI-Lite master BAR"));
  }
  if (*id & xdma::kStreamInterface) {
    return std::unexpected(make_error(Errc::not_supported, "open XDMA", what,
                                      "the channel has an AXI4-Stream interface; this driver does memory-mapped "
                                      "transfers"));
  }
  return {};
}

Result<void> DmaEngineDriver::identify() {
  if (auto h2c = check_identifier(h2c_.registers, xdma::kTargetH2c, h2c_.name); !h2c) return h2c;
  if (auto c2h = check_identifier(c2h_.registers, xdma::kTargetC2h, c2h_.name); !c2h) return c2h;
  // The IRQ block numbers channels H2C first: C2H channel c is bit (H2C channels + c).
  for (h2c_channels_ = 0; h2c_channels_ < xdma::kMaxChannels; ++h2c_channels_) {
    auto id = read32(xdma::kH2cChannel + h2c_channels_ * xdma::kChannelStride + xdma::kIdentifier);
    if (!id) return std::unexpected(id.error());
    if ((*id >> 20) != xdma::kSubsystemId || ((*id >> 16) & 0xf) != xdma::kTargetH2c) break;
  }
  h2c_.irq_bit = options_.channel;
  c2h_.irq_bit = h2c_channels_ + options_.channel;
  return {};
}

Result<void> DmaEngineDriver::allocate() {
  auto allocator = device_->dma_allocator();
  if (!allocator) return std::unexpected(allocator.error());
  auto bounce = allocator->allocate(options_.bounce_bytes);
  if (!bounce) return std::unexpected(bounce.error());
  bounce_ = std::move(*bounce);
  // Both chains in one buffer the engine only reads, C2H's right after H2C's: wherever a
  // chain starts in its page, DescriptorChain keeps each adjacent block inside a page.
  const std::size_t capacity = descriptors_per_run();
  auto descriptors = allocator->allocate(2 * capacity * sizeof(xdma::Descriptor),
                                         {.prefer = pcie::DmaBacking::pages, .device_writes = false});
  if (!descriptors) return std::unexpected(descriptors.error());
  descriptors_ = std::move(*descriptors);
  auto writeback = allocator->allocate(4096, {.prefer = pcie::DmaBacking::pages, .device_reads = false});
  if (!writeback) return std::unexpected(writeback.error());
  writeback_ = std::move(*writeback);
  if (auto h2c = set_up_channel(h2c_, 0); !h2c) return h2c;
  return set_up_channel(c2h_, 1);
}

// The `index`-th chain and write-back word (64 bytes apart) for `channel`, and the word's
// address in the channel's registers.
Result<void> DmaEngineDriver::set_up_channel(Channel& channel, std::size_t index) {
  const std::size_t capacity = descriptors_per_run();
  const std::size_t offset = index * capacity * sizeof(xdma::Descriptor);
  auto chain = pcie::DescriptorChain<xdma::Format>::create(descriptors_.bytes().subspan(offset),
                                                           pcie::BusAddress{descriptors_.bus_address().value + offset},
                                                           static_cast<std::uint32_t>(capacity));
  if (!chain) return std::unexpected(chain.error());
  channel.chain = *chain;
  auto done = pcie::CompletionCounter<std::uint32_t>::create(
      writeback_.bytes().subspan(64 * index, 4),
      {.count_bits = xdma::kWriteBackCountBits, .error_mask = xdma::kWriteBackError});
  if (!done) return std::unexpected(done.error());
  channel.done = *done;
  const std::uint64_t address = writeback_.bus_address().value + 64 * index;
  if (auto lo = write32(channel.registers + xdma::kPollWriteBackLo, static_cast<std::uint32_t>(address)); !lo) {
    return lo;
  }
  return write32(channel.registers + xdma::kPollWriteBackHi, static_cast<std::uint32_t>(address >> 32));
}

std::size_t DmaEngineDriver::descriptors_per_run() const {
  return (options_.bounce_bytes + options_.max_descriptor_bytes - 1) / options_.max_descriptor_bytes;
}

// MSI-X with a vector per channel (H2C 0, C2H 1), else one MSI vector for both.
Result<void> DmaEngineDriver::enable_interrupts() {
  if (auto irq_block = check_identifier(xdma::kIrqBlock, xdma::kTargetIrq, "XDMA IRQ block"); !irq_block) {
    return irq_block;
  }
  auto msix = device_->vector_count(pcie::IrqKind::msix);
  auto msi = device_->vector_count(pcie::IrqKind::msi);
  if (!msix || !msi) return std::unexpected(!msix ? msix.error() : msi.error());
  const bool per_channel = *msix >= 2;
  if (!per_channel && *msi == 0) {
    return std::unexpected(make_error(Errc::not_supported, "enable XDMA interrupts", device_->bdf().to_string(),
                                      "the device offers neither two MSI-X vectors nor MSI", "use polled completion"));
  }
  auto irq = device_->enable_interrupts(per_channel ? pcie::IrqKind::msix : pcie::IrqKind::msi, per_channel ? 2 : 1);
  if (!irq) return std::unexpected(irq.error());
  irq_ = std::move(*irq);
  h2c_.vector = 0;
  c2h_.vector = per_channel ? 1 : 0;
  if (auto routed = route_interrupt(h2c_); !routed) return routed;
  return route_interrupt(c2h_);
}

// The channel's vector number in the IRQ block, what raises it, and its enable bit.
Result<void> DmaEngineDriver::route_interrupt(const Channel& channel) {
  const std::uint64_t vectors =
      xdma::kIrqBlock + (channel.direction == xdma::Direction::h2c ? xdma::kChannelVectorH2c : xdma::kChannelVectorC2h);
  auto numbers = read32(vectors);
  if (!numbers) return std::unexpected(numbers.error());
  const unsigned shift = 8 * options_.channel;
  const std::uint32_t routed = (*numbers & ~(0x1fu << shift)) | channel.vector << shift;
  if (auto written = write32(vectors, routed); !written) return written;
  if (auto mask = write32(channel.registers + xdma::kInterruptEnableMask, kInterruptOn); !mask) return mask;
  return write32(xdma::kIrqBlock + xdma::kChannelIntEnableW1s, 1u << channel.irq_bit);
}

// ---- Transfers ----

Result<void> DmaEngineDriver::ready(const char* operation, std::uint64_t card_offset, std::size_t size) const {
  const std::string name = device_->bdf().to_string();
  if (quiesce_.done()) {
    return std::unexpected(make_error(Errc::device_disabled, operation, name,
                                      "the driver was closed: the engine is stopped and bus mastering is off"));
  }
  if (failed_) {
    return std::unexpected(make_error(Errc::busy, operation, name,
                                      "a transfer failed and the engine may still be busy: " + failed_->reason,
                                      "call rearm() once the cause is dealt with"));
  }
  if (size == 0) return std::unexpected(make_error(Errc::invalid_argument, operation, name, "no bytes to move"));
  if (card_offset > ~std::uint64_t{0} - (size - 1)) {
    return std::unexpected(make_error(Errc::out_of_range, operation, name,
                                      hex(card_offset) + " + " + std::to_string(size) + " bytes wraps past 2^64"));
  }
  return {};
}

Result<void> DmaEngineDriver::write(std::uint64_t card_offset, std::span<const std::byte> data) {
  if (auto usable = ready("XDMA write", card_offset, data.size()); !usable) return usable;
  for (std::size_t done = 0; done < data.size();) {
    const std::size_t piece = std::min(bounce_.size(), data.size() - done);
    std::memcpy(bounce_.data(), data.data() + done, piece);
    bounce_.sync_for_device();  // the data is in memory before the engine is told to read it
    if (auto moved = transfer(h2c_, card_offset + done, piece); !moved) return moved;
    done += piece;
  }
  return {};
}

Result<std::vector<std::byte>> DmaEngineDriver::read(std::uint64_t card_offset, std::size_t size) {
  if (auto usable = ready("XDMA read", card_offset, size); !usable) return std::unexpected(usable.error());
  std::vector<std::byte> data(size);
  for (std::size_t done = 0; done < size;) {
    const std::size_t piece = std::min(bounce_.size(), size - done);
    if (auto moved = transfer(c2h_, card_offset + done, piece); !moved) return std::unexpected(moved.error());
    bounce_.sync_for_cpu();  // read what the engine wrote, not what was there before
    std::memcpy(data.data() + done, bounce_.data(), piece);
    done += piece;
  }
  return data;
}

// One engine run over [card_offset, + length) and the start of the bounce buffer. Any
// failure disarms the driver.
Result<void> DmaEngineDriver::transfer(Channel& channel, std::uint64_t card_offset, std::size_t length) {
  auto chain = build_chain(channel, card_offset, length);
  if (!chain) return std::unexpected(chain.error());
  channel.done.reset();  // the engine's count restarts at Run; a stale word must not count
  if (auto expected = channel.done.expect(chain->count); !expected) return std::unexpected(expected.error());
  if (irq_) (void)irq_->consume(channel.vector);  // an interrupt left from an earlier run is not this one's
  if (auto started = start(channel, *chain); !started) return std::unexpected(disarm(started.error()));
  auto waited = irq_ ? wait_interrupt(channel) : wait_polled(channel, chain->count);
  if (!waited) return std::unexpected(disarm(waited.error()));
  if (auto finished = finish(channel, chain->count); !finished) return std::unexpected(disarm(finished.error()));
  return {};
}

Result<pcie::ChainStart> DmaEngineDriver::build_chain(Channel& channel, std::uint64_t card_offset, std::size_t length) {
  channel.chain.clear();
  const bool h2c = channel.direction == xdma::Direction::h2c;
  for (std::size_t offset = 0; offset < length; offset += options_.max_descriptor_bytes) {
    const auto piece = static_cast<std::uint32_t>(std::min(options_.max_descriptor_bytes, length - offset));
    const std::uint64_t host = bounce_.bus_address().value + offset;
    const std::uint64_t card = card_offset + offset;
    auto appended = channel.chain.append(
        {.control = xdma::kMagic, .length = piece, .source = h2c ? host : card, .destination = h2c ? card : host});
    if (!appended) return std::unexpected(appended.error());
  }
  // The last descriptor reports: the count written back (poll mode), Descriptor
  // Completed logged and its interrupt; then the engine stops (finish() sets Stop).
  channel.chain.descriptor(channel.chain.size() - 1)->control |= xdma::kCompleted | xdma::kEndOfPacket;
  auto start = channel.chain.finish();
  descriptors_.sync_for_device();
  return start;
}

Result<void> DmaEngineDriver::start(Channel& channel, const pcie::ChainStart& chain) {
  for (const auto& [offset, value] :
       {std::pair{channel.sgdma + xdma::kDescriptorLo, static_cast<std::uint32_t>(chain.first.value)},
        std::pair{channel.sgdma + xdma::kDescriptorHi, static_cast<std::uint32_t>(chain.first.value >> 32)},
        std::pair{channel.sgdma + xdma::kDescriptorAdjacent, chain.first_adjacent}}) {
    if (auto written = write32(offset, value); !written) return written;
  }
  std::uint32_t control = xdma::kRun | kLogged;
  if (channel.direction == xdma::Direction::h2c) control |= xdma::kIeWriteError;
  if (!irq_) control |= xdma::kPollModeWriteBack;
  return write32(channel.registers + xdma::kControl, control);
}

Result<void> DmaEngineDriver::wait_polled(Channel& channel, std::uint32_t descriptors) {
  pcie::WaitOptions options{.timeout = options_.timeout};
  bool engine_failed = false;  // stop_if ended the wait: its error names the channel already
  // An error the engine logged ends the wait at once (its write-back may not come).
  options.stop_if = [&]() -> Result<void> {
    auto status = read32(channel.registers + xdma::kStatus);
    engine_failed = !status || (*status & xdma::kErrorBits);
    if (!status) return std::unexpected(status.error());
    if (engine_failed) return std::unexpected(channel_error(channel, Errc::io_error, "the engine stopped", *status));
    return {};
  };
  auto waited = channel.done.wait(descriptors, options);
  if (waited && waited->matched) return {};
  if (!waited && engine_failed) return std::unexpected(waited.error());
  const std::uint32_t status = read32(channel.registers + xdma::kStatus).value_or(0xffffffffu);
  if (!waited) {  // the counter's verdict on the word: beyond the chain, or the error bit
    const bool stray = waited.error().code == Errc::malformed;
    return std::unexpected(channel_error(
        channel, waited.error().code,
        stray ? "stray write-back: " + waited.error().reason : "the write-back reports an error", status));
  }
  return std::unexpected(channel_error(channel, Errc::io_error,
                                       "timed out: " + std::to_string(waited->value) + " of " +
                                           std::to_string(descriptors) + " descriptors written back",
                                       status));
}

// Until the channel is no longer busy, woken by its interrupt; errors end it at once.
Result<void> DmaEngineDriver::wait_interrupt(Channel& channel) {
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    auto fired = irq_->wait(channel.vector, std::max(left, std::chrono::milliseconds(0)));
    if (!fired) return std::unexpected(fired.error());
    interrupts_seen_ += *fired;
    auto status = read32(channel.registers + xdma::kStatus);
    if (!status) return std::unexpected(status.error());
    if (*status & xdma::kErrorBits)
      return std::unexpected(channel_error(channel, Errc::io_error, "the engine stopped", *status));
    if (!(*status & xdma::kBusy)) return {};
    if (std::chrono::steady_clock::now() >= deadline) {
      return std::unexpected(channel_error(channel, Errc::io_error, "timed out waiting for the interrupt", *status));
    }
  }
}

// After the chain: Run cleared, the channel seen idle, its status cleared and checked, and
// the count the engine reports matched against the chain.
Result<void> DmaEngineDriver::finish(Channel& channel, std::uint32_t descriptors) {
  if (auto stopped = stop_and_drain(channel); !stopped) return stopped;
  auto status = read32(channel.registers + xdma::kStatusClearOnRead);
  if (!status) return std::unexpected(status.error());
  if (*status & xdma::kErrorBits)
    return std::unexpected(channel_error(channel, Errc::io_error, "the engine stopped", *status));
  auto completed = read32(channel.registers + xdma::kCompletedCount);
  if (!completed) return std::unexpected(completed.error());
  if (*completed > descriptors) {
    return std::unexpected(channel_error(
        channel, Errc::malformed,
        "Completed Descriptor Count " + std::to_string(*completed) + " for a chain of " + std::to_string(descriptors),
        *status));
  }
  if (*completed < descriptors) {
    return std::unexpected(channel_error(
        channel, Errc::io_error,
        "stopped after " + std::to_string(*completed) + " of " + std::to_string(descriptors) + " descriptors",
        *status));
  }
  return {};
}

Result<void> DmaEngineDriver::stop_and_drain(Channel& channel) {
  if (auto stopped = write32(channel.registers + xdma::kControlW1c, xdma::kRun); !stopped) return stopped;
  std::optional<pcie::Error> failed;
  auto idle = pcie::wait_until(
      [&] {
        auto status = read32(channel.registers + xdma::kStatus);
        if (!status) failed = status.error();
        return status.value_or(0);
      },
      [&](std::uint32_t status) { return failed.has_value() || !(status & xdma::kBusy); },
      {.timeout = options_.timeout});
  if (failed) return std::unexpected(*failed);
  if (!idle) return std::unexpected(idle.error());
  if (!idle->matched)
    return std::unexpected(channel_error(channel, Errc::io_error, "still busy after Run was cleared", idle->value));
  return {};
}

// Stops both channels (without waiting: rearm() does) and refuses work until rearm().
pcie::Error DmaEngineDriver::disarm(pcie::Error cause) {
  (void)write32(h2c_.registers + xdma::kControlW1c, xdma::kRun);  // best effort: the cause is what is reported
  (void)write32(c2h_.registers + xdma::kControlW1c, xdma::kRun);
  failed_ = cause;
  return cause;
}

Result<void> DmaEngineDriver::rearm() {
  if (quiesce_.done()) {
    return std::unexpected(
        make_error(Errc::device_disabled, "rearm XDMA", device_->bdf().to_string(), "the driver was closed"));
  }
  for (Channel* channel : {&h2c_, &c2h_}) {
    if (auto idle = stop_and_drain(*channel); !idle) return idle;
  }
  for (Channel* channel : {&h2c_, &c2h_}) {
    if (auto cleared = read32(channel->registers + xdma::kStatusClearOnRead); !cleared)
      return std::unexpected(cleared.error());
    if (irq_) (void)irq_->consume(channel->vector);
  }
  failed_.reset();
  return {};
}

pcie::Error DmaEngineDriver::channel_error(const Channel& channel, Errc code, const std::string& what,
                                           std::uint32_t status) const {
  return make_error(code, "DMA transfer", channel.name,
                    what + "; status " + hex(status) + " (" + xdma::describe_status(status, channel.direction) + ")",
                    code == Errc::malformed ? "the engine's report cannot be trusted: the driver stopped the channel; "
                                              "rearm() to go on"
                                            : "the driver stopped the channel; rearm() to go on");
}

}  // namespace examples
