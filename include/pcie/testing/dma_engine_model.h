// A model of a Xilinx XDMA scatter-gather DMA engine (the "DMA/Bridge Subsystem for PCI
// Express", PG195 v4.1) on a DeviceModel, for testing FPGA host software before the
// bitstream exists (target //:pcie_testing). It gives the DMA BAR PG195's register map for
// H2C (host to card) and C2H (card to host) channels 0 to channels - 1, and behind it a
// card memory (an AXI memory-mapped DDR) of its own:
//
//   0x0000 + 0x100 c  H2C Channel c   Identifier 0x00, Control 0x04 (W1S 0x08, W1C 0x0C),
//   0x1000 + 0x100 c  C2H Channel c   Status 0x40 (RW1C) and 0x44 (clear on read),
//                                     Completed Descriptor Count 0x48, Alignments 0x4C,
//                                     Poll Mode Write Back Address 0x88/0x8C,
//                                     Interrupt Enable Mask 0x90 (W1S 0x94, W1C 0x98)
//   0x2000            IRQ Block       Identifier, Channel Interrupt Enable 0x10 (W1S 0x14,
//                                     W1C 0x18), Channel Interrupt Request 0x44, Pending
//                                     0x4C, Channel Vector Number 0xA0 (H2C) and 0xA4 (C2H)
//   0x3000            Config Block    Identifier
//   0x4000 + 0x100 c  H2C SGDMA c     Identifier, Descriptor Address 0x80/0x84,
//   0x5000 + 0x100 c  C2H SGDMA c     Descriptor Adjacent 0x88
//
// Setting Run walks the descriptor chain from the SGDMA Descriptor Address as the IP does:
// blocks of 1 + adjacent descriptors fetched at once by DMA (DeviceModel::dma_read), the
// next block at the last descriptor's next address with its Nxt_adj; each descriptor (32
// bytes: control with magic 0xAD4B in 31:16, Nxt_adj 13:8, EOP 4, Completed 1, Stop 0;
// length; source, destination, next) moves its bytes between host memory and card memory,
// increments the Completed Descriptor Count (reset when Run is set), writes the count back
// to the poll-mode address after a descriptor marked Completed when Control bit 26 asks
// for it, and stops after one marked Stop. Status bits are logged when Control's ie_* bit
// for them is set; an interrupt is raised when a logged bit is in the Interrupt Enable
// Mask and the channel's bit is set in the IRQ block: MSI-X vector = the channel's Vector
// Number (H2C c: c, C2H c: channels + c until the driver writes others), else MSI 0.
//
// Faults as the IP reports them: a bad magic stops the channel with Magic Stopped; a
// descriptor fetch that faults (not mapped, bus mastering off) sets Descriptor Error
// (unsupported request); an H2C read of host memory that faults sets Read Error; a card
// address outside the card memory sets H2C Write Error or C2H Read Error (AXI decode
// error). A C2H write to host memory is a posted write, which no completion reports: it is
// dropped and counted (DeviceModel::dma_faults) and recorded as a violation. On an error
// the channel stops, and in poll mode writes the count back with bit 31 set.
//
// The model is strict where the IP is silent: violations() lists what a driver did wrong:
// a register access other than 32 bits, Run with no descriptor address, descriptor or
// write-back registers changed while the channel is busy, descriptors changed while the
// channel runs, a block of adjacent descriptors that crosses 4 KiB or disagrees with the
// next pointers, a Stop bit inside a block, DMA attempted with bus mastering off (the
// driver let go of a device it had not stopped), a C2H write to memory not mapped for it.
//
//   pcie::testing::DmaEngineModel engine(pcie::testing::DeviceModel({.msix_vectors = 2}));
//   auto driver = MyXdmaDriver::open(engine.device().open());
//   driver->write(0x1000, data);                    // runs at the Run write (default)
//   EXPECT_EQ(engine.card_memory(0x1000, data.size()).value(), data);
//   EXPECT_TRUE(engine.violations().empty());
//
// With Execution::on_advance the engine only moves when the test calls advance(), so a
// driver's timeouts and its quiesce can be tested with work in flight. Not modelled:
// AXI4-Stream channels, descriptor bypass, credits, user interrupts, performance counters,
// alignment and length granularity other than 1. Thread-safe: the test may call advance()
// from one thread while the driver works in another.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "pcie/testing/device_model.h"

namespace pcie::testing {

// Where a DmaEngineModel puts its registers, how many channels and how much card memory it
// has, and when it does its work.
struct DmaEngineModelOptions {
  unsigned bar = 0;                         // the DMA BAR (BAR1 when the IP has an AXI-Lite master BAR0)
  unsigned channels = 1;                    // H2C and C2H channels each, 1 to 4
  std::size_t card_memory_bytes = 1 << 20;  // the card's DDR behind the AXI MM interface
  // When the engine walks the descriptor chains the driver started.
  enum class Execution {
    on_run,      // a chain runs to its end inside the driver's write that sets Run
    on_advance,  // the engine moves only in advance(): work stays in flight until then
  } execution = Execution::on_run;  // on_run unless a test needs work in flight
};

// The XDMA engine on a DeviceModel's DMA BAR, as the file comment describes it, and the
// test's side of it: card memory, stepping the engine, each channel's state, fault
// injection and violations.
class DmaEngineModel {
 public:
  // A channel's direction: H2C reads host memory into card memory, C2H writes card memory
  // out to host memory.
  enum class Direction { h2c, c2h };
  // DmaEngineModelOptions::Execution, for short.
  using Execution = DmaEngineModelOptions::Execution;

  // Adds the DMA BAR (64 KiB) to `device` (a handle: the model keeps the device's state
  // alive) and models the engine behind it. options.channels is clamped to [1, 4].
  explicit DmaEngineModel(DeviceModel device, const DmaEngineModelOptions& options = {});
  // The engine stops with the model; the BAR stays on the device, and its registers then
  // only store what is written.
  ~DmaEngineModel();
  // Not copyable (nor movable): one engine per DMA BAR.
  DmaEngineModel(const DmaEngineModel&) = delete;
  // Not assignable, as above.
  DmaEngineModel& operator=(const DmaEngineModel&) = delete;

  // The device the engine sits on (sharing its state with the constructor's argument), for
  // open() and the test's own checks (dma_faults(), interrupts).
  DeviceModel& device() { return device_; }
  // The DMA BAR's register model, for the test's own checks (its log(), say).
  RegisterModel& bar() { return bar_; }

  // The card memory, for the test to fill and check: a copy, and a write, under the
  // model's lock (safe while another thread runs the engine). out_of_range past its end.
  Result<std::vector<std::byte>> card_memory(std::uint64_t offset, std::size_t size) const;
  // Writes `data` to the card memory at `offset` (the write the comment above describes).
  Result<void> write_card_memory(std::uint64_t offset, std::span<const std::byte> data);
  // The card memory's size in bytes (options.card_memory_bytes).
  std::size_t card_memory_size() const;

  // Execution::on_advance: each running channel completes up to `descriptors` more
  // descriptors (a channel whose Run was cleared completes the one in progress and
  // stops). Returns how many were completed in all. Does nothing in Execution::on_run.
  std::size_t advance(std::size_t descriptors = 1);
  // advance() until no channel is busy; returns the descriptors completed.
  std::size_t run_until_idle();

  // Whether the channel is busy (Status bit 0): from the write that sets Run until its chain
  // stops, fails, or goes idle after Run is cleared. False for a channel the model lacks.
  bool busy(Direction direction, unsigned channel = 0) const;
  std::uint32_t status(Direction direction, unsigned channel = 0) const;  // without clearing it
  // The channel's Completed Descriptor Count (register 0x48): descriptors completed since
  // Run was last set. 0 for a channel the model lacks.
  std::uint32_t completed_count(Direction direction, unsigned channel = 0) const;
  // Descriptors completed on all channels since the model was made.
  std::uint64_t descriptors_completed() const;

  // Fault injection, each used once:
  // the `index`-th descriptor of a run (0: its first) that the channel reaches is seen with
  // its magic corrupted (bit 16 flipped);
  void flip_magic(Direction direction, unsigned channel, std::uint32_t index);
  // the channel's next poll-mode write-back writes `word` instead of the count.
  void write_back_instead(Direction direction, unsigned channel, std::uint32_t word);

  // What the driver did against the protocol, one line each, oldest first.
  std::vector<std::string> violations() const;

  struct Engine;  // the state the BAR's hooks share

 private:
  DeviceModel device_;
  RegisterModel& bar_;
  std::shared_ptr<Engine> engine_;
};

}  // namespace pcie::testing
