// A user-space driver for QEMU's edu device (QEMU docs/specs/edu.rst), written only against
// pcie's public API: the example of how to write a driver with this library. It owns the
// device through VFIO, maps BAR0, and uses a DMA buffer, MSI and the request IRQ.
//
// Two things every driver owes its device, shown here:
//  - edu has no reset, so a previous owner that was killed mid-DMA may leave its DMA
//    engine running: open() waits for it to go idle (quiesce) before enabling bus
//    mastering, or that DMA would land in this driver's new buffer at the same address;
//  - when the kernel asks for the device back (unbind, hot unplug: the request IRQ), every
//    wait ends with device_removed, and the owner must destroy the driver to let it go.
//
//   auto container = pcie::VfioContainer::open();
//   auto edu = examples::EduDriver::open(*container, bdf);
//   edu->factorial(10);                // 3628800, completion signalled by MSI
//   edu->dma_to_device(data) / edu->dma_from_device(size)
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "pcie/dma.h"
#include "pcie/vfio.h"

namespace examples {

// edu's registers in BAR0.
namespace edu {
inline constexpr std::uint64_t kIdentification = 0x00;  // 0x010000ed: major 1, minor 0
inline constexpr std::uint64_t kLiveness = 0x04;        // reads back the inverse of what was written
inline constexpr std::uint64_t kFactorial = 0x08;       // write n, read n! when done
inline constexpr std::uint64_t kStatus = 0x20;          // bit 0 computing, bit 7 raise an IRQ when done
inline constexpr std::uint64_t kIrqStatus = 0x24;
inline constexpr std::uint64_t kIrqAcknowledge = 0x64;
inline constexpr std::uint64_t kDmaSource = 0x80;
inline constexpr std::uint64_t kDmaDestination = 0x88;
inline constexpr std::uint64_t kDmaCount = 0x90;
inline constexpr std::uint64_t kDmaCommand = 0x98;      // bit 0 start, bit 1 to RAM, bit 2 IRQ when done
inline constexpr std::uint32_t kStatusComputing = 0x01;
inline constexpr std::uint64_t kDmaRunning = 0x1;         // bit 0 of kDmaCommand while a DMA runs
inline constexpr std::uint32_t kStatusIrqWhenDone = 0x80;
inline constexpr std::uint32_t kIrqFactorial = 0x001;
inline constexpr std::uint32_t kIrqDma = 0x100;
inline constexpr std::uint64_t kDmaStart = 0x1;
inline constexpr std::uint64_t kDmaToRam = 0x2;
inline constexpr std::uint64_t kDmaIrq = 0x4;
inline constexpr std::uint64_t kInternalBuffer = 0x40000;  // the device's own 4 KiB
inline constexpr std::size_t kInternalBufferSize = 4096;
inline constexpr unsigned kDmaMaskBits = 28;              // QEMU's default dma_mask
}  // namespace edu

class EduDriver {
 public:
  // Opens `bdf` (bound to vfio-pci) in `container`, maps BAR0, checks the identification
  // register, quiesces the device, then enables bus mastering, MSI and the request IRQ.
  static pcie::Result<EduDriver> open(pcie::VfioContainer& container, const pcie::Bdf& bdf);

  // Waits (at most `timeout`) until edu's DMA engine and factorial unit are idle: what a
  // device without a reset needs before bus mastering is enabled. io_error on timeout.
  static pcie::Result<void> quiesce(const pcie::MmioView& registers, std::chrono::milliseconds timeout);

  std::uint32_t identification() const;
  // Writes `value` to the liveness register and returns what the device answers (~value).
  std::uint32_t liveness(std::uint32_t value) const;
  // n!, waiting for the completion interrupt (bounded by `timeout`).
  pcie::Result<std::uint32_t> factorial(std::uint32_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Copies `data` (1 to 4095 bytes) into the device's buffer by DMA from host memory.
  pcie::Result<void> dma_to_device(std::span<const std::byte> data);
  // Copies `size` bytes (1 to 4095) of the device's buffer back to host memory by DMA.
  pcie::Result<std::vector<std::byte>> dma_from_device(std::size_t size);
  // Each of the calls above fails with device_removed once the kernel asks for the device
  // (its request IRQ fired): destroy the driver then, and the kernel can take it.

 private:
  EduDriver(pcie::VfioDevice device, pcie::VfioRegion bar0, pcie::VfioInterrupts msi, pcie::VfioInterrupts request,
            pcie::DmaBuffer buffer)
      : device_(std::move(device)), bar0_(std::move(bar0)), msi_(std::move(msi)), request_(std::move(request)),
        buffer_(std::move(buffer)) {}
  pcie::MmioView registers() const { return *bar0_.mmio(); }
  pcie::Result<void> run_dma(std::uint64_t source, std::uint64_t destination, std::size_t size, bool to_ram);
  pcie::Result<void> wait_for(std::uint32_t irq, std::chrono::milliseconds timeout);
  pcie::Result<void> removed_error() const;

  // Declared in order of acquisition: destroyed in reverse (buffer, interrupts, BAR, device).
  pcie::VfioDevice device_;
  pcie::VfioRegion bar0_;
  pcie::VfioInterrupts msi_;
  pcie::VfioInterrupts request_;
  pcie::DmaBuffer buffer_;
  bool released_ = false;  // the kernel asked for the device
};

}  // namespace examples
