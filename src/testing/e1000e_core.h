// The 82574L model's state and its parts, shared by the files that implement it:
// e1000e_registers.cc (the register map, reset, link, EEPROM, PHY, statistics),
// e1000e_interrupts.cc (ICR/IMS/IVAR and the messages), e1000e_rings.cc (ring registers,
// tails, descriptor prefetch, DMA, unmapped memory), e1000e_transmit.cc, e1000e_receive.cc,
// and e1000e_model.cc (the public side and the hooks). Register offsets and bits are the
// 82574 datasheet's (chapter 10.2); every Core member function expects `mutex` held.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/testing/e1000e_model.h"

namespace pcie::testing::e1000e {

inline constexpr std::uint64_t kBar0Size = 0x20000;  // 128 KiB
inline constexpr std::uint64_t kBar3Size = 0x4000;   // the MSI-X BAR, 16 KiB
inline constexpr unsigned kMaxVectors = 5;           // the 82574's MSI-X vectors

// ---- General and interrupt registers (10.2) ----
inline constexpr std::uint64_t kCtrl = 0x0000, kStatus = 0x0008, kEecd = 0x0010, kEerd = 0x0014,
                               kCtrlExt = 0x0018, kMdic = 0x0020, kFcal = 0x0028, kFcah = 0x002c,
                               kFct = 0x0030, kVet = 0x0038, kIcr = 0x00c0, kItr = 0x00c4, kIcs = 0x00c8,
                               kIms = 0x00d0, kImc = 0x00d8, kEiac = 0x00dc, kIam = 0x00e0, kIvar = 0x00e4,
                               kEitr = 0x00e8, kRctl = 0x0100, kFcttv = 0x0170, kTxcw = 0x0178,
                               kRxcw = 0x0180, kTctl = 0x0400, kTipg = 0x0410, kLedctl = 0x0e00,
                               kExtcnfCtrl = 0x0f00, kPba = 0x1000, kFcrtl = 0x2160, kFcrth = 0x2168;
// ---- Receive and transmit queues (10.2) ----
inline constexpr std::uint64_t kRdbal = 0x2800, kRdbah = 0x2804, kRdlen = 0x2808, kRdh = 0x2810, kRdt = 0x2818,
                               kRdtr = 0x2820, kRxdctl = 0x2828, kRadv = 0x282c, kRsrpd = 0x2c00,
                               kRaid = 0x2c08, kKabgtxd = 0x3004, kTdbal = 0x3800, kTdbah = 0x3804,
                               kTdlen = 0x3808, kTdh = 0x3810, kTdt = 0x3818, kTidv = 0x3820,
                               kTxdctl = 0x3828, kTadv = 0x382c, kTarc0 = 0x3840;
// ---- Filters and the rest (10.2) ----
inline constexpr std::uint64_t kRxcsum = 0x5000, kRfctl = 0x5008, kMta = 0x5200, kMtaEnd = 0x5400,
                               kRal0 = 0x5400, kRah0 = 0x5404, kRaEnd = 0x5480, kVfta = 0x5600,
                               kVftaEnd = 0x5800, kMrqc = 0x5818, kGcr = 0x5b00, kSwsm = 0x5b50,
                               kFwsm = 0x5b54, kPbaclr = 0x5b68, kPsrctl = 0x2170,
                               kWuc = 0x5800, kWufc = 0x5808, kManc = 0x5820;
// ---- Statistics (10.2): clear on read; 64-bit counters are a low and a high register ----
inline constexpr std::uint64_t kStatsBegin = 0x4000, kStatsEnd = 0x4128;  // through ICRXOC
inline constexpr std::uint64_t kCrcerrs = 0x4000, kMpc = 0x4010, kGprc = 0x4074, kBprc = 0x4078, kMprc = 0x407c,
                               kGptc = 0x4080, kGorcl = 0x4088, kGorch = 0x408c, kGotcl = 0x4090,
                               kGotch = 0x4094, kRnbc = 0x40a0, kRuc = 0x40a4, kRoc = 0x40ac,
                               kTorl = 0x40c0, kTorh = 0x40c4, kTotl = 0x40c8, kToth = 0x40cc,
                               kTpr = 0x40d0, kTpt = 0x40d4, kMptc = 0x40f0, kBptc = 0x40f4;

// CTRL, STATUS, CTRL_EXT.
inline constexpr std::uint32_t kCtrlGioMasterDisable = 1u << 2, kCtrlSlu = 1u << 6, kCtrlRst = 1u << 26;
inline constexpr std::uint32_t kStatusFd = 1u << 0, kStatusLu = 1u << 1, kStatusSpeed1000 = 2u << 6,
                               kStatusGioMasterEnable = 1u << 19;
inline constexpr std::uint32_t kCtrlExtEiame = 1u << 24, kCtrlExtIame = 1u << 27, kCtrlExtPbaClr = 1u << 31;
// ICR bits (10.2.4).
inline constexpr std::uint32_t kTxdw = 1u << 0, kTxqe = 1u << 1, kLsc = 1u << 2, kRxo = 1u << 6, kRxt0 = 1u << 7,
                               kMdac = 1u << 9, kRxq0 = 1u << 20, kRxq1 = 1u << 21, kTxq0 = 1u << 22,
                               kTxq1 = 1u << 23, kOther = 1u << 24, kIntAsserted = 1u << 31;
// The causes ICR.OTHER stands for in MSI-X mode (QEMU's E1000_ICR_OTHER_CAUSES).
inline constexpr std::uint32_t kOtherCauses = kLsc | kRxo | kMdac | (1u << 16) | (1u << 17) | (1u << 18);
// The IMS bits a driver can set (QEMU's ims_valid_mask).
inline constexpr std::uint32_t kImsValid = 0x01f782d7;
// IVAR (10.2.4): a 4-bit entry per cause, vector in bits 2:0, valid in bit 3.
inline constexpr unsigned kIvarRxq0 = 0, kIvarTxq0 = 8, kIvarOther = 16;
inline constexpr std::uint32_t kIvarTxEveryWriteback = 1u << 31;
// RCTL, RFCTL, TCTL (10.2).
inline constexpr std::uint32_t kRctlEn = 1u << 1, kRctlUpe = 1u << 3, kRctlMpe = 1u << 4, kRctlLpe = 1u << 5,
                               kRctlBam = 1u << 15, kRctlBsex = 1u << 25, kRctlSecrc = 1u << 26;
inline constexpr std::uint32_t kRctlLbmMask = 3u << 6, kRctlLbmMac = 1u << 6, kRctlDtypMask = 3u << 10,
                               kRctlFlxbufMask = 0xfu << 27;
inline constexpr std::uint32_t kRfctlExsten = 1u << 15;
inline constexpr std::uint32_t kTctlEn = 1u << 1, kTctlPsp = 1u << 3;
inline constexpr std::uint32_t kRahAv = 1u << 31;
// EERD and MDIC (10.2).
inline constexpr std::uint32_t kEerdStart = 1u << 0, kEerdDone = 1u << 1;
inline constexpr std::uint32_t kMdicOpWrite = 1u << 26, kMdicOpRead = 2u << 26, kMdicReady = 1u << 28,
                               kMdicInterrupt = 1u << 29, kMdicError = 1u << 30;

// Descriptors (7.1, 7.2): 16 bytes, little-endian.
inline constexpr std::uint64_t kDescriptorBytes = 16;
inline constexpr std::uint8_t kRxDd = 1u << 0, kRxEop = 1u << 1;
inline constexpr std::uint8_t kTxEop = 1u << 0, kTxIfcs = 1u << 1, kTxRs = 1u << 3, kTxDext = 1u << 5;
inline constexpr std::uint8_t kTxDd = 1u << 0;
inline constexpr std::uint32_t kMaxTxBuffer = 16288;  // a legacy descriptor's largest buffer
inline constexpr unsigned kMaxTxDescriptorsPerFrame = 64;
inline constexpr std::size_t kMinFrame = 60;                             // without FCS
inline constexpr std::size_t kMaxFrame = 1522, kMaxLongFrame = 16384;  // without FCS (QEMU's limits)
inline constexpr std::size_t kFcsBytes = 4;

using Descriptor = std::array<std::byte, kDescriptorBytes>;

// Little-endian fields of a descriptor.
std::uint64_t load(const Descriptor& descriptor, std::size_t offset, std::size_t bytes);
void store(Descriptor& descriptor, std::size_t offset, std::uint64_t value, std::size_t bytes);

// What violations cite.
inline constexpr std::string_view kCiteRegisters = "82574 datasheet, 10.2";
inline constexpr std::string_view kCiteInterrupts = "82574 datasheet, 10.2.4";
inline constexpr std::string_view kCiteReceive = "82574 datasheet, 7.1";
inline constexpr std::string_view kCiteReceiveRing = "82574 datasheet, 7.1.8";
inline constexpr std::string_view kCiteNullDescriptor = "82574 datasheet, 7.1.7.2";
inline constexpr std::string_view kCiteTransmit = "82574 datasheet, 7.2";
inline constexpr std::string_view kCiteBusMaster = "PCI Local Bus 3.0, 6.2.2";
inline constexpr std::string_view kCiteReset = "82574 datasheet, 5.2.3.3 and 10.2.2.1 (GIO Master Disable)";

// One descriptor queue's registers.
struct RingRegisters {
  std::uint64_t base_low, base_high, length, head, tail, control;
  std::uint32_t enable;
  std::string_view name;  // "RX", "TX"
  std::string_view cite;
  bool receive() const { return control == kRctl; }
};
inline constexpr RingRegisters kRxRing{kRdbal, kRdbah, kRdlen, kRdh, kRdt, kRctl, kRctlEn, "RX", kCiteReceiveRing};
inline constexpr RingRegisters kTxRing{kTdbal, kTdbah, kTdlen, kTdh, kTdt, kTctl, kTctlEn, "TX", kCiteTransmit};

// What the device knows of a queue beyond its registers.
struct Queue {
  bool halted = false;       // stopped on a DMA fault until CTRL.RST
  bool base_written = false;  // since reset: the ring was set
  bool length_written = false;
  std::map<std::uint32_t, Descriptor> owned;  // prefetched descriptors the device owns, by index
};

// A frame being assembled from transmit descriptors.
struct TxFrame {
  std::vector<std::byte> bytes;
  unsigned descriptors = 0;
  bool dropped = false;  // an invalid descriptor: the rest of the frame is skipped until EOP
};

}  // namespace pcie::testing::e1000e

namespace pcie::testing {

struct E1000eModel::Core {
  explicit Core(const E1000eModelOptions& given);

  // ---- Registers (e1000e_registers.cc) ----
  std::uint64_t driver_read(const RegisterAccess& access);
  std::uint64_t driver_write(const RegisterAccess& access);
  std::uint32_t read(std::uint64_t offset);
  void write(std::uint64_t offset, std::uint32_t value);
  std::uint32_t peek(std::uint64_t offset) const;
  // Whether `offset` holds a register that only stores what is written (no effect).
  static bool stores_only(std::uint64_t offset);
  std::uint32_t status() const;
  void write_control(std::uint32_t value);
  void power_on();
  void reset();
  void update_link();
  void write_eerd(std::uint32_t value);
  void write_mdic(std::uint32_t value);
  std::uint32_t read_statistic(std::uint64_t offset);
  void count(std::uint64_t offset, std::uint64_t amount = 1);
  void count64(std::uint64_t low, std::uint64_t amount);
  std::uint32_t& reg(std::uint64_t offset) { return regs[offset / 4]; }
  std::uint32_t reg(std::uint64_t offset) const { return regs[offset / 4]; }

  // ---- Interrupts (e1000e_interrupts.cc) ----
  bool msix_enabled() const;
  void raise(std::uint32_t causes);
  void update_interrupts();
  void send_message(bool msix);
  void notify_vector(std::uint32_t cause, unsigned ivar_shift);
  void fire(IrqKind kind, unsigned vector, std::uint32_t causes);
  std::uint32_t read_icr();
  void write_icr(std::uint32_t value);
  void write_ims(std::uint32_t value);
  void write_imc(std::uint32_t value);

  // ---- Rings (e1000e_rings.cc) ----
  e1000e::Queue& queue(const e1000e::RingRegisters& ring) { return ring.receive() ? rx : tx; }
  std::uint64_t ring_base(const e1000e::RingRegisters& ring) const;
  std::uint32_t ring_size(const e1000e::RingRegisters& ring) const;  // descriptors
  bool ring_enabled(const e1000e::RingRegisters& ring) const;
  bool ring_usable(const e1000e::RingRegisters& ring) const;
  std::uint32_t owned_count(const e1000e::RingRegisters& ring) const;  // tail - head, around
  void write_ring_register(const e1000e::RingRegisters& ring, std::uint64_t offset, std::uint32_t value);
  void write_tail(const e1000e::RingRegisters& ring, std::uint32_t value);
  void enable_changed(const e1000e::RingRegisters& ring, bool was_enabled);
  void prefetch(const e1000e::RingRegisters& ring, std::uint32_t from, std::uint32_t to);
  std::optional<e1000e::Descriptor> fetch(const e1000e::RingRegisters& ring, std::uint32_t index);
  void advance_head(const e1000e::RingRegisters& ring);
  bool dma_read(std::uint64_t bus, std::span<std::byte> into, std::string_view what);
  bool dma_write(std::uint64_t bus, std::span<const std::byte> from, std::string_view what);
  void unmapped(std::uint64_t bus, std::uint64_t size);

  // ---- Transmit (e1000e_transmit.cc) ----
  std::size_t transmit();                                     // frames sent
  std::optional<bool> transmit_one(std::uint32_t& causes);  // nullopt: the queue stopped
  bool finish_frame();                                        // whether it was sent
  void send(std::vector<std::byte> frame);
  void count_frame(std::span<const std::byte> frame, bool sent);

  // ---- Receive (e1000e_receive.cc) ----
  E1000eRxOutcome deliver(std::span<const std::byte> frame);
  bool accepts(std::span<const std::byte> frame) const;
  std::uint32_t buffer_size() const;
  bool write_frame(std::span<const std::byte> bytes);

  // Width violations of accesses that started inside a register (BAR0's log since the last look).
  void scan_unaligned();
  // Records "rule: detail (citation)".
  void violation(std::string_view rule, std::string_view detail, std::string_view citation);

  const E1000eModelOptions options;
  DeviceModel device;
  RegisterModel& bar0;
  RegisterModel& bar3;
  mutable std::mutex mutex;
  std::vector<std::uint32_t> regs;  // BAR0 by dword, as the model holds it
  std::array<std::uint16_t, 64> eeprom{};
  std::array<std::uint16_t, 32> phy{};
  bool cable = true;
  bool link = false;  // STATUS.LU
  e1000e::Queue rx, tx;
  e1000e::TxFrame tx_frame;
  std::deque<std::vector<std::byte>> wire;      // frames sent
  std::deque<std::vector<std::byte>> arriving;  // received frames waiting for process()
  std::uint32_t causes_pending = 0;             // QEMU's msi_causes_pending: messages sent, not cleared
  std::uint64_t resets = 0;
  std::size_t log_seen = 0;  // BAR0 log entries scan_unaligned() has looked at
  std::vector<std::string> violations;
  std::vector<E1000eInterrupt> interrupts;
};

}  // namespace pcie::testing
