// A strict Intel 82574L Gigabit Ethernet controller (QEMU's "e1000e") behind the testing
// kit's fake device (target //:pcie_testing), for unit tests of NIC drivers without a VM:
// where QEMU forgives a protocol error that a real 82574 punishes (a stale descriptor, a
// ring freed under the DMA engine, a tail handed back past the head), this model does what
// it can of what the hardware does and records the error as a violation naming the rule and
// the 82574 datasheet section (chapter 7 "Inline Functions", chapter 10 "Programming
// Interface"), so that a driver defect fails a unit test instead of a network.
//
// What it models: one receive and one transmit queue of legacy descriptors (7.1, 7.2),
// no offloads, no VLAN stripping, no interrupt moderation timers:
//  - BAR0, 128 KiB, 32-bit accesses only (10.2): CTRL (SLU, RST), STATUS (FD, LU, speed
//    1000, GIO master enable), CTRL_EXT, EERD (a 64-word EEPROM holding the MAC address),
//    MDIC (PHY address 1, registers 0-31; its IDs and status read-only), the interrupt
//    registers ICR, ICS, IMS, IMC, EIAC, IAM, IVAR, the RX and TX ring registers, RCTL,
//    TCTL, TIPG, RXCSUM, RFCTL, MTA, RAL/RAH 0-15, VFTA, and the statistics block
//    0x4000-0x4124 (clear on read, a 64-bit counter's halves both at the read of its high
//    half; the model counts MPC, GPRC, BPRC, MPRC, GORCL/H, TORL/H, TPR, RNBC, RUC, ROC,
//    GPTC, BPTC, MPTC, GOTCL/H, TOTL/H, TPT; CRCERRS and the others stay 0). Registers a
//    driver commonly writes but the model gives no effect are stored (FCAL/FCAH/FCT/FCTTV/
//    FCRTL/FCRTH, VET, ITR, EITR 0-4, LEDCTL, EXTCNF_CTRL, PBA, RDTR, RADV, RSRPD, RAID,
//    TIDV, TADV, TARC0, KABGTXD, RXDCTL, TXDCTL, PSRCTL, MRQC, GCR, SWSM, FWSM, PBACLR,
//    EECD, TXCW, RXCW, WUC, WUFC, MANC). Any other offset is a violation: reads
//    return 0, writes are dropped. So is an access other than 32 bits: at a register's
//    offset it is dropped (reads return 0); one that starts inside a register (an 8-bit read
//    of RAL0's second byte) never reaches the model (the register model runs hooks by start
//    offset), is found in BAR0's access log and reported at the next violations() call.
//  - BAR3, 16 KiB: the MSI-X table's BAR, plain storage (the DeviceModel's Interrupts are
//    the vectors: DeviceModelOptions::msix_vectors, at most 5). No I/O BAR. PCI vendor and
//    device IDs (8086:10d3) are not modelled: the DeviceModel has no configuration space.
//
//   pcie::testing::E1000eModel nic;                              // MAC 52:54:00:12:34:56
//   auto driver = MyE1000eDriver::open(nic.open());              // a std::unique_ptr<pcie::Device>
//   driver->send(frame);                                         // TDT write: sent at once
//   EXPECT_EQ(nic.take_transmitted(), std::vector<std::vector<std::byte>>{frame});
//   EXPECT_EQ(nic.receive(reply), pcie::testing::E1000eRxOutcome::delivered);
//   EXPECT_TRUE(nic.violations().empty());
//
// Semantic choices a driver author must know (QEMU 7.2's hw/net/e1000e_core.c where the
// datasheet leaves room; differences are noted):
//  - Receive: a frame shorter than 60 bytes is padded to 60 with zeros (QEMU does; RUC
//    counts it). Without RCTL.SECRC the frame is followed by 4 zero bytes standing for the
//    FCS, counted in the descriptor length; with it they are left out. A frame larger than
//    one buffer (RCTL.BSIZE/BSEX) spans descriptors, EOP on the last; a frame that does not
//    fit in the descriptors the device owns is dropped whole (RNBC, MPC, ICR.RXO). Frames
//    larger than 1522 bytes (16384 with RCTL.LPE) are dropped (ROC). Filtering: unicast
//    with UPE or a RAL/RAH match with AV; broadcast with BAM; multicast with MPE, a RAL/RAH
//    match or its MTA hash bit (RCTL.MO). Each descriptor is written back whole (16 bytes:
//    the buffer address unchanged, the length, checksum 0, status DD and EOP on the last,
//    errors 0, special 0) after its buffer; then RDH advances. TPR counts every frame that
//    reached an enabled receiver with the link up, GPRC and GORC (bytes with the 4 FCS
//    bytes, as the 82574's octet counters count them) those delivered.
//  - Transmit: descriptors from TDH to TDT are fetched, their buffers read and frames
//    assembled across descriptors until EOP; with TCTL.PSP a frame under 60 bytes is padded
//    to 60 on the wire. The frame goes to the wire queue (transmitted()) or, with RCTL.LBM
//    = 01b (MAC loopback), to the model's own receive path. DD is written back (the upper
//    4 bytes of the descriptor) when RS is set or IVAR bit 31 is; then TDH advances.
//    TPT/GPTC/GOTC count sent frames (GOTC with the FCS).
//  - Descriptor prefetch: as the 82574 prefetches (7.1.8, 7.2), the model reads the
//    descriptors a tail write hands it at that write when the queue is enabled (at the
//    enable otherwise), and again when it uses them: a descriptor that changed in between
//    was changed while the device owned it, a violation. A descriptor with buffer address
//    0 is written back with DD only and skipped, as 7.1.7.2 (null descriptor padding) says
//    the hardware does, and flagged: a driver that hands one over has forgotten to fill it.
//  - Interrupts (10.2.4): causes set ICR bits; ICR.INT_ASSERTED is set while any cause is.
//    Not in MSI-X mode: a message (MSI vector 0, else INTx 0: one eventfd signal, not a
//    level) for each new cause in ICR & IMS; an ICR read returns the causes and clears them
//    (and, with CTRL_EXT.IAME while asserted, clears IMS bits in IAM). In MSI-X mode (the
//    driver enabled MSI-X on the Device): the causes RXQ0, TXQ0 and OTHER (OTHER stands for
//    LSC, RXO, MDAC) each go to the vector their IVAR entry names; EIAC bits clear their
//    ICR bit once the message is sent, CTRL_EXT.EIAME clears IMS bits in IAM & cause; an ICR
//    read clears nothing (unless IMS is 0, or IAME as above); write 1 to clear. RX raises
//    RXT0 (and RXQ0 in MSI-X mode), TX raises TXDW for a written-back descriptor (and TXQ0
//    in MSI-X mode) and TXQE when it emptied the ring, link changes raise LSC. Differences
//    from QEMU 7.2: there EIAME clears IAM bits (instead of IMS & IAM & cause), EIAC also
//    clears IMS bits when IAME is off, an ICR read clears ICR only when IMS is 0 or IAME
//    applies (later QEMU clears it outside MSI-X mode too, as here), and in MSI-X mode RX
//    and TX raise only RXQ0 and TXQ0. A driver that re-enables its causes with IMS after
//    handling them, and clears the ICR bits it handled, works on both. Not modelled:
//    CTRL_EXT.PBA_CLR, ITR/EITR and the delay timers (every message goes out at once).
//  - CTRL.RST resets the MAC as the 82574 does (QEMU 7.2 only reloads the MAC address):
//    every register back to its default, rings and queued work dropped, statistics zero,
//    RAL0/RAH0 reloaded from the EEPROM, link down until CTRL.SLU is set again. The link
//    comes up (STATUS.LU, FD, 1000 Mb/s; ICR.LSC) at the write that sets CTRL.SLU while the
//    cable is in (set_link()). A reset written while bus mastering is on and CTRL.GIO
//    Master Disable is clear is a violation: on the 82574 it cuts off DMA in flight
//    (5.2.3.3; the kernel's driver disables mastering and polls STATUS first). The model
//    itself completes every DMA at once, so STATUS.GIO Master Enable clears at the write
//    of GIO Master Disable.
//  - After a DMA fault (an unmapped bus address, bus mastering off) the queue stops, as a
//    device that got an Unsupported Request for its DMA would, until CTRL.RST.
//
// Thread-safe: a driver may poll or write tails in one thread while the test feeds frames
// or calls process() in another; the model's lock is held while it works a queue (its DMA
// included), never while the DeviceModel calls back into it. Devices it opened may outlive
// the model: their registers then only store what is written.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/device.h"
#include "pcie/testing/device_model.h"
#include "pcie/testing/register_model.h"

namespace pcie::testing {

// The rule names that begin each violation's text ("DMA fault: ... (82574 datasheet, ...)"),
// for tests that provoke one on purpose.
namespace e1000e_rule {
// A BAR0 access other than 32 bits: at a register's offset it is dropped (a read returns
// 0); one that starts inside a register is found in BAR0's access log (10.2).
inline constexpr std::string_view kRegisterWidth = "register access width";
// A BAR0 access at an offset where the model has no register: a read returns 0, a write
// is dropped (10.2).
inline constexpr std::string_view kUnknownRegister = "unknown register";
// RCTL.EN or TCTL.EN set before the ring's base (xDBAL) and length (xDLEN) were written, or
// with the ring at bus address 0 (7.1.8, 7.2).
inline constexpr std::string_view kRingNotSet = "queue enabled before its ring was set";
// xDLEN not a multiple of 128 bytes (8 descriptors), or 0 when the queue is enabled
// (7.1.8, 7.2).
inline constexpr std::string_view kRingLength = "ring length invalid";
// xDBAL not 16-byte aligned: the model, as the 82574, ignores bits 3:0 (7.1.8, 7.2).
inline constexpr std::string_view kRingAlignment = "ring base misaligned";
// xDBAL, xDBAH, xDLEN or xDH written while the queue is enabled (RCTL.EN, TCTL.EN); the
// write takes effect and the descriptors prefetched are dropped (7.1.8, 7.2).
inline constexpr std::string_view kRingChangedWhileEnabled = "ring register written while enabled";
// A head (xDH) or tail (xDT) written at or past the ring's descriptor count: the write is
// ignored (7.1.8, 7.2).
inline constexpr std::string_view kIndexBeyondRing = "head or tail beyond the ring";
// A tail write that hands over more descriptors than the driver owns (the tail overtook
// the head): the write is ignored (7.1.8, 7.2).
inline constexpr std::string_view kTailPastHead = "tail moved past the head";
// A descriptor that changed between the tail write that handed it over and its use: the
// 82574 may have prefetched the old one (7.1.8, 7.2).
inline constexpr std::string_view kDescriptorChanged = "descriptor changed while the device owned it";
// A DMA to or from a bus address the driver has not mapped for that direction; the queue
// stops until CTRL.RST (7.1, 7.2).
inline constexpr std::string_view kDmaFault = "DMA fault";
// A DMA attempted with Bus Master Enable off: the driver let go of a device it had not
// stopped; the queue stops until CTRL.RST (PCI Local Bus 3.0, 6.2.2).
inline constexpr std::string_view kDmaWithoutBusMaster = "DMA without bus mastering";
// A transmit descriptor the model does not take: DEXT set (context or data descriptor), or
// a length of 0 or over 16288 bytes; its frame is dropped (7.2).
inline constexpr std::string_view kTxDescriptor = "invalid TX descriptor";
// A transmit frame still without EOP after 64 descriptors: it is dropped (7.2).
inline constexpr std::string_view kTxNoEop = "TX frame without EOP";
// A transmit frame over 1522 bytes without FCS (16384 with RCTL.LPE): not sent (7.2).
inline constexpr std::string_view kTxFrameTooLong = "TX frame too long";
// A receive descriptor handed over with buffer address 0: skipped as null descriptor
// padding, written back with DD only (7.1.7.2).
inline constexpr std::string_view kRxBufferNull = "RX buffer address 0";
// RCTL or RFCTL asks for a descriptor format the model does not write: extended
// (RFCTL.EXSTEN), packet split (RCTL.DTYP), flexible buffers (RCTL.FLXBUF), or the
// reserved RCTL.BSEX with BSIZE 00b; the model writes legacy descriptors anyway (7.1).
inline constexpr std::string_view kUnsupportedRxFormat = "unsupported receive descriptor format";
// A DMA mapping removed while it holds an enabled queue's ring or the buffer of a
// descriptor the device owns (7.1.8, 7.2).
inline constexpr std::string_view kLiveMemoryUnmapped = "live memory unmapped";
// In MSI-X mode, a cause enabled in IMS whose IVAR entry is not valid or names a vector
// the device does not have: no message is sent (10.2.4).
inline constexpr std::string_view kMsixUnrouted = "MSI-X cause without a valid IVAR entry";
// CTRL.RST written with bus mastering on and CTRL.GIO Master Disable clear: the 82574
// would cut off DMA in flight (5.2.3.3, 10.2.2.1).
inline constexpr std::string_view kResetWithoutMasterDisable = "reset without GIO Master Disable";
}  // namespace e1000e_rule

// How an E1000eModel is built: the fake device under it, the MAC address in its EEPROM,
// when it does its work, and the link partner.
struct E1000eModelOptions {
  // The fake device under the NIC: INTx, MSI and the 82574's 5 MSI-X vectors (more are
  // clamped to 5).
  DeviceModelOptions device{.msix_vectors = 5};
  // The station address in the EEPROM, loaded into RAL0/RAH0 (with AV) at power-on and at
  // every CTRL.RST, and read through EERD words 0-2.
  std::array<std::uint8_t, 6> mac{0x52, 0x54, 0x00, 0x12, 0x34, 0x56};
  // When the model does the work a driver hands it (transmits, received frames).
  enum class Completion {
    immediate,   // a tail write does its work at once; receive() delivers at once
    on_process,  // work waits for process(): a driver's timeout and backpressure paths
  } completion = Completion::immediate;  // when the work is done; immediate by default
  bool cable = true;  // the link partner is there: CTRL.SLU brings the link up
  // false: master requests never drain, so STATUS.GIO Master Enable stays set after GIO
  // Master Disable (a NIC whose last DMA never completes; 5.2.3.3 says to reset anyway).
  bool master_requests_drain = true;
};

// What receive() did with a frame.
enum class E1000eRxOutcome {
  delivered,       // written to host memory, descriptors written back
  queued,          // Completion::on_process: waits for process()
  link_down,       // STATUS.LU is 0: nothing arrives (not counted)
  rx_disabled,     // RCTL.EN is 0: missed (MPC)
  oversized,       // over 1522 bytes (16384 with LPE): dropped (ROC)
  filtered,        // not for this station (RCTL, RAL/RAH, MTA)
  no_descriptors,  // not enough descriptors between RDH and RDT: missed (RNBC, MPC, ICR.RXO)
  stopped,         // the queue stopped on an earlier DMA fault, or its ring is invalid
  dma_error,       // a DMA faulted now (a violation); the queue stopped
};
// A short name for `outcome` ("delivered", "link down", "DMA error"), for test messages.
std::string_view to_string(E1000eRxOutcome outcome);

// An interrupt message the model sent (or tried to: `delivered` false when the vector was
// masked, not enabled, or bus mastering was off for a message).
struct E1000eInterrupt {
  IrqKind kind = IrqKind::intx;  // msix in MSI-X mode, else msi if enabled, else intx
  unsigned vector = 0;           // MSI-X: the vector its IVAR entry names; otherwise 0
  std::uint32_t causes = 0;  // the ICR bits that caused it
  bool delivered = false;    // whether the DeviceModel signalled it (DeviceModel::fire())
};

// The 82574L model the file comment describes: a DeviceModel with BAR0 (registers) and BAR3
// (MSI-X table) for a driver to open(), and the test's side of it: the wire, held work,
// violations, interrupts and register values. Neither copyable nor movable.
class E1000eModel {
 public:
  // The options' Completion, for short.
  using Completion = E1000eModelOptions::Completion;

  // A NIC after power-on: registers at their defaults, RAL0/RAH0 from the EEPROM, link down
  // until the driver sets CTRL.SLU. Adds BAR0 and BAR3 to its own DeviceModel.
  explicit E1000eModel(const E1000eModelOptions& options = {});
  // Devices it opened stay usable: their registers then only store what is written.
  ~E1000eModel();
  // Not copyable: a model is one NIC.
  E1000eModel(const E1000eModel&) = delete;
  // Not copy-assignable.
  E1000eModel& operator=(const E1000eModel&) = delete;

  // The fake device and its BAR0 register model (for its access log; register values are
  // in register_value(), not in the model's storage).
  DeviceModel& device();
  // As device(), for BAR0's RegisterModel.
  RegisterModel& bar0();
  // A Device over the NIC for the driver to own (DeviceModel::open()).
  std::unique_ptr<Device> open() const;

  // ---- The wire ----
  // A frame from the link partner (destination MAC first, no FCS). Returns what became of
  // it (see E1000eRxOutcome); Completion::on_process queues it for process() instead.
  E1000eRxOutcome receive(std::span<const std::byte> frame);
  // Frames the NIC sent (not those looped back), oldest first, without FCS; take_ empties
  // the queue.
  std::vector<std::vector<std::byte>> transmitted() const;
  // As transmitted(), and empties the queue.
  std::vector<std::vector<std::byte>> take_transmitted();
  // Plugs or pulls the cable: the link follows (STATUS.LU with CTRL.SLU) and a change
  // raises ICR.LSC.
  void set_link(bool cable);

  // ---- Held work (Completion::on_process) ----
  // Does the work waiting: transmits what the tail has handed over (TCTL.EN), then
  // delivers the queued received frames in order. Returns the frames transmitted plus the
  // frames delivered to host memory. In Completion::immediate there is nothing to do: 0.
  std::size_t process();
  // Received frames waiting for process().
  std::size_t queued_frames() const;

  // ---- What happened ----
  // Every violation so far, in order: "rule: what (82574 datasheet, section)", the rule one
  // of e1000e_rule's names. A correct driver leaves it empty. Accesses that started inside
  // a register are added here (from BAR0's log) when this is called, after those before.
  std::vector<std::string> violations() const;
  // Forgets every violation so far (those in BAR0's log included).
  void clear_violations();
  // Every interrupt message sent, oldest first; take_ empties the log.
  std::vector<E1000eInterrupt> interrupts() const;
  // As interrupts(), and empties the log.
  std::vector<E1000eInterrupt> take_interrupts();
  // A register's value as the model holds it, without the side effects of a driver's read
  // (no clear on read); 0 for offsets that hold no register.
  std::uint32_t register_value(std::uint64_t offset) const;
  // Sets a register that only stores its value (ITR, EITR, IVAR and the like: no effect on
  // the model) as something other than the driver under test left it: firmware, an earlier
  // driver. Returns false, changing nothing, for an offset that is no such register.
  bool set_stored_register(std::uint64_t offset, std::uint32_t value);
  // CTRL.RST resets so far, and whether STATUS.LU is set.
  std::uint64_t resets() const;
  // Whether the link is up (STATUS.LU): the cable is in and the driver set CTRL.SLU.
  bool link_up() const;

  struct Core;  // shared with the register and unmap hooks (weakly: they outlive the model)

 private:
  std::shared_ptr<Core> core_;
};

}  // namespace pcie::testing
