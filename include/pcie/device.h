// A device a user-space driver owns, whichever backend opened it: VFIO with an IOMMU,
// VFIO in no-IOMMU mode (both VfioDevice, pcie/vfio.h) or UIO (UioDevice, pcie/uio.h). A
// driver written against Device runs on each unchanged; only the open call differs:
//
//   auto container = pcie::VfioContainer::open();             // IOMMU
//   auto device = container->open_device(bdf);
// or
//   auto container = pcie::VfioContainer::open_without_iommu(
//       pcie::DeviceMayReachAllMemory::acknowledged);          // no IOMMU, VFIO
// or
//   auto device = pcie::UioDevice::open(bdf,
//       {.dma = pcie::DeviceMayReachAllMemory::acknowledged}); // no IOMMU, uio_pci_generic
//
//   MyDriver::open(*device);  // takes a pcie::Device&
#pragma once

#include <memory>
#include <string>

#include "pcie/bdf.h"
#include "pcie/dma.h"
#include "pcie/error.h"
#include "pcie/interrupts.h"
#include "pcie/region.h"

namespace pcie {

// Each call's comment here is its contract for every backend; an override's comment says
// only what is specific to it.
class Device {
 public:
  virtual ~Device() = default;
  // False for an empty device handle (a default-constructed or moved-from VfioDevice or
  // UioDevice): every Result call below then fails with invalid_argument, saying so.
  virtual bool valid() const { return true; }
  // The device's address; 0000:00:00.0 for an empty handle.
  virtual const Bdf& bdf() const = 0;
  // "VFIO (IOMMU)", "VFIO (no IOMMU)" or "UIO (uio_pci_generic)", for messages and reports.
  virtual std::string backend_name() const = 0;
  // BAR `bar` (0-5), memory BARs mapped uncached, as the backend allows; the Region is the
  // caller's. Fails with invalid_argument for `bar` above 5 (on every backend), not_found
  // for a BAR the device does not implement, or the backend's own: VFIO the kernel's
  // (region info, mmap); UIO BarMapping::map's and IoPortBar::open's (pcie/sysfs_bar.h).
  virtual Result<std::unique_ptr<Region>> open_bar(unsigned bar) const = 0;
  // Sets (with Memory Space Enable) or clears Bus Master Enable: the device does no DMA and
  // sends no MSI until it is set (PCI Local Bus 3.0, 6.2.2). Fails with the backend's
  // config space error (device_removed when the device is gone; UIO also when the header
  // reads all ones); VFIO also the kernel's error opening its config region.
  virtual Result<void> enable_bus_master(bool enable = true) const = 0;
  // Vectors the device offers for `kind` through this backend, without enabling any (0
  // when it offers none: UIO has only INTx). Fails with the backend's error: VFIO: the
  // kernel's (VFIO_DEVICE_GET_IRQ_INFO); UIO: the config space open or read error.
  virtual Result<unsigned> vector_count(IrqKind kind) const = 0;
  // Enables `count` vectors of `kind`; the Interrupts are the caller's. Fails with
  // out_of_range when `count` is 0 or more than the backend offers; busy when the kind (or
  // another of INTx/MSI/MSI-X) is already enabled; UIO: not_supported for any kind but
  // INTx; or the kernel's error (eventfd, VFIO_DEVICE_SET_IRQS; UIO: the config write).
  virtual Result<std::unique_ptr<Interrupts>> enable_interrupts(IrqKind kind, unsigned count = 1) const = 0;
  // An allocator whose buffers this device can reach: IOVAs behind the IOMMU, physical
  // addresses without one (where the user acknowledged it at open; not_supported otherwise,
  // saying how). VFIO: not_supported also when the kernel reports no IOVA ranges (< 5.4).
  virtual Result<DmaAllocator> dma_allocator() const = 0;
};

}  // namespace pcie
