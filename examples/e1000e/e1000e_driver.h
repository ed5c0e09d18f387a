// A user-space driver for the Intel 82574L (QEMU's "e1000e") in the shape of ixy: reset,
// link up, one receive and one transmit ring of legacy descriptors that the NIC writes
// back in place (pcie/writeback_ring.h), a pool of 2 KiB packet buffers, rx_batch and
// tx_batch, statistics, MAC loopback, and interrupts routed per cause: receive, transmit
// and other causes on MSI-X vectors 0, 1, 2 through IVAR, or one MSI or INTx vector where
// MSI-X is not offered (UIO has INTx only). It is written against pcie::Device alone, so it
// runs unchanged on VFIO with an IOMMU (type1 or iommufd), VFIO no-IOMMU and UIO: every
// piece of DMA memory is a single 4 KiB page or a pcie::DmaPages set, which those backends
// can all give.
//
//   auto nic = examples::E1000eDriver::open(std::move(device)).value();
//   std::array<examples::Packet, 32> batch;
//   auto got = nic.rx_batch(batch);                 // frames received since the last call
//   for (std::size_t i = 0; i < *got; ++i) swap_macs(nic.frame(batch[i]));
//   auto sent = nic.tx_batch(std::span(batch).first(*got));  // buffers go back once sent
//
// Buffers: a Packet names a pool buffer the caller holds. rx_batch and allocate_packet hand
// buffers out; tx_batch takes them back (returned to the pool when the NIC has written the
// descriptor back), release() returns one unsent. The driver tracks who holds each buffer
// and each hand-out's generation, and refuses a Packet the caller does not hold
// (invalid_argument): a double release, a double send or a stale copy of a Packet whose
// buffer has been handed out again is an error, never a buffer in two places at once.
//
// Threads: one thread drives a driver at a time.
// Intel 82574 GbE Controller Family datasheet sections are cited (see e1000e.h).
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "examples/e1000e/e1000e.h"
#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/dma_pages.h"
#include "pcie/quiesce.h"
#include "pcie/writeback_ring.h"

namespace examples {

using MacAddress = std::array<std::uint8_t, 6>;
// "52:54:00:12:34:56".
std::string to_string(const MacAddress& mac);

enum class E1000eInterruptMode {
  polled,  // no interrupts: rx_batch/tx_batch look at the rings
  msix,    // receive, transmit, other on vectors 0, 1, 2 (IVAR)
  msi,     // one vector, causes read from ICR
  intx,    // one line, causes read from ICR; masked until rearmed
};
const char* to_string(E1000eInterruptMode mode);

struct E1000eOptions {
  // Descriptors per ring: a multiple of 8 (a ring's length is a multiple of 128 bytes),
  // 8 to 256 (a ring is one 4 KiB page).
  std::uint32_t rx_ring_size = 256;
  std::uint32_t tx_ring_size = 256;
  // Packet buffers of 2 KiB in the pool: at least rx_ring_size (the receive ring is kept
  // full) plus room for what the caller holds and what is being sent.
  std::uint32_t buffers = 1024;
  bool interrupts = false;   // MSI-X where offered, else MSI, else INTx
  bool promiscuous = true;   // accept every unicast and multicast frame (UPE, MPE)
  bool loopback = false;     // MAC loopback (RCTL.LBM 01b): what is sent is received
  std::chrono::milliseconds reset_timeout{100};  // CTRL.RST clears itself within 1 ms (datasheet: 3 ms max)
  std::chrono::milliseconds link_timeout{2000};
};

// A buffer of the pool the caller holds, and the length of the frame in it.
struct Packet {
  static constexpr std::uint32_t kNone = ~0u;
  std::uint32_t buffer = kNone;
  std::uint16_t length = 0;
  // Which hand-out of the buffer this is: a copy kept after the buffer was sent or
  // released does not name it once it has been handed out again.
  std::uint32_t generation = 0;
};

struct E1000eStats {
  // The NIC's counters (10.2.7), accumulated across reads (they clear on read).
  std::uint64_t rx_packets = 0, tx_packets = 0, rx_bytes = 0, tx_bytes = 0;
  std::uint64_t rx_missed = 0;      // MPC: dropped for want of room
  std::uint64_t rx_no_buffers = 0;  // RNBC: the receive ring was empty
  std::uint64_t crc_errors = 0;
  // The driver's own.
  std::uint64_t rx_dropped = 0;     // frames written back with errors or without EOP
  std::uint64_t tx_refused = 0;     // packets tx_batch could not post (ring full)
  // Resets done although STATUS.GIO Master Enable stayed set for reset_timeout after GIO
  // Master Disable: master requests still pending were cut off (the kernel's driver, too,
  // resets anyway: e1000e_disable_pcie_master's failure only logs).
  std::uint64_t resets_without_drain = 0;
};

// Interrupts seen, by cause: with MSI-X each cause has its vector; with MSI and INTx the
// causes are read from ICR.
struct E1000eInterruptCounts {
  std::uint64_t rx = 0, tx = 0, other = 0;
  std::uint64_t link_changes = 0;  // LSC among the other causes
};

class E1000eDriver {
 public:
  // Takes `device` (an 82574L on any backend), maps BAR0, resets the NIC (ending anything a
  // previous owner left running), reads its MAC address from RAL0/RAH0 (loaded from the
  // EEPROM), sets up both rings and the buffer pool, enables receive and transmit, sets
  // link up, waits for STATUS.LU, and enables interrupts when asked. Errors: invalid_argument
  // for options out of range, the backend's (BAR, DMA, interrupts), io_error when the reset
  // does not complete or the link stays down, device_removed when BAR0 reads all ones.
  static pcie::Result<E1000eDriver> open(std::unique_ptr<pcie::Device> device, const E1000eOptions& options = {});

  const MacAddress& mac() const { return mac_; }
  E1000eInterruptMode interrupt_mode() const { return mode_; }
  const pcie::Device& device() const { return *device_; }
  // STATUS.LU now; false when the NIC cannot be read.
  bool link_up() const;

  // Frames the NIC has received since the last call, up to out.size(), in order, each in a
  // buffer the caller now holds (give it back with release() or tx_batch()); the receive
  // ring is refilled from the pool. A frame written back with errors is dropped and counted
  // (stats().rx_dropped). Returns how many were stored in `out`. Fails with
  // device_removed when the NIC is gone, and with the error that made the driver unusable
  // (see reset()).
  pcie::Result<std::size_t> rx_batch(std::span<Packet> out);
  // Posts `packets` for transmission in order, as many as the ring has room for, with one
  // tail write; the buffers go back to the pool once the NIC has sent them. Returns how many
  // were taken (the rest are still the caller's). invalid_argument for a packet whose
  // buffer the caller does not hold or whose length is not 14 to 1514 bytes — nothing is posted
  // then; fails as rx_batch otherwise.
  pcie::Result<std::size_t> tx_batch(std::span<const Packet> packets);
  // Returns the buffers of frames the NIC has sent to the pool; how many. tx_batch does it
  // too; call it to drain before a measurement ends.
  std::size_t reap_transmitted();
  // Descriptors posted for transmission and not yet written back.
  std::uint32_t tx_in_flight() const { return tx_ring_.posted(); }

  // A free buffer for a frame to send (length 0: set it). busy when the pool is empty.
  pcie::Result<Packet> allocate_packet();
  // Gives back a buffer the caller holds without sending it. invalid_argument otherwise.
  pcie::Result<void> release(const Packet& packet);
  // The 2 KiB buffer of `packet` (the frame is its first packet.length bytes). An empty span
  // for a Packet whose buffer the caller does not hold.
  std::span<std::byte> buffer(const Packet& packet);
  std::span<std::byte> frame(const Packet& packet) { return buffer(packet).first(std::min<std::size_t>(packet.length, buffer(packet).size())); }
  std::uint32_t free_buffers() const { return static_cast<std::uint32_t>(free_.size()); }

  // Waits up to `timeout` for an interrupt (any vector), handles its causes (counted in
  // interrupt_counts()) and re-enables them. Returns whether one came. not_supported when
  // the driver polls.
  pcie::Result<bool> wait_for_interrupt(std::chrono::milliseconds timeout);
  const E1000eInterruptCounts& interrupt_counts() const { return interrupt_counts_; }
  // The interrupt set (nullptr when polling), for a caller's own event loop.
  pcie::Interrupts* interrupts() const { return interrupts_.get(); }

  // Reads and accumulates the NIC's statistics counters.
  const E1000eStats& stats();

  // Recovers the NIC: receive and transmit off, the NIC reset (which ends its DMA), the
  // rings rebuilt from scratch, every buffer not held by the caller back in the pool
  // (frames posted for transmission and not yet sent are lost), then set up as at open.
  // Use it after a fault (a descriptor the NIC could not fetch, a hung ring). Errors as
  // open(); a failed reset leaves the driver unusable: every call then fails with it.
  pcie::Result<void> reset();
  std::uint64_t resets() const { return resets_; }

  // Sends `length` bytes at bus address `address` of memory the caller owns (any DmaBuffer
  // of this device), as one frame, without copying; waits (up to 1 s) until the NIC has
  // written the descriptor back. For zero-copy senders, and for tests that hand the NIC an
  // address it cannot reach. invalid_argument for a length outside 14..1514; io_error on a
  // timeout, after which the descriptor is still the NIC's: the memory must stay mapped
  // until reset() or shutdown() has stopped the NIC. Fails as tx_batch otherwise.
  pcie::Result<void> transmit_from(pcie::BusAddress address, std::uint16_t length);

  // Stops the NIC (receive and transmit off, interrupts masked, bus mastering requests
  // off and drained, then Bus Master Enable cleared) so that its memory can go; the
  // destructor does it when not called. Returns the quiesce result.
  pcie::Result<void> shutdown();

  E1000eDriver(E1000eDriver&&) noexcept = default;
  // No move assignment: the driver being replaced would have to be quiesced first.
  E1000eDriver& operator=(E1000eDriver&&) = delete;
  ~E1000eDriver() = default;

  // Shutting down waits twice the longest interrupt-throttling interval plus this, with every
  // cause masked, before the interrupts can be released (time for an emulator's main loop to
  // run a throttling timer that expired: see idle_then_reset).
  // 50 ms: a main loop stalled that long on a loaded 2-core host is rare; a teardown 50 ms
  // slower costs nothing that matters.
  static constexpr std::chrono::milliseconds kThrottleMargin{50};

 private:
  enum class Holder : std::uint8_t { pool, rx_ring, tx_ring, caller };

  E1000eDriver() = default;
  std::uint32_t read32(std::uint64_t offset) const;
  void write32(std::uint64_t offset, std::uint32_t value) const;
  pcie::Result<void> usable(const char* operation) const;
  // Stops receive, transmit, interrupts and master requests (the Quiescer's stop step, and
  // the first of a reset); whether no master request is pending (its idle step).
  static pcie::Result<void> stop_nic(pcie::Region& regs);
  static pcie::Result<bool> nic_idle(pcie::Region& regs);
  // nic_idle(), and once idle the throttling timers waited out and the NIC reset (the
  // quiesce step: nothing armed outlives us).
  static pcie::Result<bool> idle_then_reset(pcie::Region& regs);
  // The longest interval ITR and EITR 0-4 hold (bits 15:0, 256 ns each); a failed read's error.
  static pcie::Result<std::chrono::nanoseconds> throttle_interval(pcie::Region& regs);
  // Polls `offset` until `done` holds or `timeout` passes: the last value and whether it
  // matched; device_removed when it reads all ones, or the wait's own error.
  pcie::Result<pcie::WaitResult<std::uint32_t>> wait_register(std::uint64_t offset, bool (*done)(std::uint32_t),
                                                              std::chrono::milliseconds timeout,
                                                              const char* operation) const;
  // wait_register(), with io_error naming `awaited` when `done` never held.
  pcie::Result<std::uint32_t> poll(std::uint64_t offset, bool (*done)(std::uint32_t), std::chrono::milliseconds timeout,
                                   const char* operation, const std::string& awaited) const;
  pcie::Result<void> reset_nic();
  pcie::Result<void> allocate_memory();  // the ring pages and the buffer pool
  void read_mac();
  pcie::Result<void> configure();
  pcie::Result<void> make_rings();
  void configure_receive();
  void configure_transmit();
  pcie::Result<void> wait_link();
  pcie::Result<void> enable_interrupts();
  void unmask_interrupts() const;
  void reclaim_ring_buffers();
  std::uint32_t take_buffer(Holder holder);
  Packet hand_out(std::uint32_t buffer, std::uint16_t length);  // to the caller, a new generation
  bool held_by_caller(const Packet& packet) const;
  std::uint64_t buffer_bus(std::uint32_t buffer) const;
  void refill_rx();
  void handle_causes(std::uint32_t read);  // counts the enabled causes of an ICR read (MSI, INTx)
  pcie::Error fail(pcie::Error error);

  // Declared in order of acquisition; destroyed in reverse, the Quiescer first.
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar0_;
  std::optional<pcie::DmaAllocator> allocator_;
  pcie::DmaPages ring_pages_;    // page 0: receive ring, page 1: transmit ring
  pcie::DmaPages buffer_pages_;  // two 2 KiB packet buffers per page
  std::unique_ptr<pcie::Interrupts> interrupts_;  // after the memory: disabled before it goes
  pcie::WritebackRing<e1000e::RxDescriptor> rx_ring_;
  pcie::WritebackRing<e1000e::TxDescriptor> tx_ring_;
  std::vector<std::uint32_t> rx_slot_buffer_;  // the buffer posted in each receive slot
  std::vector<std::uint32_t> tx_slot_buffer_;  // ... each transmit slot (kNone: transmit_from)
  std::vector<std::uint32_t> free_;            // buffers in the pool
  std::vector<Holder> holder_;                 // who holds each buffer
  std::vector<std::uint32_t> generation_;      // each buffer's hand-outs to the caller
  E1000eOptions options_;
  E1000eInterruptMode mode_ = E1000eInterruptMode::polled;
  MacAddress mac_{};
  E1000eStats stats_;
  E1000eInterruptCounts interrupt_counts_;
  std::uint64_t resets_ = 0;
  std::optional<pcie::Error> failed_;  // a reset failed: every call returns this
  bool rx_discarding_ = false;         // inside a frame spread over descriptors: dropping to its EOP
  std::uint32_t idle_polls_ = 0;       // rx_batch calls in a row that found nothing
  // Last member, so destroyed first: receive and transmit off and bus mastering off before
  // the rings, buffers and interrupts above are released (pcie/quiesce.h).
  pcie::Quiescer quiesce_;
};

}  // namespace examples
