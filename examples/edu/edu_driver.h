// A user-space driver for QEMU's edu device (QEMU docs/specs/edu.rst), written only against
// pcie's public API: the example of how to write a driver with this library. It is written
// once against pcie::Device and runs on every backend: VFIO with an IOMMU, VFIO in
// no-IOMMU mode, and UIO (uio_pci_generic) with physical-address DMA buffers. It maps
// BAR0, uses a DMA buffer, MSI where the backend offers it (INTx otherwise: UIO) and the
// request IRQ where there is one (VFIO).
//
// Three things every driver owes its device, shown here:
//  - edu has no reset, so a previous owner that was killed mid-DMA may leave its DMA
//    engine running: open() waits for it to go idle (quiesce) before enabling bus
//    mastering, or that DMA would land in this driver's new buffer at the same address;
//  - it lets go in the order the device needs (pcie/quiesce.h): no more completion
//    interrupts asked for, the DMA engine and factorial unit idle, bus mastering off, and
//    only then the interrupts disabled and the buffer unmapped. Every path does so: the
//    destructor, a timeout (the device may still be working), and the kernel's request;
//  - when the kernel asks for the device back (unbind, hot unplug: the request IRQ), every
//    wait ends with device_removed, and the owner must destroy the driver to let it go.
//
//   auto container = pcie::VfioContainer::open();
//   auto edu = examples::EduDriver::open(*container, bdf);
// or, on any backend (pcie/device.h shows each open call):
//   auto edu = examples::EduDriver::open(std::make_unique<pcie::UioDevice>(std::move(*uio)));
//   edu->factorial(10);                // 3628800, completion signalled by MSI
//   edu->dma_to_device(data) / edu->dma_from_device(size)
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "pcie/device.h"
#include "pcie/dma.h"
#include "pcie/quiesce.h"
#include "pcie/vfio.h"

namespace examples {

// edu's registers in BAR0.
namespace edu {
inline constexpr std::uint64_t kIdentification = 0x00;  // 0x010000ed: major 1, minor 0
inline constexpr std::uint64_t kLiveness = 0x04;        // reads back the inverse of what was written
inline constexpr std::uint64_t kFactorial = 0x08;       // write n, read n! when done
inline constexpr std::uint64_t kStatus = 0x20;          // bit 0 computing, bit 7 raise an IRQ when done
inline constexpr std::uint64_t kIrqStatus = 0x24;
inline constexpr std::uint64_t kIrqRaise = 0x60;
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

struct EduOptions {
  // QEMU's edu truncates bus addresses to its dma_mask property (28 bits unless the VM was
  // started with -device edu,dma_mask=...); the driver keeps its buffer below it.
  unsigned dma_mask_bits = edu::kDmaMaskBits;
};

class EduDriver {
 public:
  // Takes `device` (opened by any backend), maps BAR0, checks the identification register,
  // quiesces the device, then enables bus mastering, MSI (INTx where the backend has no
  // MSI) and the request IRQ where the backend has one, and allocates its DMA buffer below
  // edu's DMA mask.
  static pcie::Result<EduDriver> open(std::unique_ptr<pcie::Device> device, const EduOptions& options = {});
  // Opens `bdf` (bound to vfio-pci) in `container`, then as above.
  static pcie::Result<EduDriver> open(pcie::VfioContainer& container, const pcie::Bdf& bdf);

  // Waits (at most `timeout`) until edu's DMA engine and factorial unit are idle: what a
  // device without a reset needs before bus mastering is enabled. io_error on timeout;
  // the register errors (device_removed once the removal guard revoked the BAR).
  static pcie::Result<void> quiesce(const pcie::Region& registers, std::chrono::milliseconds timeout);

  std::uint32_t identification() const;
  // Writes `value` to the liveness register and returns what the device answers (~value).
  std::uint32_t liveness(std::uint32_t value) const;
  // n!, waiting for the completion interrupt (bounded by `timeout`).
  pcie::Result<std::uint32_t> factorial(std::uint32_t n, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Raises an interrupt through edu's raise register and waits for it (bounded).
  pcie::Result<void> raise_interrupt(std::uint32_t status, std::chrono::milliseconds timeout = std::chrono::seconds(5));
  // Copies `data` (1 to 4095 bytes) into the device's buffer by DMA from host memory.
  pcie::Result<void> dma_to_device(std::span<const std::byte> data);
  // Copies `size` bytes (1 to 4095) of the device's buffer back to host memory by DMA.
  pcie::Result<std::vector<std::byte>> dma_from_device(std::size_t size);
  // Each of the calls above fails with device_removed once the kernel asks for the device
  // (its request IRQ fired): the driver has quiesced the device by then; destroy it, and
  // the kernel can take it. After a timeout (io_error) the driver has quiesced the device
  // too, as it may still have been working, and every later call fails with io_error:
  // reopen it.

  EduDriver(EduDriver&&) noexcept = default;
  // No move assignment: the driver replaced would have to let its device go first.
  EduDriver& operator=(EduDriver&&) = delete;

  const pcie::Device& device() const { return *device_; }
  pcie::IrqKind interrupt_kind() const { return irq_->kind(); }
  const pcie::DmaBuffer& buffer() const { return buffer_; }

 private:
  EduDriver(std::unique_ptr<pcie::Device> device, std::unique_ptr<pcie::Region> bar0, std::unique_ptr<pcie::Interrupts> irq,
            std::unique_ptr<pcie::Interrupts> request, pcie::DmaBuffer buffer);
  static pcie::Result<std::unique_ptr<pcie::Interrupts>> enable_request_irq(const pcie::Device& device);
  // The steps of letting edu go (pcie/quiesce.h), over its registers.
  static pcie::QuiesceSteps quiesce_steps(pcie::Region& registers);
  // The device may still be working (a timeout): quiesce it, and refuse every later call.
  pcie::Error stop_after(pcie::Error cause);
  // Registers through the checked Region accessors: any backend's BAR, or a register
  // model in unit tests (pcie/testing/register_model.h). A failed read gives all ones.
  std::uint32_t read32(std::uint64_t offset) const;
  pcie::Result<void> write32(std::uint64_t offset, std::uint32_t value) const;
  pcie::Result<void> write64(std::uint64_t offset, std::uint64_t value) const;
  pcie::Result<void> run_dma(std::uint64_t source, std::uint64_t destination, std::size_t size, bool to_ram);
  pcie::Result<void> wait_for(std::uint32_t irq, std::chrono::milliseconds timeout);
  pcie::Result<void> removed_error() const;
  // device_removed after the kernel's request, io_error once the driver stopped the device.
  pcie::Result<void> usable() const;

  // Declared in order of acquisition: destroyed in reverse (buffer, interrupts, BAR, device).
  std::unique_ptr<pcie::Device> device_;
  std::unique_ptr<pcie::Region> bar0_;
  std::unique_ptr<pcie::Interrupts> irq_;
  std::unique_ptr<pcie::Interrupts> request_;  // null where the backend has no request IRQ
  pcie::DmaBuffer buffer_;
  bool released_ = false;  // the kernel asked for the device
  // Last member, so destroyed first: the device is idle and without bus mastering before
  // the buffer, the interrupts and the BAR above are released.
  pcie::Quiescer quiesce_;
};

}  // namespace examples
