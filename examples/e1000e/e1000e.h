// The Intel 82574L's registers and legacy descriptors, as far as examples/e1000e uses them
// (Intel 82574 GbE Controller Family datasheet, rev. 3.4: section 10.2 for the registers,
// 7.1.4 and 7.2.10.1 for the descriptors). QEMU's "e1000e" device models this controller.
#pragma once

#include <cstdint>

namespace examples::e1000e {

// BAR0 registers (10.2). Every one is 32 bits wide.
inline constexpr std::uint64_t kCtrl = 0x0000;     // Device Control
inline constexpr std::uint64_t kStatus = 0x0008;   // Device Status
inline constexpr std::uint64_t kEecd = 0x0010;     // EEPROM/Flash Control
inline constexpr std::uint64_t kCtrlExt = 0x0018;  // Extended Device Control
inline constexpr std::uint64_t kIcr = 0x00C0;      // Interrupt Cause Read (clear on read, or write 1s)
inline constexpr std::uint64_t kIcs = 0x00C8;      // Interrupt Cause Set (write 1s to raise)
inline constexpr std::uint64_t kIms = 0x00D0;      // Interrupt Mask Set (write 1s to enable)
inline constexpr std::uint64_t kImc = 0x00D8;      // Interrupt Mask Clear (write 1s to disable)
inline constexpr std::uint64_t kEiac = 0x00DC;     // Extended Interrupt Auto Clear (MSI-X causes)
inline constexpr std::uint64_t kIvar = 0x00E4;     // Interrupt Vector Allocation (MSI-X)
inline constexpr std::uint64_t kItr = 0x00C4;      // Interrupt Throttling (INTx and MSI)
inline constexpr std::uint64_t kEitr0 = 0x00E8;    // Extended Interrupt Throttling, one per MSI-X vector
inline constexpr unsigned kEitrCount = 5;          // EITR 0-4
inline constexpr std::uint64_t kThrottleUnitNs = 256;  // ITR/EITR interval bits 15:0 count 256 ns
inline constexpr std::uint64_t kRctl = 0x0100;     // Receive Control
inline constexpr std::uint64_t kTctl = 0x0400;     // Transmit Control
inline constexpr std::uint64_t kTipg = 0x0410;     // Transmit IPG
inline constexpr std::uint64_t kRdbal = 0x2800;    // Receive Descriptor Base Low/High, Length, Head, Tail
inline constexpr std::uint64_t kRdbah = 0x2804;
inline constexpr std::uint64_t kRdlen = 0x2808;
inline constexpr std::uint64_t kRdh = 0x2810;
inline constexpr std::uint64_t kRdt = 0x2818;
inline constexpr std::uint64_t kTdbal = 0x3800;    // the same for transmit
inline constexpr std::uint64_t kTdbah = 0x3804;
inline constexpr std::uint64_t kTdlen = 0x3808;
inline constexpr std::uint64_t kTdh = 0x3810;
inline constexpr std::uint64_t kTdt = 0x3818;
inline constexpr std::uint64_t kRfctl = 0x5008;    // Receive Filter Control
inline constexpr std::uint64_t kMta = 0x5200;      // Multicast Table Array, 128 registers
inline constexpr std::uint64_t kRal0 = 0x5400;     // Receive Address 0, low and high
inline constexpr std::uint64_t kRah0 = 0x5404;

// Statistics (10.2.7): all clear on read; the octet counters are 64 bits as two registers,
// the low half read first.
inline constexpr std::uint64_t kCrcErrors = 0x4000;   // CRCERRS
inline constexpr std::uint64_t kMissedPackets = 0x4010;  // MPC: dropped, no room
inline constexpr std::uint64_t kGoodRxPackets = 0x4074;  // GPRC
inline constexpr std::uint64_t kGoodTxPackets = 0x4080;  // GPTC
inline constexpr std::uint64_t kGoodRxOctetsLow = 0x4088;  // GORCL, GORCH at +4
inline constexpr std::uint64_t kGoodTxOctetsLow = 0x4090;  // GOTCL, GOTCH at +4
inline constexpr std::uint64_t kRxNoBuffers = 0x40A0;  // RNBC: no receive descriptor free

// CTRL (10.2.2.1).
inline constexpr std::uint32_t kCtrlMasterDisable = 1u << 2;  // GIO Master Disable
inline constexpr std::uint32_t kCtrlSetLinkUp = 1u << 6;      // SLU
inline constexpr std::uint32_t kCtrlReset = 1u << 26;         // RST, self-clearing
// STATUS (10.2.2.2).
inline constexpr std::uint32_t kStatusLinkUp = 1u << 1;        // LU
inline constexpr std::uint32_t kStatusMasterEnabled = 1u << 19;  // GIO Master Enable Status
// EECD (10.2.2.4): the EEPROM's contents (the MAC address among them) are loaded.
inline constexpr std::uint32_t kEecdAutoReadDone = 1u << 9;  // AUTO_RD
// CTRL_EXT (10.2.2.3).
inline constexpr std::uint32_t kCtrlExtEiame = 1u << 24;   // MSI-X: IAM applies on each vector
inline constexpr std::uint32_t kCtrlExtPbaClear = 1u << 31;  // an IMS write clears the MSI-X PBA bit

// ICR/IMS/IMC causes (10.2.4.1).
inline constexpr std::uint32_t kCauseTxWriteback = 1u << 0;  // TXDW
inline constexpr std::uint32_t kCauseTxQueueEmpty = 1u << 1;  // TXQE
inline constexpr std::uint32_t kCauseLinkChange = 1u << 2;   // LSC
inline constexpr std::uint32_t kCauseRxThreshold = 1u << 4;  // RXDMT0: few receive descriptors left
inline constexpr std::uint32_t kCauseRxTimer = 1u << 7;      // RXT0: a frame was received
inline constexpr std::uint32_t kCauseRxQueue0 = 1u << 20;    // RXQ0 (MSI-X)
inline constexpr std::uint32_t kCauseTxQueue0 = 1u << 22;    // TXQ0 (MSI-X)
inline constexpr std::uint32_t kCauseOther = 1u << 24;       // Other (MSI-X): LSC and the rest
inline constexpr std::uint32_t kCauseAsserted = 1u << 31;    // INT_ASSERTED: a summary, not a cause
// Which causes are the receive queue's and the transmit queue's; with MSI and INTx the NIC
// also sets the queue bits (RXQ0, TXQ0) beside the legacy ones.
inline constexpr std::uint32_t kRxCauses = kCauseRxTimer | kCauseRxThreshold | kCauseRxQueue0;
inline constexpr std::uint32_t kTxCauses = kCauseTxWriteback | kCauseTxQueueEmpty | kCauseTxQueue0;
// IVAR (10.2.4.9): 3-bit vector plus a valid bit per cause; bit 31 asks for a transmit
// interrupt on every descriptor write-back.
inline constexpr std::uint32_t kIvarValid = 0x8;
inline constexpr unsigned kIvarRxShift = 0, kIvarTxShift = 8, kIvarOtherShift = 16;
inline constexpr std::uint32_t kIvarTxEveryWriteback = 1u << 31;

// RCTL (10.2.5.1).
inline constexpr std::uint32_t kRctlEnable = 1u << 1;
inline constexpr std::uint32_t kRctlUnicastPromiscuous = 1u << 3;    // UPE
inline constexpr std::uint32_t kRctlMulticastPromiscuous = 1u << 4;  // MPE
inline constexpr std::uint32_t kRctlMacLoopback = 1u << 6;           // LBM = 01b
inline constexpr std::uint32_t kRctlBroadcastAccept = 1u << 15;      // BAM
inline constexpr std::uint32_t kRctlStripCrc = 1u << 26;             // SECRC
// BSIZE 00b with BSEX 0: 2048-byte receive buffers.
// TCTL (10.2.6.1).
inline constexpr std::uint32_t kTctlEnable = 1u << 1;
inline constexpr std::uint32_t kTctlPadShort = 1u << 3;           // PSP
inline constexpr std::uint32_t kTctlCollisionThreshold = 0xFu << 4;  // CT = 15 (the recommended value)
inline constexpr std::uint32_t kTctlCollisionDistance = 0x3Fu << 12;  // COLD = 63 (full duplex)
// TIPG's recommended value for the 82574 (10.2.6.2): IPGT 8, IPGR1 8, IPGR2 6.
inline constexpr std::uint32_t kTipgDefault = 8 | (8 << 10) | (6 << 20);

// The legacy receive descriptor (7.1.4): the driver fills `buffer`; the device writes the
// rest back in place.
struct RxDescriptor {
  std::uint64_t buffer = 0;
  std::uint16_t length = 0;
  std::uint16_t checksum = 0;
  std::uint8_t status = 0;  // bit 0 DD (done), bit 1 EOP (end of packet)
  std::uint8_t errors = 0;  // CE, SE, SEQ, RXE...: a frame with errors is dropped
  std::uint16_t special = 0;
};
// The legacy transmit descriptor (7.2.10.1).
struct TxDescriptor {
  std::uint64_t buffer = 0;
  std::uint16_t length = 0;
  std::uint8_t checksum_offset = 0;
  std::uint8_t command = 0;  // EOP, IFCS, RS (below); DEXT (bit 5) 0 for this format
  std::uint8_t status = 0;   // bit 0 DD, written back when RS was set
  std::uint8_t checksum_start = 0;
  std::uint16_t special = 0;
};
static_assert(sizeof(RxDescriptor) == 16 && sizeof(TxDescriptor) == 16);
inline constexpr std::uint8_t kRxStatusDone = 1u << 0;
inline constexpr std::uint8_t kRxStatusEndOfPacket = 1u << 1;
inline constexpr std::uint8_t kTxStatusDone = 1u << 0;
inline constexpr std::uint8_t kTxCommandEndOfPacket = 1u << 0;  // EOP
inline constexpr std::uint8_t kTxCommandInsertCrc = 1u << 1;    // IFCS
inline constexpr std::uint8_t kTxCommandReportStatus = 1u << 3;  // RS: write DD back
// Both descriptors carry DD in bit 0 of byte 12 (pcie/writeback_ring.h).
inline constexpr std::size_t kStatusByte = 12;

// A descriptor ring's length must be a multiple of 128 bytes (RDLEN/TDLEN, 10.2.5.4).
inline constexpr std::uint32_t kRingAlignDescriptors = 8;
inline constexpr std::uint32_t kBufferBytes = 2048;   // RCTL.BSIZE 00b
inline constexpr std::uint32_t kMaxFrameBytes = 1514;  // without FCS and VLAN tag: LPE off

}  // namespace examples::e1000e
