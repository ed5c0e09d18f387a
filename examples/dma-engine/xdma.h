// Xilinx XDMA as its driver sees it (the "DMA/Bridge Subsystem for PCI Express", PG195
// v4.1, "Register Space" and "Descriptors"; register names as PG195 gives them, offsets as
// Xilinx's own driver uses them, dma_ip_drivers XDMA/linux-kernel/xdma/libxdma.h): the DMA
// BAR's register map, the descriptor, and the descriptor chain format for
// pcie::DescriptorChain (pcie/descriptor_chain.h). Registers take 32-bit accesses only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "pcie/bus_address.h"

namespace examples::xdma {

enum class Direction { h2c, c2h };  // host to card, card to host

// Targets of the DMA BAR, 4 KiB each; channels 0x100 apart within a target.
inline constexpr std::uint64_t kH2cChannel = 0x0000;
inline constexpr std::uint64_t kC2hChannel = 0x1000;
inline constexpr std::uint64_t kIrqBlock = 0x2000;
inline constexpr std::uint64_t kH2cSgdma = 0x4000;
inline constexpr std::uint64_t kC2hSgdma = 0x5000;
inline constexpr std::uint64_t kChannelStride = 0x100;
inline constexpr unsigned kMaxChannels = 4;

// Every target's Identifier (offset 0x00): subsystem 0x1fc in 31:20, the target in 19:16
// (0 H2C, 1 C2H, 2 IRQ block, 4 H2C SGDMA, 5 C2H SGDMA), 1 in bit 15 for an AXI4-Stream
// channel, the channel in 11:8, the version in 7:0.
inline constexpr std::uint64_t kIdentifier = 0x00;
inline constexpr std::uint32_t kSubsystemId = 0x1fc;
inline constexpr std::uint32_t kTargetH2c = 0, kTargetC2h = 1, kTargetIrq = 2;
inline constexpr std::uint32_t kStreamInterface = 1u << 15;

// H2C/C2H Channel registers.
inline constexpr std::uint64_t kControl = 0x04;     // H2C/C2H Channel Control
inline constexpr std::uint64_t kControlW1c = 0x0c;  // its write-1-to-clear alias
inline constexpr std::uint64_t kStatus = 0x40;      // Status (RW1C): reading does not clear
inline constexpr std::uint64_t kStatusClearOnRead = 0x44;
inline constexpr std::uint64_t kCompletedCount = 0x48;   // Completed Descriptor Count, reset at Run
inline constexpr std::uint64_t kPollWriteBackLo = 0x88;  // Poll Mode Low/High Write Back Address
inline constexpr std::uint64_t kPollWriteBackHi = 0x8c;
inline constexpr std::uint64_t kInterruptEnableMask = 0x90;
// SGDMA registers: where the chain starts, and how many descriptors follow the first
// contiguously (Descriptor Adjacent).
inline constexpr std::uint64_t kDescriptorLo = 0x80;
inline constexpr std::uint64_t kDescriptorHi = 0x84;
inline constexpr std::uint64_t kDescriptorAdjacent = 0x88;
// IRQ Block registers.
inline constexpr std::uint64_t kChannelIntEnableW1s = 0x14;
inline constexpr std::uint64_t kChannelIntEnableW1c = 0x18;
inline constexpr std::uint64_t kChannelVectorH2c = 0xa0;  // 5-bit MSI-X vector per channel, a byte apart
inline constexpr std::uint64_t kChannelVectorC2h = 0xa4;

// Control bits. Each ie_* bit enables logging of the Status bit in the same position.
inline constexpr std::uint32_t kRun = 1u << 0;
inline constexpr std::uint32_t kIeDescriptorStopped = 1u << 1;
inline constexpr std::uint32_t kIeDescriptorCompleted = 1u << 2;
inline constexpr std::uint32_t kIeAlignMismatch = 1u << 3;
inline constexpr std::uint32_t kIeMagicStopped = 1u << 4;
inline constexpr std::uint32_t kIeInvalidLength = 1u << 5;
inline constexpr std::uint32_t kIeReadError = 0x1fu << 9;
inline constexpr std::uint32_t kIeWriteError = 0x1fu << 14;  // H2C only
inline constexpr std::uint32_t kIeDescriptorError = 0x1fu << 19;
inline constexpr std::uint32_t kPollModeWriteBack = 1u << 26;

// Status bits.
inline constexpr std::uint32_t kBusy = 1u << 0;
inline constexpr std::uint32_t kDescriptorStopped = 1u << 1;
inline constexpr std::uint32_t kDescriptorCompleted = 1u << 2;
inline constexpr std::uint32_t kErrorBits = 0x00fffe38;  // align, magic, length, read, write, descriptor errors

// The poll-mode write-back word: the count in 23:0, an error in bit 31 (libxdma's
// WB_COUNT_MASK and WB_ERR_MASK).
inline constexpr unsigned kWriteBackCountBits = 24;
inline constexpr std::uint32_t kWriteBackError = 1u << 31;

// A descriptor: 32 bytes, 32-byte aligned, little-endian (x86 lays the 64-bit fields out as
// PG195's lo/hi word pairs).
struct Descriptor {
  std::uint32_t control = 0;  // magic 0xAD4B in 31:16, Nxt_adj 13:8, EOP 4, Completed 1, Stop 0
  std::uint32_t length = 0;   // bytes, 27:0
  std::uint64_t source = 0;
  std::uint64_t destination = 0;
  std::uint64_t next = 0;
};
static_assert(sizeof(Descriptor) == 32);
inline constexpr std::uint32_t kMagic = 0xad4b0000;
inline constexpr std::uint32_t kStop = 1u << 0;
inline constexpr std::uint32_t kCompleted = 1u << 1;  // count written back, Descriptor Completed logged
inline constexpr std::uint32_t kEndOfPacket = 1u << 4;
inline constexpr std::uint32_t kMaxLength = (1u << 28) - 1;
inline constexpr std::uint32_t kMaxNextAdjacent = 0x3f;

// The chain format for pcie::DescriptorChain: link() and mark_last() keep the
// descriptor's own flags (Completed, EOP) and set the magic.
struct Format {
  using Descriptor = xdma::Descriptor;
  static constexpr std::uint64_t kAlignment = 32;
  static constexpr std::uint32_t kMaxNextAdjacent = xdma::kMaxNextAdjacent;
  static constexpr std::uint64_t kAdjacentBoundary = 4096;  // a block of adjacent descriptors stays in a page
  static void link(Descriptor& descriptor, pcie::BusAddress next, std::uint32_t next_adjacent) {
    descriptor.control = kMagic | next_adjacent << 8 | (descriptor.control & 0xfe);
    descriptor.next = next.value;
  }
  static void mark_last(Descriptor& descriptor) {
    descriptor.control = kMagic | (descriptor.control & 0xfe) | kStop;
    descriptor.next = 0;
  }
};

// "busy, descriptor stopped, magic stopped": the Status register's set bits in words.
std::string describe_status(std::uint32_t status, Direction direction);

}  // namespace examples::xdma
