// Devices owned through UIO (Documentation/driver-api/uio-howto.rst) with the kernel's
// generic PCI driver, uio_pci_generic: for hosts without an IOMMU (or without VFIO), where
// it is the stock kernel's way to hand a device to user space. BARs are reached through
// the sysfs path (pcie/sysfs_bar.h: uio_pci_generic claims no BAR, so the mapping is
// allowed), interrupts through /dev/uioN, and DMA through physical-address buffers, which
// the user must acknowledge (pcie/dma_backend.h).
//
// What uio_pci_generic does, which the objects here account for:
//  - INTx only (no MSI or MSI-X). Each interrupt sets the command register's Interrupt
//    Disable bit (pci_check_and_mask_intx); the driver has no irqcontrol, so rearm()
//    clears the bit through the config file (as uio-howto.rst's example does).
//  - read() of /dev/uioN returns the total interrupt count as a 32-bit number, blocking
//    until it changes; the node is pollable.
//  - Closing /dev/uioN clears Bus Master Enable (its release callback), so that DMA does
//    not outlive its user. A UioDevice therefore opens the node once and keeps it open
//    while it or any interrupt set of it lives; destroying them all stops the device's DMA.
//
// Threads: a UioDevice's operations may be used from several threads (the command register
// is changed under a lock); a UioInterrupts object has one waiter at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "pcie/bdf.h"
#include "pcie/device.h"
#include "pcie/dma_backend.h"
#include "pcie/interrupts.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// Where UioDevice::open finds the device's sysfs files and its /dev/uioN node.
struct UioPaths {
  SysfsPaths sysfs;  // where the device's sysfs directory (config, BAR files) lies
  std::string dev = "/dev";  // where the uioN nodes are
};

// What a UioDevice may do beyond BARs and INTx: physical-address DMA, and how.
struct UioOptions {
  // Physical-address DMA buffers through dma_allocator(); without this acknowledgement it
  // fails, since nothing stands between the device and memory.
  std::optional<DeviceMayReachAllMemory> dma = std::nullopt;
  PhysicalDmaOptions physical = {};  // the physical-address backend's settings (pagemap, mlock)
};

namespace detail {
struct UioDeviceState;
}

// INTx of a UIO device, signalled on /dev/uioN. Move-only; destruction masks INTx.
class UioInterrupts final : public Interrupts {
 public:
  // An empty set (valid() false), for a struct built step by step.
  UioInterrupts() = default;
  // Move-only: takes over the set; the moved-from one is empty.
  UioInterrupts(UioInterrupts&&) noexcept;
  // Disables this set first (as disable(), ignoring its error), then takes over `other`'s,
  // which is left empty.
  UioInterrupts& operator=(UioInterrupts&&) noexcept;
  ~UioInterrupts() override;

  unsigned count() const override { return state_ ? 1 : 0; }
  IrqKind kind() const override { return IrqKind::intx; }
  const std::string& name() const override { return name_; }
  // False once default-constructed, moved from or disabled.
  bool valid() const override { return state_ != nullptr; }
  // /dev/uioN, owned by the device: poll it for POLLIN, then consume().
  Result<int> fd(unsigned vector) const override;
  Result<std::uint64_t> consume(unsigned vector) const override;
  Result<std::uint64_t> wait(unsigned vector, std::chrono::milliseconds timeout) const override;
  // Clears Interrupt Disable (config file) once the device's interrupt has been
  // acknowledged; until then a level-triggered INTx would fire again at once.
  Result<void> rearm(unsigned vector) const override;
  // Sets (mask) or clears (unmask) Interrupt Disable in the command register.
  Result<void> mask(unsigned vector) const override;
  // Clears Interrupt Disable, as rearm() does.
  Result<void> unmask(unsigned vector) const override;
  // not_supported: uio_pci_generic offers INTx only (invalid_argument when empty).
  Result<unsigned> add_vectors(unsigned more) override;
  // Sets Interrupt Disable and gives INTx back to the device object; the set is then empty.
  Result<void> disable() override;

 private:
  friend class UioDevice;
  UioInterrupts(std::shared_ptr<detail::UioDeviceState> state, std::string name, std::uint32_t seen);
  Result<void> check_vector(unsigned vector, std::string_view operation) const;
  std::shared_ptr<detail::UioDeviceState> state_;  // keeps /dev/uioN open
  std::string name_;
  mutable std::uint32_t seen_ = 0;  // the event count last read
};

// A device bound to uio_pci_generic. Move-only.
class UioDevice final : public Device {
 public:
  // Opens `bdf`'s /dev/uioN and its config file (for writing: the command register). The
  // device has one UioDevice at a time (a lock on the node, as VFIO allows one open of a
  // device): busy while another holds it, in this process or another; a program that opens
  // the node without the library is not seen. Errors: not_found (no such device),
  // not_supported (not bound to a UIO driver: the hint says how to bind it),
  // permission_denied (the node and the config file are root's: run as root or chown them),
  // busy (held).
  static Result<UioDevice> open(const Bdf& bdf, const UioOptions& options = {}, const UioPaths& paths = {});
  // An empty device, for a driver struct built step by step (move an opened one in); a
  // moved-from device is the same. valid() is false, bdf() is 0000:00:00.0, uio_number()
  // is -1, and every Result call fails with invalid_argument.
  UioDevice();
  // Move-only: takes over the open device; the moved-from one is empty.
  UioDevice(UioDevice&&) noexcept;
  // Lets go of this device (its node closes once no interrupt set of it is left, which
  // clears Bus Master Enable), then takes over `other`'s, which is left empty.
  UioDevice& operator=(UioDevice&&) noexcept;
  ~UioDevice() override;

  bool valid() const override { return state_ != nullptr; }
  const Bdf& bdf() const override;
  std::string backend_name() const override { return "UIO (uio_pci_generic)"; }
  // N of /dev/uioN.
  int uio_number() const;
  // The BAR through the sysfs path (open_sysfs_bar, uncached); needs root.
  Result<std::unique_ptr<Region>> open_bar(unsigned bar) const override;
  // Through the config file (root).
  Result<void> enable_bus_master(bool enable = true) const override;
  // INTx: 1 when the device has an interrupt pin and the kernel gave it an IRQ; every
  // other kind: 0 (uio_pci_generic offers none).
  Result<unsigned> vector_count(IrqKind kind) const override;
  // INTx only, through enable_intx() (not_supported for the others, saying to use VFIO).
  Result<std::unique_ptr<Interrupts>> enable_interrupts(IrqKind kind, unsigned count = 1) const override;
  // INTx as a UioInterrupts, Interrupt Disable cleared, counting interrupts from now. Fails
  // with out_of_range (no interrupt pin, or no IRQ routed), busy (already enabled), or the
  // config space error.
  Result<UioInterrupts> enable_intx() const;
  // Physical-address buffers when UioOptions::dma acknowledged them; not_supported
  // otherwise.
  Result<DmaAllocator> dma_allocator() const override;

 private:
  explicit UioDevice(std::shared_ptr<detail::UioDeviceState> state);
  std::shared_ptr<detail::UioDeviceState> state_;
};

}  // namespace pcie
