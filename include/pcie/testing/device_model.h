// A fake device behind the pcie::Device interface, for unit tests of drivers written
// against it (target //:pcie_testing), in the manner of the kernel VFIO selftests' driver
// interface: BARs are RegisterModels, interrupts are eventfds the test fires, and a DMA
// engine reads and writes the driver's DMA buffers through their bus addresses, as a
// device behind an IOMMU would (an unmapped address is a fault, not a write to memory).
//
//   pcie::testing::DeviceModel fake({.bdf = {0, 3, 0, 0}, .msi_vectors = 1});
//   pcie::testing::RegisterModel& bar0 = fake.add_bar(0, 1 << 20);
//   ... hooks on bar0 that call fake.dma_read / fake.dma_write / fake.fire ...
//   auto driver = MyDriver::open(fake.open());   // a std::unique_ptr<pcie::Device>
//
// DeviceModel is the test's handle; open() hands out Device objects sharing its state, so
// the test keeps its view after the driver takes ownership. Thread-safe.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>

#include "pcie/device.h"
#include "pcie/testing/register_model.h"

namespace pcie::testing {

// What a DeviceModel offers: its address and, per interrupt kind, how many vectors the
// driver may enable (what Device::vector_count reports; 0: that kind cannot be enabled).
struct DeviceModelOptions {
  Bdf bdf{0, 3, 0, 0};           // what Device::bdf() reports and errors name (0000:03:00.0)
  unsigned intx_vectors = 1;     // INTx vectors offered
  unsigned msi_vectors = 1;      // MSI vectors offered
  unsigned msix_vectors = 0;     // MSI-X vectors offered (none by default)
  unsigned request_vectors = 1;  // the kernel's "give the device back" (VFIO)
  // The first bus address the DMA allocator hands out; buffers follow, page-aligned.
  std::uint64_t first_bus_address = 0x100000;
};

// The test's handle on a fake device: its BARs, its interrupts and its DMA, seen from the
// device's side. Copies share the one device, as the Device objects open() hands out do.
class DeviceModel {
 public:
  // A device with the address and vectors of `options`, no BAR yet (add_bar), Bus Master
  // Enable off and nothing mapped for DMA.
  explicit DeviceModel(const DeviceModelOptions& options = {});

  // BAR `bar` (0-5; larger is BAR5) of `size` bytes; a BAR added before is returned as it
  // is (regions over it stay valid). Opening a BAR that was not added is not_found.
  RegisterModel& add_bar(unsigned bar, std::uint64_t size);
  // The same, with the driver's Regions over it accepting only `widths` (a device whose
  // registers take 32- and 64-bit accesses only); a BAR added before keeps its widths.
  RegisterModel& add_bar(unsigned bar, std::uint64_t size, WidthSet widths);

  // A Device over this fake, for the driver to own. backend_name() is "fake".
  std::unique_ptr<Device> open() const;

  // The device's side.

  // Signals `vector` of `kind` if the driver enabled it and, for MSI and MSI-X, set Bus
  // Master Enable (a message is a memory write); returns whether it was delivered. A
  // vector the driver masked (Interrupts::mask) holds it as pending and gets it at unmask;
  // the driver may also add vectors (Interrupts::add_vectors) up to the options' counts.
  bool fire(IrqKind kind, unsigned vector = 0) const;
  // Reads or writes host memory at `bus_address` as the device's DMA would: permission_denied
  // without Bus Master Enable, not_found (an IOMMU fault) unless the whole range lies in one
  // buffer the driver mapped for that direction. Faults are counted.
  Result<void> dma_read(std::uint64_t bus_address, std::span<std::byte> into) const;
  // As dma_read, the other way: copies `from` to host memory at `bus_address`, which must
  // lie in one buffer the driver mapped for the device to write.
  Result<void> dma_write(std::uint64_t bus_address, std::span<const std::byte> from) const;

  // Whether the driver has Bus Master Enable set (Device::enable_bus_master); off at first.
  bool bus_master() const;
  // How many DMA accesses were refused as IOMMU faults (dma_read or dma_write's not_found).
  std::uint64_t dma_faults() const;
  // DMA refused because Bus Master Enable was off (not counted in dma_faults()): a device
  // model that tries it after the driver let go of the device shows a driver that did not
  // stop its device first.
  std::uint64_t dma_without_bus_master() const;
  // Bytes the driver has mapped for DMA now, and whether an interrupt kind is enabled.
  std::uint64_t dma_mapped_bytes() const;
  // Whether the driver holds `kind` enabled (Device::enable_interrupts, not yet disabled).
  bool interrupts_enabled(IrqKind kind) const;

  // Called when the driver unmaps a DMA buffer, with its bus address and size: after the
  // device lost access to it and before its memory is freed, in the driver's thread and
  // with the model unlocked (the hook may call any of the functions above). A device model
  // uses it to flag memory taken away while the device may still use it. One hook: a
  // later call replaces it, an empty function removes it.
  using UnmapHook = std::function<void(std::uint64_t bus_address, std::uint64_t size)>;
  // Installs `hook` as the unmap hook, replacing any earlier one; an empty one removes it.
  void on_unmap(UnmapHook hook);

  struct State;  // shared with the Device objects open() hands out

 private:
  std::shared_ptr<State> state_;
};

}  // namespace pcie::testing
