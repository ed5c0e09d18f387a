// A user-space driver for a Xilinx XDMA engine (PG195) in memory-mapped mode, written only
// against pcie's public API: the example of driving an FPGA's scatter-gather DMA engine
// with this library, and of testing such a driver before the bitstream exists (its unit
// tests run it on pcie::testing::DmaEngineModel: tests/dma_engine_test.cc). It moves data
// between host memory and the card's memory (DDR behind the engine's AXI MM port) through
// H2C and C2H channel `channel`: each transfer goes through a DMA bounce buffer, split into
// descriptors of at most max_descriptor_bytes, chained in DMA memory with XDMA's
// next-adjacent counts (pcie/descriptor_chain.h); its completion comes from the poll-mode
// write-back of the Completed Descriptor Count (pcie/completion_counter.h) or from the
// channel's interrupt (MSI-X, else MSI).
//
// What it owes the device, shown here:
//  - an engine a previous owner left running is stopped and seen idle before bus mastering
//    is enabled (open()), and at the end the channels are stopped, seen idle, and bus
//    mastering turned off before the chains and buffers are freed (a pcie::Quiescer, the
//    last member: pcie/quiesce.h);
//  - the device's reports are checked, not trusted: a write-back count beyond the chain is
//    malformed, an error status or an early stop is io_error, each naming the channel and
//    its status in words;
//  - after any failed transfer (an error, a stray count, a timeout) the driver stops both
//    channels and refuses new work with `busy` until rearm() has seen them idle: an engine
//    that may still be moving data must not get a bounce buffer that is being refilled.
//
//   auto container = pcie::VfioContainer::open();
//   auto card = examples::DmaEngineDriver::open(
//       std::make_unique<pcie::VfioDevice>(container->open_device(bdf).value()));
//   card->write(0x1000, data);                     // host to card (H2C)
//   auto back = card->read(0x1000, data.size());   // card to host (C2H)
//   if (!back) { log(back.error().message()); card->rearm(); }
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "examples/dma-engine/xdma.h"
#include "pcie/completion_counter.h"
#include "pcie/descriptor_chain.h"
#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/quiesce.h"

namespace examples {

struct DmaEngineOptions {
  unsigned bar = 0;      // the DMA BAR: 0, or 1 when the IP also has an AXI-Lite master BAR
  unsigned channel = 0;  // the H2C and C2H channel used, 0-3
  enum class Completion {
    polled,     // poll the write-back word (Control bit 26)
    interrupt,  // wait for the channel's interrupt: MSI-X (vector 0 H2C, 1 C2H), else MSI
  } completion = Completion::polled;
  std::size_t max_descriptor_bytes = 64 * 1024;  // per descriptor, 1 to 2^28 - 1
  std::size_t bounce_bytes = 1 << 20;            // moved per engine run; larger transfers take several
  // How long one engine run may take, and how long the channels may take to stop.
  std::chrono::milliseconds timeout{5000};
  std::chrono::milliseconds quiesce_timeout{1000};
};

class DmaEngineDriver {
 public:
  // Takes `device` (any backend), opens the DMA BAR and checks the H2C and C2H channel
  // identifiers (reading only: not_supported for a device that is not XDMA or a channel
  // that is absent or AXI4-Stream), stops the channels and waits until they are idle
  // (io_error if they stay busy), then enables bus mastering and, for interrupt
  // completion, MSI-X or MSI (not_supported with neither), allocates the bounce buffer,
  // the descriptor chains and the write-back words, and programs the write-back
  // addresses. invalid_argument for options out of range; the backend's errors.
  static pcie::Result<DmaEngineDriver> open(std::unique_ptr<pcie::Device> device, const DmaEngineOptions& options = {});

  // Copies `data` to card memory at `card_offset` (H2C), in runs of at most bounce_bytes.
  // Errors: invalid_argument (no data), out_of_range (the card range wraps), busy (a
  // transfer failed before: rearm()), device_disabled (closed); for a failed run, io_error
  // naming the channel and its status (an error status, a timeout, an early stop) or
  // malformed (a count beyond the chain): the driver is then disarmed.
  pcie::Result<void> write(std::uint64_t card_offset, std::span<const std::byte> data);
  // Copies `size` bytes of card memory from `card_offset` to the host (C2H). Fails as write().
  pcie::Result<std::vector<std::byte>> read(std::uint64_t card_offset, std::size_t size);

  // After a failed transfer: stops both channels, waits (timeout) until they are idle,
  // clears their status, and accepts work again. io_error if a channel stays busy (still
  // disarmed: try again, or close); device_disabled once closed.
  pcie::Result<void> rearm();
  bool armed() const { return !failed_ && !quiesce_.done(); }
  // The error that disarmed the driver, if any.
  const std::optional<pcie::Error>& failure() const { return failed_; }

  // Quiesces now (stop, wait idle, bus mastering off) and reports how it went; the
  // destructor does it otherwise. Every later call fails with device_disabled.
  pcie::Result<void> close() { return quiesce_.run(); }

  const pcie::Device& device() const { return *device_; }
  // Completion interrupts received (interrupt completion), for tests and statistics.
  std::uint64_t interrupts_seen() const { return interrupts_seen_; }

  DmaEngineDriver(DmaEngineDriver&&) noexcept = default;
  // No move assignment: the members would go before the Quiescer that guards them.
  DmaEngineDriver& operator=(DmaEngineDriver&&) = delete;
  ~DmaEngineDriver() = default;

 private:
  struct Channel {
    xdma::Direction direction = xdma::Direction::h2c;
    std::uint64_t registers = 0;                // the channel's register block
    std::uint64_t sgdma = 0;                    // its SGDMA block
    unsigned irq_bit = 0;                       // in the IRQ block: H2C channels first, then C2H
    unsigned vector = 0;                        // its interrupt vector, when interrupts complete transfers
    std::string name;                           // "H2C0 of 0000:03:00.0"
    pcie::DescriptorChain<xdma::Format> chain;  // in descriptors_
    pcie::CompletionCounter<std::uint32_t> done;
  };

  DmaEngineDriver(std::unique_ptr<pcie::Device> device, std::unique_ptr<pcie::Region> bar,
                  const DmaEngineOptions& options);
  pcie::QuiesceSteps quiesce_steps() const;
  pcie::Result<void> identify();
  pcie::Result<void> check_identifier(std::uint64_t block, std::uint32_t target, const std::string& what) const;
  pcie::Result<void> allocate();
  pcie::Result<void> set_up_channel(Channel& channel, std::size_t index);
  std::size_t descriptors_per_run() const;
  pcie::Result<void> enable_interrupts();
  pcie::Result<void> route_interrupt(const Channel& channel);
  pcie::Result<void> ready(const char* operation, std::uint64_t card_offset, std::size_t size) const;
  pcie::Result<void> transfer(Channel& channel, std::uint64_t card_offset, std::size_t length);
  pcie::Result<pcie::ChainStart> build_chain(Channel& channel, std::uint64_t card_offset, std::size_t length);
  pcie::Result<void> start(Channel& channel, const pcie::ChainStart& chain);
  pcie::Result<void> wait_polled(Channel& channel, std::uint32_t descriptors);
  pcie::Result<void> wait_interrupt(Channel& channel);
  pcie::Result<void> finish(Channel& channel, std::uint32_t descriptors);
  pcie::Result<void> stop_and_drain(Channel& channel);
  pcie::Error disarm(pcie::Error cause);
  pcie::Result<std::uint32_t> read32(std::uint64_t offset) const;
  pcie::Result<void> write32(std::uint64_t offset, std::uint32_t value) const;
  pcie::Error channel_error(const Channel& channel, pcie::Errc code, const std::string& what,
                            std::uint32_t status) const;

  // Declared in order of acquisition: destroyed in reverse, the Quiescer first.
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar_;
  std::unique_ptr<pcie::Interrupts> irq_;  // null for polled completion
  pcie::DmaBuffer bounce_;
  pcie::DmaBuffer descriptors_;  // the H2C chain, then the C2H chain
  pcie::DmaBuffer writeback_;    // the two channels' poll-mode write-back words
  Channel h2c_;
  Channel c2h_;
  DmaEngineOptions options_;
  unsigned h2c_channels_ = 0;  // H2C channels the engine has: C2H interrupt bits follow them
  std::uint64_t interrupts_seen_ = 0;
  std::optional<pcie::Error> failed_;  // set by a failed transfer until rearm()
  // Last member, so destroyed first: stops both channels, waits until they are idle and
  // turns bus mastering off before the chains and buffers above are freed.
  pcie::Quiescer quiesce_;
};

}  // namespace examples
