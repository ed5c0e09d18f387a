// The frames the e1000e VM test exchanges between the host (vm_e1000e_test.cc, at the far
// end of QEMU's -netdev dgram) and the example driver in the guest (guest_e1000e_test.cc).
#pragma once

#include <cstdint>

namespace pcie::vm {

// The guest NIC's address, given to QEMU (-device e1000e,mac=...).
inline constexpr const char* kE1000eMac = "52:54:00:12:34:56";
inline constexpr const char* kE1000eBdf = "0000:00:07.0";
// EtherTypes of the test's frames, IEEE 802's two Local Experimental EtherTypes (0x88B5,
// 0x88B6): data to echo, and the frame that tells the guest to stop echoing.
inline constexpr std::uint16_t kEchoEtherType = 0x88B5;
inline constexpr std::uint16_t kStopEtherType = 0x88B6;
// Frames the host sends to be echoed, and the sequence number of the host's probes (sent
// until the guest's driver answers; their echoes are ignored).
inline constexpr std::uint32_t kEchoFrames = 10000;
inline constexpr std::uint32_t kProbeSequence = 0xFFFFFFFF;
// An IOVA the guest's driver never maps (39-bit vIOMMU, VM.md), for the transmit fault.
inline constexpr std::uint64_t kUnmappedIova = 0x7ff0000000;
inline constexpr const char* kUnmappedIovaText = "0x7ff0000000";

}  // namespace pcie::vm
