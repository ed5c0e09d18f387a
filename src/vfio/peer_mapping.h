// A window of a peer device's BAR mapped by one IOMMU mode (private; pcie/peer_dma.h is
// the public side): what the mode needs to know, and the object that undoes its mapping.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "pcie/discovery.h"
#include "pcie/dma_backend.h"
#include "pcie/peer_dma.h"
#include "pcie/vfio.h"

namespace pcie::detail {

struct VfioContainerState;
struct VfioDeviceState;

// Bytes [offset, offset + length) of BAR `bar` of `peer`, checked by map_peer_bar(): page
// multiples, nonzero, inside the BAR, a memory BAR, the peer open in the container.
struct PeerWindowRequest {
  const VfioDeviceState* peer = nullptr;
  const VfioDeviceState* initiator = nullptr;
  unsigned bar = 0;
  BarInfo bar_info;       // sysfs's view: bar_info.bus_address is the CPU address
  VfioRegionInfo region;  // the BAR's VFIO region
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  DmaMapRequest dma;  // dma_limit and directions; page_size 4096
  std::string name;   // "0000:00:04.0 BAR2 [0x0, 0x1000)"
};

// A window one mode mapped. Destruction undoes what unmap() has not.
class PeerMapping {
 public:
  virtual ~PeerMapping() = default;
  virtual BusAddress address() const = 0;
  virtual PeerDmaPath path() const = 0;
  // Undoes the mapping now (once; later calls succeed doing nothing). On an error the
  // initiator may still reach the window: its bus address is not handed out again.
  virtual Result<void> unmap() = 0;
};

// Whether bytes [offset, offset + length) of BAR `bar` avoid the MSI-X table and pending-bit
// array that `config` (the peer's config space, at least its first 64 bytes) places there:
// invalid_argument naming the structure when not; malformed when the capability list
// cannot be walked or the capability is cut short (the check fails closed); device_removed
// for an all-ones header. `name` is the window's, for the errors.
Result<void> check_window_avoids_msix(std::span<const std::uint8_t> config, unsigned bar, std::uint64_t offset,
                                     std::uint64_t length, const std::string& name);

// Whether a sysfs path component names a host bridge's directory: "pci", a domain of at
// least four hex digits, a colon, a two-digit bus ("pci0000:00", a VMD domain's
// "pci10000:e0"); device-tree names such as "pcie@1000" do not.
bool is_host_bridge_directory(std::string_view component);

// The host bridge a device sits below, from its sysfs link (…/devices/pci0000:00/…): the
// innermost such directory (a VMD domain inside a root bus is a bridge of its own).
// Unknown is refused, not assumed: not_supported when the link names none; the readlink's
// error when there is no link.
Result<std::string> host_bridge_of(const SysfsPaths& paths, const Bdf& bdf);

// The BAR's address as the device decodes it, from the device's own config space (sysfs
// <device>/config reads the hardware; VFIO's config region holds vfio-pci's emulated
// copy, which writes change): PCI Local Bus 3.0, 6.2.5.1, bits 3:0 are flags, and a 64-bit
// BAR's next register holds the upper half. device_removed when the header reads all ones,
// device_disabled when `require_decoding` and the device does not decode memory (Memory
// Space Enable off), not_supported for an SR-IOV virtual function (its BARs and Memory
// Space Enable live in its physical function's SR-IOV capability, not its own registers).
Result<std::uint64_t> bar_bus_address(const SysfsPaths& paths, const Bdf& bdf, unsigned bar,
                                      bool require_decoding = true);

// type1: maps the BAR window (an mmap of the peer's region) through `backend` (the
// container's type1 DMA backend), which takes an IOVA and maps it into the IOMMU.
Result<std::unique_ptr<PeerMapping>> map_bar_through_iommu(std::shared_ptr<DmaBackend> backend,
                                                           const PeerWindowRequest& request);
// iommufd: exports the window as a dma-buf and imports it into the container's IOAS.
Result<std::unique_ptr<PeerMapping>> map_bar_as_dma_buf(const std::shared_ptr<VfioContainerState>& state,
                                                        const PeerWindowRequest& request);
// No IOMMU: the BAR's own bus address, checked (one host bridge, no translation, below
// the DMA limit).
Result<std::unique_ptr<PeerMapping>> map_bar_by_bus_address(const VfioContainerState& state,
                                                            const PeerWindowRequest& request);

}  // namespace pcie::detail
