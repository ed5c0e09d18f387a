// The 82574L driver (e1000e_driver.h). Datasheet sections in comments: Intel 82574 GbE
// Controller Family datasheet, rev. 3.4.
#include "examples/e1000e/e1000e_driver.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <thread>

#include "pcie/wait.h"

namespace examples {

using pcie::Errc;
using pcie::make_error;
using pcie::Result;
namespace reg = e1000e;

namespace {

constexpr std::size_t kPage = 4096;
constexpr std::uint32_t kBuffersPerPage = kPage / reg::kBufferBytes;
constexpr std::uint32_t kPollsPerPresenceCheck = 64;
constexpr std::uint16_t kMinFrame = 14;  // an Ethernet header; the NIC pads to 60 (TCTL.PSP)
// Causes the driver enables: MSI-X routes receive, transmit and the rest (link changes)
// to vectors of their own (10.2.4.9, 7.4.2); MSI and INTx have one vector for all.
constexpr std::uint32_t kMsixCauses = reg::kCauseRxQueue0 | reg::kCauseTxQueue0 | reg::kCauseOther;
constexpr std::uint32_t kLegacyCauses = reg::kCauseRxTimer | reg::kCauseTxWriteback | reg::kCauseLinkChange;

// Signals per MSI-X vector (receive, transmit, other) since the last look.
using VectorSignals = std::array<std::uint64_t, 3>;

// Waits up to `timeout` for any of the three vectors, then takes what the others have
// pending too; nullopt when none fired.
Result<std::optional<VectorSignals>> wait_msix_vectors(pcie::Interrupts& interrupts, std::chrono::milliseconds timeout) {
  const pcie::InterruptVector vectors[] = {{&interrupts, 0}, {&interrupts, 1}, {&interrupts, 2}};
  auto which = pcie::wait_any(vectors, timeout);
  if (!which) return std::unexpected(which.error());
  if (!*which) return std::nullopt;
  VectorSignals fired = {0, 0, 0};
  fired[**which] = 1;  // wait_any consumed it
  for (unsigned vector = 0; vector < 3; ++vector) fired[vector] += interrupts.consume(vector).value_or(0);
  return fired;
}

void count_vectors(E1000eInterruptCounts& counts, const VectorSignals& fired) {
  counts.rx += fired[0];
  counts.tx += fired[1];
  counts.other += fired[2];
}

// The IMS bits of the causes whose vectors fired.
std::uint32_t causes_to_reenable(const VectorSignals& fired) {
  return (fired[0] ? reg::kCauseRxQueue0 : 0) | (fired[1] ? reg::kCauseTxQueue0 : 0) |
         (fired[2] ? reg::kCauseOther | reg::kCauseLinkChange : 0);
}

}  // namespace

std::string to_string(const MacAddress& mac) {
  char text[18];
  std::snprintf(text, sizeof text, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4], mac[5]);
  return text;
}

const char* to_string(E1000eInterruptMode mode) {
  switch (mode) {
    case E1000eInterruptMode::polled: return "polled";
    case E1000eInterruptMode::msix: return "MSI-X";
    case E1000eInterruptMode::msi: return "MSI";
    case E1000eInterruptMode::intx: return "INTx";
  }
  return "?";
}

std::uint32_t E1000eDriver::read32(std::uint64_t offset) const {
  return static_cast<std::uint32_t>(bar0_->read(pcie::Width::bits32, offset).value_or(0xffffffffu));
}

void E1000eDriver::write32(std::uint64_t offset, std::uint32_t value) const {
  (void)bar0_->write(pcie::Width::bits32, offset, value);  // a refused write shows in the next STATUS read
}

Result<void> E1000eDriver::usable(const char* operation) const {
  if (failed_) return std::unexpected(*failed_);
  if (!bar0_ || quiesce_.done()) {
    return std::unexpected(make_error(Errc::invalid_argument, operation, device_ ? device_->bdf().to_string() : "e1000e",
                                      "the driver was shut down (or moved from)", "open the device again"));
  }
  return {};
}

pcie::Error E1000eDriver::fail(pcie::Error error) {
  failed_ = error;
  (void)quiesce_.run();  // nothing the NIC was given may be written any more
  return error;
}

Result<E1000eDriver> E1000eDriver::open(std::unique_ptr<pcie::Device> device, const E1000eOptions& options) {
  const std::string name = device ? device->bdf().to_string() : "e1000e";
  auto bad_ring = [](std::uint32_t size) { return size < 8 || size > 256 || size % reg::kRingAlignDescriptors != 0; };
  if (!device || bad_ring(options.rx_ring_size) || bad_ring(options.tx_ring_size) ||
      options.buffers < options.rx_ring_size || options.buffers > 65536) {
    return std::unexpected(make_error(Errc::invalid_argument, "open e1000e", name,
                                      "rings take 8 to 256 descriptors in multiples of 8, and the pool at least "
                                      "rx_ring_size and at most 65536 buffers"));
  }
  E1000eDriver driver;
  driver.device_ = std::move(device);
  driver.options_ = options;
  auto bar0 = driver.device_->open_bar(0);
  if (!bar0) return std::unexpected(bar0.error());
  driver.bar0_ = std::move(*bar0);
  if (driver.read32(reg::kStatus) == ~0u) {
    return std::unexpected(make_error(Errc::device_removed, "open e1000e", name, "STATUS reads all ones: the NIC is gone"));
  }
  // From here on, leaving (an error included) stops the NIC before its memory goes. The
  // steps capture the Region (owned through a unique_ptr: stable when the driver moves).
  pcie::Region* regs = driver.bar0_.get();
  driver.quiesce_ = pcie::Quiescer(*driver.device_, {.stop = [regs] { return stop_nic(*regs); },
                                                     .idle = [regs] { return idle_then_reset(*regs); }});
  if (auto reset = driver.reset_nic(); !reset) return std::unexpected(reset.error());
  if (auto master = driver.device_->enable_bus_master(true); !master) return std::unexpected(master.error());
  if (auto memory = driver.allocate_memory(); !memory) return std::unexpected(memory.error());
  driver.read_mac();
  if (options.interrupts) {
    if (auto enabled = driver.enable_interrupts(); !enabled) return std::unexpected(enabled.error());
  }
  if (auto configured = driver.configure(); !configured) return std::unexpected(configured.error());
  return driver;
}

Result<void> E1000eDriver::stop_nic(pcie::Region& regs) {
  // Receive and transmit off, every interrupt masked, then no new master requests: the
  // first steps of the datasheet's software reset flow (CTRL.GIO Master Disable, 5.2.3.3),
  // as the kernel's e1000e_disable_pcie_master does before every reset.
  for (auto [offset, value] : {std::pair{reg::kRctl, 0u}, {reg::kTctl, 0u}, {reg::kImc, ~0u}}) {
    if (auto written = regs.write(pcie::Width::bits32, offset, value); !written) return written;
  }
  auto control = regs.read(pcie::Width::bits32, reg::kCtrl);
  if (!control) return std::unexpected(control.error());
  return regs.write(pcie::Width::bits32, reg::kCtrl, *control | reg::kCtrlMasterDisable);
}

Result<bool> E1000eDriver::nic_idle(pcie::Region& regs) {
  auto status = regs.read(pcie::Width::bits32, reg::kStatus);
  if (!status) return std::unexpected(status.error());
  if (*status == 0xffffffffull) {
    return std::unexpected(make_error(Errc::device_removed, "quiesce", regs.name(), "STATUS reads all ones"));
  }
  return (*status & reg::kStatusMasterEnabled) == 0;  // no master request pending
}

Result<bool> E1000eDriver::idle_then_reset(pcie::Region& regs) {
  auto idle = nic_idle(regs);
  if (!idle || !*idle) return idle;
  // Idle, with every cause masked since stop_nic: wait out the interrupt-throttling timers
  // before the caller releases the interrupts. QEMU 7.2's e1000e arms one per MSI-X vector
  // with each message (EITR, at least 500 x 256 ns however it is written) and asserts that
  // MSI-X is still enabled when it fires (e1000e_intrmgr_on_msix_throttling_timer): one
  // running when MSI-X is disabled aborts the VM. Its CTRL.RST stops no timer (e1000e_set_ctrl
  // resets only the MAC address), so the reset below does not help there.
  // A register that cannot be read (the NIC going away) means the longest interval there is.
  const auto interval = throttle_interval(regs).value_or(std::chrono::nanoseconds(0xffff * reg::kThrottleUnitNs));
  std::this_thread::sleep_for(2 * interval + kThrottleMargin);
  // Then reset it, as the kernel's e1000e_down does before its interrupts are freed, so that
  // nothing the NIC has armed outlives the driver on real hardware.
  auto control = regs.read(pcie::Width::bits32, reg::kCtrl);
  if (!control) return std::unexpected(control.error());
  if (auto reset = regs.write(pcie::Width::bits32, reg::kCtrl, *control | reg::kCtrlReset); !reset) {
    return std::unexpected(reset.error());
  }
  return true;
}

Result<std::chrono::nanoseconds> E1000eDriver::throttle_interval(pcie::Region& regs) {
  std::uint64_t longest = 0;
  for (unsigned i = 0; i <= reg::kEitrCount; ++i) {
    const std::uint64_t offset = i == reg::kEitrCount ? reg::kItr : reg::kEitr0 + 4 * i;
    auto value = regs.read(pcie::Width::bits32, offset);
    if (!value) return std::unexpected(value.error());
    longest = std::max<std::uint64_t>(longest, *value & 0xffff);
  }
  return std::chrono::nanoseconds(longest * reg::kThrottleUnitNs);
}

Result<void> E1000eDriver::allocate_memory() {
  auto allocator = device_->dma_allocator();
  if (!allocator) return std::unexpected(allocator.error());
  allocator_ = std::move(*allocator);
  auto rings = pcie::DmaPages::allocate(*allocator_, 2);
  if (!rings) return std::unexpected(rings.error());
  ring_pages_ = std::move(*rings);
  auto buffers = pcie::DmaPages::allocate(*allocator_, (options_.buffers + kBuffersPerPage - 1) / kBuffersPerPage);
  if (!buffers) return std::unexpected(buffers.error());
  buffer_pages_ = std::move(*buffers);
  holder_.assign(options_.buffers, Holder::pool);
  generation_.assign(options_.buffers, 0);
  free_.reserve(options_.buffers);
  for (std::uint32_t b = options_.buffers; b-- > 0;) free_.push_back(b);  // buffer 0 first out
  rx_slot_buffer_.assign(options_.rx_ring_size, Packet::kNone);
  tx_slot_buffer_.assign(options_.tx_ring_size, Packet::kNone);
  return {};
}

void E1000eDriver::read_mac() {
  // The MAC address the EEPROM loaded into Receive Address 0 (10.2.5.11); kept valid (AV)
  // for the filter when not promiscuous.
  const std::uint32_t low = read32(reg::kRal0);
  const std::uint32_t high = read32(reg::kRah0);
  for (int i = 0; i < 4; ++i) mac_[i] = static_cast<std::uint8_t>(low >> (8 * i));
  mac_[4] = static_cast<std::uint8_t>(high);
  mac_[5] = static_cast<std::uint8_t>(high >> 8);
  write32(reg::kRah0, (high & 0xffffu) | (1u << 31));
}

Result<pcie::WaitResult<std::uint32_t>> E1000eDriver::wait_register(std::uint64_t offset, bool (*done)(std::uint32_t),
                                                                   std::chrono::milliseconds timeout,
                                                                   const char* operation) const {
  auto waited = pcie::wait_until([this, offset] { return read32(offset); },
                                 [done](std::uint32_t value) { return value == ~0u || done(value); },
                                 {.timeout = timeout, .spin = std::chrono::microseconds(10)});
  if (!waited) return std::unexpected(waited.error());
  if (waited->value == ~0u) {
    return std::unexpected(make_error(Errc::device_removed, operation, device_->bdf().to_string(),
                                      "the NIC's registers read all ones: it is gone"));
  }
  return *waited;
}

Result<std::uint32_t> E1000eDriver::poll(std::uint64_t offset, bool (*done)(std::uint32_t), std::chrono::milliseconds timeout,
                                         const char* operation, const std::string& awaited) const {
  auto waited = wait_register(offset, done, timeout, operation);
  if (!waited) return std::unexpected(waited.error());
  if (!waited->matched) {
    return std::unexpected(make_error(Errc::io_error, operation, device_->bdf().to_string(),
                                      awaited + " not within " + std::to_string(timeout.count()) + " ms"));
  }
  return waited->value;
}

Result<void> E1000eDriver::reset_nic() {
  // The software reset flow (4.6.1, 5.2.3.3): the NIC stopped and its master requests
  // drained first, so that no DMA is cut off half way or lands after the reset; the reset
  // clears every register but the PCI ones; the MAC address is read only once the EEPROM
  // has been loaded again (EECD.AUTO_RD, as the kernel's e1000e_get_auto_rd_done).
  const auto timeout = options_.reset_timeout;
  if (auto stopped = stop_nic(*bar0_); !stopped) return stopped;
  auto idle = wait_register(reg::kStatus, [](std::uint32_t status) { return (status & reg::kStatusMasterEnabled) == 0; },
                            timeout, "reset e1000e");
  // Requests that never drain are no reason to leave the NIC unreset (5.2.3.3: software
  // resets after the wait either way); a NIC that is gone, or a failed wait, is.
  if (!idle) return std::unexpected(idle.error());
  if (!idle->matched) ++stats_.resets_without_drain;
  write32(reg::kCtrl, read32(reg::kCtrl) | reg::kCtrlReset);
  auto reset = poll(reg::kCtrl, [](std::uint32_t control) { return (control & reg::kCtrlReset) == 0; }, timeout,
                    "reset e1000e", "CTRL.RST clear");
  if (!reset) return std::unexpected(reset.error());
  auto loaded = poll(reg::kEecd, [](std::uint32_t eecd) { return (eecd & reg::kEecdAutoReadDone) != 0; }, timeout,
                     "reset e1000e", "EECD.AUTO_RD (the EEPROM loaded)");
  if (!loaded) return std::unexpected(loaded.error());
  write32(reg::kImc, ~0u);  // the reset may leave causes enabled in IMS (4.6.1)
  (void)read32(reg::kIcr);  // and pending: read to clear
  return {};
}

Result<void> E1000eDriver::configure() {
  if (auto rings = make_rings(); !rings) return rings;
  configure_receive();
  configure_transmit();
  write32(reg::kCtrl, read32(reg::kCtrl) | reg::kCtrlSetLinkUp);
  if (auto link = wait_link(); !link) return link;
  if (mode_ != E1000eInterruptMode::polled) unmask_interrupts();
  return {};
}

Result<void> E1000eDriver::make_rings() {
  auto rx_tail = pcie::Doorbell::at(*bar0_, reg::kRdt);
  if (!rx_tail) return std::unexpected(rx_tail.error());
  auto tx_tail = pcie::Doorbell::at(*bar0_, reg::kTdt);
  if (!tx_tail) return std::unexpected(tx_tail.error());
  auto rx = pcie::WritebackRing<reg::RxDescriptor>::create(
      {ring_pages_.page(0), options_.rx_ring_size * sizeof(reg::RxDescriptor)}, options_.rx_ring_size,
      {.byte_offset = reg::kStatusByte, .mask = reg::kRxStatusDone}, std::move(*rx_tail));
  if (!rx) return std::unexpected(rx.error());
  auto tx = pcie::WritebackRing<reg::TxDescriptor>::create(
      {ring_pages_.page(1), options_.tx_ring_size * sizeof(reg::TxDescriptor)}, options_.tx_ring_size,
      {.byte_offset = reg::kStatusByte, .mask = reg::kTxStatusDone}, std::move(*tx_tail));
  if (!tx) return std::unexpected(tx.error());
  rx_ring_ = std::move(*rx);
  tx_ring_ = std::move(*tx);
  ring_pages_.sync_for_device();
  return {};
}

void E1000eDriver::configure_receive() {
  // Legacy descriptors (RFCTL.EXSTEN 0), 2 KiB buffers (BSIZE 00b), CRC stripped, broadcast
  // accepted; ring base and length before the enable (7.1.8).
  const std::uint64_t ring = ring_pages_.bus(0).value;
  write32(reg::kRfctl, 0);
  for (std::uint64_t i = 0; i < 128; ++i) write32(reg::kMta + 4 * i, 0);
  write32(reg::kRdbal, static_cast<std::uint32_t>(ring));
  write32(reg::kRdbah, static_cast<std::uint32_t>(ring >> 32));
  write32(reg::kRdlen, options_.rx_ring_size * sizeof(reg::RxDescriptor));
  write32(reg::kRdh, 0);
  write32(reg::kRdt, 0);
  refill_rx();  // the tail moves as buffers are posted
  std::uint32_t control = reg::kRctlEnable | reg::kRctlBroadcastAccept | reg::kRctlStripCrc;
  if (options_.promiscuous) control |= reg::kRctlUnicastPromiscuous | reg::kRctlMulticastPromiscuous;
  if (options_.loopback) control |= reg::kRctlMacLoopback;
  write32(reg::kRctl, control);
}

void E1000eDriver::configure_transmit() {
  const std::uint64_t ring = ring_pages_.bus(1).value;
  write32(reg::kTdbal, static_cast<std::uint32_t>(ring));
  write32(reg::kTdbah, static_cast<std::uint32_t>(ring >> 32));
  write32(reg::kTdlen, options_.tx_ring_size * sizeof(reg::TxDescriptor));
  write32(reg::kTdh, 0);
  write32(reg::kTdt, 0);
  write32(reg::kTipg, reg::kTipgDefault);
  write32(reg::kTctl, reg::kTctlEnable | reg::kTctlPadShort | reg::kTctlCollisionThreshold | reg::kTctlCollisionDistance);
}

Result<void> E1000eDriver::wait_link() {
  auto up = poll(reg::kStatus, [](std::uint32_t status) { return (status & reg::kStatusLinkUp) != 0; }, options_.link_timeout,
                 "link up", "STATUS.LU");
  if (!up) {
    pcie::Error error = up.error();
    if (error.code == Errc::io_error) error.hint = "is a cable (or QEMU's -netdev) attached?";
    return std::unexpected(error);
  }
  return {};
}

Result<void> E1000eDriver::enable_interrupts() {
  // MSI-X with a vector per cause where there are three, else one MSI vector, else INTx.
  const std::pair<pcie::IrqKind, E1000eInterruptMode> choices[] = {
      {pcie::IrqKind::msix, E1000eInterruptMode::msix},
      {pcie::IrqKind::msi, E1000eInterruptMode::msi},
      {pcie::IrqKind::intx, E1000eInterruptMode::intx}};
  for (auto [kind, mode] : choices) {
    auto offered = device_->vector_count(kind);
    const unsigned wanted = kind == pcie::IrqKind::msix ? 3 : 1;
    if (!offered || *offered < wanted) continue;
    auto set = device_->enable_interrupts(kind, wanted);
    if (!set) return std::unexpected(set.error());
    interrupts_ = std::move(*set);
    mode_ = mode;
    return {};
  }
  return std::unexpected(make_error(Errc::not_supported, "enable interrupts", device_->bdf().to_string(),
                                    "the backend offers no MSI-X, MSI or INTx vector"));
}

void E1000eDriver::unmask_interrupts() const {
  if (mode_ == E1000eInterruptMode::msix) {
    // Receive queue 0 on vector 0, transmit queue 0 on 1, other causes on 2; a transmit
    // interrupt on every write-back (IVAR, 10.2.4.9). The MSI-X causes clear themselves
    // from ICR when their vector fires (EIAC, receive and transmit); an IMS write clears the vector's pending
    // bit (CTRL_EXT.PBA_CLR). The kernel's e1000e driver sets the NIC up the same way.
    write32(reg::kIvar, (reg::kIvarValid | 0) << reg::kIvarRxShift | (reg::kIvarValid | 1) << reg::kIvarTxShift |
                            (reg::kIvarValid | 2) << reg::kIvarOtherShift | reg::kIvarTxEveryWriteback);
    write32(reg::kCtrlExt, read32(reg::kCtrlExt) | reg::kCtrlExtPbaClear | reg::kCtrlExtEiame);
    // OTHER is left out of EIAC, as the kernel's driver does since 2018 ("e1000e: Remove
    // Other from EIAC"): auto-cleared while LSC stays in ICR, any later look at ICR would
    // raise OTHER, and its vector, again. The handler clears both by writing ICR.
    write32(reg::kEiac, reg::kCauseRxQueue0 | reg::kCauseTxQueue0);
    write32(reg::kIms, kMsixCauses | reg::kCauseLinkChange);
  } else {
    write32(reg::kIms, kLegacyCauses);
  }
}

Result<bool> E1000eDriver::wait_for_interrupt(std::chrono::milliseconds timeout) {
  if (auto ok = usable("wait for an interrupt"); !ok) return std::unexpected(ok.error());
  if (!interrupts_) {
    return std::unexpected(make_error(Errc::not_supported, "wait for an interrupt", device_->bdf().to_string(),
                                      "the driver polls", "open it with E1000eOptions::interrupts"));
  }
  if (mode_ != E1000eInterruptMode::msix) {
    auto fired = interrupts_->wait(0, timeout);
    if (!fired) return std::unexpected(fired.error());
    if (*fired == 0) return false;
    handle_causes(read32(reg::kIcr));  // reading ICR clears it (10.2.4.1)
    // A failed unmask shows as the next wait's timeout; the NIC's state is already handled.
    if (mode_ == E1000eInterruptMode::intx) (void)interrupts_->rearm(0);
    return true;
  }
  auto fired = wait_msix_vectors(*interrupts_, timeout);
  if (!fired) return std::unexpected(fired.error());
  if (!*fired) return false;
  count_vectors(interrupt_counts_, **fired);
  if ((**fired)[2] != 0) {
    // The causes behind OTHER (LSC) are cleared by writing them back: QEMU's model clears
    // nothing on an ICR read in MSI-X mode, and a cause left set would raise the other
    // vector again with every later cause (10.2.4.1). Where the read does clear (the
    // kernel's e1000_msix_other assumes so), it may also have taken a queue cause whose
    // vector has not fired yet: raised again through ICS, as that handler does.
    const std::uint32_t causes = read32(reg::kIcr);
    if (causes != ~0u) {
      if ((causes & reg::kCauseLinkChange) != 0) ++interrupt_counts_.link_changes;
      write32(reg::kIcr, causes & ~(reg::kRxCauses | reg::kTxCauses));
      const std::uint32_t queues = causes & (reg::kCauseRxQueue0 | reg::kCauseTxQueue0);
      if (queues != 0) write32(reg::kIcs, queues);
    }
  }
  // Enable the causes that fired again, as the kernel's driver does after each vector.
  write32(reg::kIms, causes_to_reenable(**fired));
  return true;
}

void E1000eDriver::handle_causes(std::uint32_t read) {
  if (read == ~0u) return;  // the NIC is gone; the next rx_batch says so
  // ICR shows every cause that happened, the masked ones too (TXQE once the transmit ring
  // runs empty, the MSI-X queue bits): only the enabled ones raised this interrupt.
  const std::uint32_t causes = read & kLegacyCauses;
  if (causes & reg::kRxCauses) ++interrupt_counts_.rx;
  if (causes & reg::kTxCauses) ++interrupt_counts_.tx;
  if (causes & ~(reg::kRxCauses | reg::kTxCauses | reg::kCauseOther | reg::kCauseAsserted)) ++interrupt_counts_.other;
  if (causes & reg::kCauseLinkChange) ++interrupt_counts_.link_changes;
}

bool E1000eDriver::link_up() const {
  const std::uint32_t status = read32(reg::kStatus);
  return status != ~0u && (status & reg::kStatusLinkUp) != 0;
}

std::uint64_t E1000eDriver::buffer_bus(std::uint32_t buffer) const {
  return buffer_pages_.bus_at(std::size_t{buffer} * reg::kBufferBytes).value;
}

std::uint32_t E1000eDriver::take_buffer(Holder holder) {
  const std::uint32_t buffer = free_.back();
  free_.pop_back();
  holder_[buffer] = holder;
  return buffer;
}

Packet E1000eDriver::hand_out(std::uint32_t buffer, std::uint16_t length) {
  holder_[buffer] = Holder::caller;
  return Packet{.buffer = buffer, .length = length, .generation = ++generation_[buffer]};
}

bool E1000eDriver::held_by_caller(const Packet& packet) const {
  return packet.buffer < holder_.size() && holder_[packet.buffer] == Holder::caller &&
         generation_[packet.buffer] == packet.generation;
}

void E1000eDriver::refill_rx() {
  (void)rx_ring_.refill([this](std::uint32_t slot) -> std::optional<reg::RxDescriptor> {
    if (free_.empty()) return std::nullopt;  // RNBC counts what the NIC drops meanwhile
    const std::uint32_t buffer = take_buffer(Holder::rx_ring);
    rx_slot_buffer_[slot] = buffer;
    buffer_pages_.sync_page_for_device(std::size_t{buffer} / kBuffersPerPage);
    return reg::RxDescriptor{.buffer = buffer_bus(buffer)};
  });
}

void E1000eDriver::reclaim_ring_buffers() {
  for (std::uint32_t buffer = 0; buffer < holder_.size(); ++buffer) {
    if (holder_[buffer] == Holder::rx_ring || holder_[buffer] == Holder::tx_ring) {
      holder_[buffer] = Holder::pool;
      free_.push_back(buffer);
    }
  }
  std::fill(rx_slot_buffer_.begin(), rx_slot_buffer_.end(), Packet::kNone);
  std::fill(tx_slot_buffer_.begin(), tx_slot_buffer_.end(), Packet::kNone);
  rx_discarding_ = false;
}

Result<std::size_t> E1000eDriver::rx_batch(std::span<Packet> out) {
  if (auto ok = usable("receive"); !ok) return std::unexpected(ok.error());
  std::size_t count = 0;
  while (count < out.size()) {
    const std::optional<reg::RxDescriptor> written = rx_ring_.peek();
    if (!written) break;
    const std::uint32_t buffer = rx_slot_buffer_[rx_ring_.head()];
    rx_ring_.reap();
    buffer_pages_.sync_page_for_cpu(std::size_t{buffer} / kBuffersPerPage);
    // Every frame fits one 2 KiB buffer (long packets are off): a frame without EOP, or
    // with errors, is not one to hand on (7.1.4.3). A frame the NIC spread over several
    // descriptors anyway is dropped whole, up to and including its EOP descriptor, so that
    // its tail is never handed on as a frame of its own.
    const bool end_of_packet = (written->status & reg::kRxStatusEndOfPacket) != 0;
    const bool part_of_dropped = rx_discarding_;
    rx_discarding_ = !end_of_packet;
    if (!end_of_packet || part_of_dropped || written->errors != 0 || written->length > reg::kBufferBytes) {
      stats_.rx_dropped += !part_of_dropped;
      holder_[buffer] = Holder::pool;
      free_.push_back(buffer);
      continue;
    }
    out[count++] = hand_out(buffer, written->length);
  }
  refill_rx();
  idle_polls_ = count == 0 ? idle_polls_ + 1 : 0;
  // Whether the NIC is still there: on a revoked mapping at once, else by a STATUS read at
  // the first empty poll after frames and then at every kPollsPerPresenceCheck-th: each
  // register read is a round trip over PCIe (a VM exit under emulation), which a polling
  // loop must not pay for every poll.
  if (count == 0 && (bar0_->revoked() ||
                     ((idle_polls_ - 1) % kPollsPerPresenceCheck == 0 && read32(reg::kStatus) == ~0u))) {
    return std::unexpected(make_error(Errc::device_removed, "receive", device_->bdf().to_string(),
                                      "STATUS reads all ones: the NIC is gone"));
  }
  return count;
}

std::size_t E1000eDriver::reap_transmitted() {
  std::size_t count = 0;
  while (tx_ring_.peek()) {
    const std::uint32_t slot = tx_ring_.head();
    tx_ring_.reap();
    const std::uint32_t buffer = std::exchange(tx_slot_buffer_[slot], Packet::kNone);
    if (buffer != Packet::kNone) {
      holder_[buffer] = Holder::pool;
      free_.push_back(buffer);
    }
    ++count;
  }
  return count;
}

Result<std::size_t> E1000eDriver::tx_batch(std::span<const Packet> packets) {
  if (auto ok = usable("transmit"); !ok) return std::unexpected(ok.error());
  // Checked before anything is posted; a buffer named twice is caught by marking each as
  // it is checked.
  std::size_t checked = 0;
  auto undo_marks = [&] {
    for (std::size_t i = 0; i < checked; ++i) holder_[packets[i].buffer] = Holder::caller;
  };
  for (; checked < packets.size(); ++checked) {
    const Packet& packet = packets[checked];
    if (!held_by_caller(packet) || packet.length < kMinFrame || packet.length > reg::kMaxFrameBytes) {
      undo_marks();
      return std::unexpected(make_error(Errc::invalid_argument, "transmit", device_->bdf().to_string(),
                                        "packet " + std::to_string(checked) + " (buffer " + std::to_string(packet.buffer) +
                                            ", " + std::to_string(packet.length) + " bytes) " +
                                            (held_by_caller(packet) ? "is not 14 to 1514 bytes long"
                                                                    : "is not a buffer the caller holds (sent or released already?)")));
    }
    holder_[packet.buffer] = Holder::tx_ring;  // a second mention now fails the check above
  }
  undo_marks();
  reap_transmitted();
  std::size_t taken = 0;
  for (const Packet& packet : packets) {
    if (tx_ring_.free_slots() == 0) break;
    buffer_pages_.sync_page_for_device(std::size_t{packet.buffer} / kBuffersPerPage);
    const reg::TxDescriptor descriptor{
        .buffer = buffer_bus(packet.buffer), .length = packet.length,
        .command = reg::kTxCommandEndOfPacket | reg::kTxCommandInsertCrc | reg::kTxCommandReportStatus};
    const std::uint32_t slot = *tx_ring_.post(descriptor);  // cannot fail: a free slot
    tx_slot_buffer_[slot] = packet.buffer;
    holder_[packet.buffer] = Holder::tx_ring;
    ++taken;
  }
  stats_.tx_refused += packets.size() - taken;
  if (taken > 0) tx_ring_.ring();
  return taken;
}

Result<void> E1000eDriver::transmit_from(pcie::BusAddress address, std::uint16_t length) {
  if (auto ok = usable("transmit"); !ok) return std::unexpected(ok.error());
  if (length < kMinFrame || length > reg::kMaxFrameBytes) {
    return std::unexpected(make_error(Errc::invalid_argument, "transmit", device_->bdf().to_string(),
                                      std::to_string(length) + " bytes: a frame is 14 to 1514 bytes long"));
  }
  reap_transmitted();
  if (tx_ring_.free_slots() == 0) {
    return std::unexpected(make_error(Errc::busy, "transmit", device_->bdf().to_string(), "the transmit ring is full"));
  }
  const reg::TxDescriptor descriptor{
      .buffer = address.value, .length = length,
      .command = reg::kTxCommandEndOfPacket | reg::kTxCommandInsertCrc | reg::kTxCommandReportStatus};
  const std::uint32_t slot = *tx_ring_.post(descriptor);
  tx_slot_buffer_[slot] = Packet::kNone;
  tx_ring_.ring();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  while (tx_ring_.posted() > 0) {
    reap_transmitted();
    if (tx_ring_.posted() == 0) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return std::unexpected(make_error(Errc::io_error, "transmit", device_->bdf().to_string(),
                                        "the NIC did not write the descriptor back within 1 s", "reset() the NIC"));
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  return {};
}

Result<Packet> E1000eDriver::allocate_packet() {
  if (auto ok = usable("allocate a packet"); !ok) return std::unexpected(ok.error());
  if (free_.empty()) reap_transmitted();
  if (free_.empty()) {
    return std::unexpected(make_error(Errc::busy, "allocate a packet", device_->bdf().to_string(),
                                      "every buffer of the pool is held or in a ring",
                                      "release or send the packets you hold, or open with more buffers"));
  }
  return hand_out(take_buffer(Holder::caller), 0);
}

Result<void> E1000eDriver::release(const Packet& packet) {
  if (!held_by_caller(packet)) {
    return std::unexpected(make_error(Errc::invalid_argument, "release a packet", device_ ? device_->bdf().to_string() : "e1000e",
                                      "buffer " + std::to_string(packet.buffer) + " is not one the caller holds"));
  }
  holder_[packet.buffer] = Holder::pool;
  free_.push_back(packet.buffer);
  return {};
}

std::span<std::byte> E1000eDriver::buffer(const Packet& packet) {
  if (!held_by_caller(packet)) return {};
  return {buffer_pages_.at(std::size_t{packet.buffer} * reg::kBufferBytes), reg::kBufferBytes};
}

const E1000eStats& E1000eDriver::stats() {
  if (!bar0_ || read32(reg::kStatus) == ~0u) return stats_;
  auto octets = [this](std::uint64_t low) {
    const std::uint64_t first = read32(low);  // the low half first: reading the high half clears both
    return first | std::uint64_t{read32(low + 4)} << 32;
  };
  stats_.rx_packets += read32(reg::kGoodRxPackets);
  stats_.tx_packets += read32(reg::kGoodTxPackets);
  stats_.rx_bytes += octets(reg::kGoodRxOctetsLow);
  stats_.tx_bytes += octets(reg::kGoodTxOctetsLow);
  stats_.rx_missed += read32(reg::kMissedPackets);
  stats_.rx_no_buffers += read32(reg::kRxNoBuffers);
  stats_.crc_errors += read32(reg::kCrcErrors);
  return stats_;
}

Result<void> E1000eDriver::reset() {
  if (auto ok = usable("reset"); !ok) return ok;
  if (auto nic = reset_nic(); !nic) return std::unexpected(fail(nic.error()));
  reclaim_ring_buffers();
  if (auto configured = configure(); !configured) return std::unexpected(fail(configured.error()));
  ++resets_;
  return {};
}

Result<void> E1000eDriver::shutdown() { return quiesce_.run(); }

}  // namespace examples
