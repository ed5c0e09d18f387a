// What the e1000e example does with frames, shared by its command line (main.cc) and the VM
// tests: echo, MAC loopback as a DMA engine, and a packets-per-second measurement in
// ixy's style.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "examples/e1000e/e1000e_driver.h"

namespace examples {

// The EtherType of the example's own frames: IEEE 802's "local experimental" 0x88B5.
inline constexpr std::uint16_t kExperimentalEtherType = 0x88B5;

// Swaps a frame's destination and source MAC addresses (its first 12 bytes); frames
// shorter than a header are left alone.
void swap_macs(std::span<std::byte> frame);

struct EchoOptions {
  std::uint64_t count = 0;  // frames to echo, then stop; 0: until `idle` passes without one
  std::size_t batch = 32;
  // Stop when no frame came for this long (also with a count, so that a peer that stops
  // sending does not hang the caller).
  std::chrono::milliseconds idle{10000};
  // Called on each received frame before it is sent back; returning false stops the echo
  // at that frame, which is released, not echoed; frames received after it in the same
  // batch are the caller's (EchoResult::left). Empty: every frame is echoed.
  std::function<bool(std::span<const std::byte> frame)> keep_going;
};

struct EchoResult {
  std::uint64_t echoed = 0;   // frames sent back
  std::uint64_t dropped = 0;  // received but not sent back: the transmit ring was full
  bool idle_timeout = false;  // stopped because nothing came for EchoOptions::idle
  // Frames received after the one keep_going refused, in order, neither echoed nor
  // released: the caller holds them (E1000eDriver::release or tx_batch).
  std::vector<Packet> left;
};

// Sends every received frame back with the MAC addresses swapped (testpmd's macswap).
// Fails with the driver's error (device_removed when the NIC goes away meanwhile).
pcie::Result<EchoResult> echo(E1000eDriver& nic, const EchoOptions& options);

struct LoopbackResult {
  std::uint64_t frames = 0;
  std::chrono::nanoseconds elapsed{0};
};

// Moves `in` through the NIC into `out` (the same size): frames to the NIC's own address
// carrying up to 1496 bytes each and a sequence number, sent and received back through MAC
// loopback (the driver must be open with E1000eOptions::loopback), `batch` frames at a
// time. malformed for a frame that comes back out of order, of the wrong size or not ours;
// io_error when frames stop coming back for a second; invalid_argument for sizes that
// differ or a batch of 0.
pcie::Result<LoopbackResult> loopback_copy(E1000eDriver& nic, std::span<const std::byte> in, std::span<std::byte> out,
                                           std::size_t batch = 32);

struct RateResult {
  std::uint64_t frames = 0;
  std::chrono::nanoseconds elapsed{0};
  double frames_per_second() const {
    return elapsed.count() > 0 ? static_cast<double>(frames) * 1e9 / static_cast<double>(elapsed.count()) : 0;
  }
};

// ixy's measurement through MAC loopback: `frames` frames of `frame_bytes` (60 to 1514)
// sent in batches of `batch` (tx_batch) and received in batches of up to `batch`
// (rx_batch), the same buffers going round (no copy). Returns frames received and the time.
// Fails as loopback_copy.
pcie::Result<RateResult> loopback_rate(E1000eDriver& nic, std::size_t batch, std::uint64_t frames,
                                       std::uint16_t frame_bytes = 60);

}  // namespace examples
