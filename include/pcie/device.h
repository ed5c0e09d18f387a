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

class Device {
 public:
  virtual ~Device() = default;
  // False for an empty device handle (a default-constructed or moved-from VfioDevice or
  // UioDevice): its calls fail with invalid_argument.
  virtual bool valid() const { return true; }
  virtual const Bdf& bdf() const = 0;
  // "VFIO (IOMMU)", "VFIO (no IOMMU)" or "UIO (uio_pci_generic)", for messages and reports.
  virtual std::string backend_name() const = 0;
  // BAR `bar` (0-5), memory BARs mapped uncached, as the backend allows. Errors: not_found
  // for a BAR the device does not implement, and the backend's own (see its header).
  virtual Result<std::unique_ptr<Region>> open_bar(unsigned bar) const = 0;
  // Sets (with Memory Space Enable) or clears Bus Master Enable: the device does no DMA and
  // sends no MSI until it is set (PCI Local Bus 3.0, 6.2.2).
  virtual Result<void> enable_bus_master(bool enable = true) const = 0;
  // Vectors the device offers for `kind` through this backend (0 when it offers none: UIO
  // has only INTx).
  virtual Result<unsigned> vector_count(IrqKind kind) const = 0;
  // Enables `count` vectors of `kind`. out_of_range when the backend offers fewer; busy when
  // the kind (or another of INTx/MSI/MSI-X) is already enabled.
  virtual Result<std::unique_ptr<Interrupts>> enable_interrupts(IrqKind kind, unsigned count = 1) const = 0;
  // An allocator whose buffers this device can reach: IOVAs behind the IOMMU, physical
  // addresses without one (where the user acknowledged it at open; not_supported otherwise,
  // saying how).
  virtual Result<DmaAllocator> dma_allocator() const = 0;
};

}  // namespace pcie
