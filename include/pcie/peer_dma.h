// Peer-to-peer DMA: a window of one device's BAR made a DMA target for another device, as a
// DmaBuffer is for host memory but with no host memory behind it. An NVMe drive reading
// straight into an FPGA card's memory BAR, a DMA engine writing into a GPU's BAR, a
// controller using its own memory buffer (NVMe CMB).
//
// How the window gets its bus address depends on the container's IOMMU mode:
//  - VFIO type1: the peer BAR's mapping (an mmap of its VFIO region) is mapped into the IOMMU
//    like any memory, at an IOVA from the container's IOVA space.
//  - iommufd: the BAR is exported as a dma-buf (VFIO_DEVICE_FEATURE_DMA_BUF, Linux 6.19) and
//    imported into the IOAS (IOMMU_IOAS_MAP_FILE); iommufd refuses a plain mmap of a BAR
//    (VM_PFNMAP). The kernel revokes the import for good when the peer is reset, stops
//    decoding its memory or changes power state: the initiator's DMA to the window then
//    faults in the IOMMU, never reaching a stale address, and the window stays dead until
//    it is released and mapped again. PeerDmaWindow::check() tells what it can see of
//    that (decoding off, a reset through this library); a driver calls it before each
//    transfer.
//  - type1: nothing is revoked; the IOMMU keeps translating to the BAR's physical pages,
//    which hold whatever the peer decodes there after a reset.
//  - no IOMMU (a container opened without one, through VFIO's groups or through iommufd):
//    the bus address of the BAR itself, read from the device's config space. Both devices
//    must sit below one host bridge, and the BAR's bus address must equal its CPU address
//    (no translation by the host bridge), or the window is refused. Nothing enforces the
//    directions or the window's bounds there: the device can reach everything, as with
//    host memory.
//
// Whether the peer-to-peer transaction then reaches the BAR is the fabric's business: below
// one PCIe switch it is routed there; through a root complex only where the root complex
// forwards peer traffic (many do not), and ACS may redirect it to the IOMMU. The IOMMU
// mapping is made either way.
//
// Lifetimes: a window keeps the peer device (and its container) open; destroying it unmaps
// the window from the IOMMU (or forgets the address) before the BAR's mapping goes.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/bus_address.h"
#include "pcie/error.h"
#include "pcie/vfio.h"

namespace pcie {

class VfioDevice;  // pcie/vfio.h

namespace detail {
struct PeerWindowState;
}

// How a window got its bus address.
enum class PeerDmaPath {
  iommu_bar_mapping,  // VFIO type1: the BAR's mmap mapped into the IOMMU
  iommufd_dma_buf,    // iommufd: the BAR exported as a dma-buf and imported into the IOAS
  bus_address,        // no IOMMU: the BAR's own bus address
};
// "type1 (the BAR's mapping)", "iommufd (dma-buf)", "no IOMMU (the BAR's bus address)".
std::string_view to_string(PeerDmaPath path);

// What map_peer_bar() maps a window for: the initiator's reach and the directions allowed.
struct PeerDmaOptions {
  // The last bus address the initiating device can reach: dma_mask_limit(bits) of its mask.
  std::uint64_t dma_limit = ~std::uint64_t{0};
  // What the IOMMU lets the initiator do with the window (at least one); without an IOMMU,
  // advisory.
  bool device_reads = true;
  bool device_writes = true;  // the initiator may write into the BAR (see above)
};

// A window of a peer's BAR that the devices of a VFIO container can reach by DMA.
// Move-only; destruction unmaps it.
class PeerDmaWindow {
 public:
  // An empty window (valid() false; bus address 0, size 0).
  PeerDmaWindow() = default;
  // Move-only: takes over the window; the moved-from one is empty.
  PeerDmaWindow(PeerDmaWindow&&) noexcept = default;
  // Releases this window (ignoring the error, as the destructor does), then takes over
  // `other`'s, which is left empty.
  PeerDmaWindow& operator=(PeerDmaWindow&& other) noexcept;
  ~PeerDmaWindow();

  // False for an empty window (default-constructed, moved from or released).
  bool valid() const { return state_ != nullptr; }
  // The address the initiating device must use for the window's first byte (0 when empty).
  BusAddress bus_address() const;
  // The window's length in bytes, as mapped (0 when empty).
  std::uint64_t size() const;
  // How it was mapped (bus_address for an empty window).
  PeerDmaPath path() const;
  // "0000:00:04.0 BAR2 [0x0, 0x1000)".
  const std::string& name() const;
  // The bus address of byte `offset` of the window: out_of_range unless offset + length
  // stays inside it (overflow-safe); invalid_argument for an empty window.
  Result<BusAddress> bus_address_of(std::uint64_t offset, std::uint64_t length = 1) const;

  // Whether DMA through the window still reaches the BAR, checked now from the peer's
  // command register (one 2-byte read of its sysfs config file, opened when the window
  // was mapped: the hardware's view) and what this process did to the peer. A driver
  // calls it before each transfer it starts (the example NVMe driver's read_to and
  // write_from do). Errors:
  //  - device_disabled: the peer does not decode memory now (Memory Space Enable off); or,
  //    for an iommufd window, the kernel has revoked it: the peer's decoding was seen off,
  //    or the peer was reset through VfioDevice::reset() since the window was mapped;
  //  - device_removed: the peer's config space is gone or reads all ones;
  //  - io_error (the read's own error) when the register cannot be read: the window may or
  //    may not still work, and is not marked revoked;
  //  - invalid_argument: an empty window.
  // For an iommufd window the first device_disabled or device_removed is for good: every
  // later check returns that same error; release() the window and map it again (the hint
  // says so). A check, not a lock: a reset or decode switched off after it still revokes
  // the window. Unseen: a decode switched off and on again between two checks, a reset by
  // another process, a power-state change (D3hot keeps Memory Space Enable set), and the
  // decoding of an SR-IOV VF peer (its own Memory Space Enable reads 0; its PF's VF MSE
  // governs it). The initiator's DMA into a revoked iommufd window then faults in the
  // IOMMU: it never reaches a stale address. type1 and no-IOMMU windows are not revoked by
  // a reset (the kernel restores the BAR's address).
  Result<void> check() const;

  // Whether `device` may use the window: it was opened in the container the window was
  // mapped for (a window's bus address means nothing in another container's IOMMU
  // domain). False for an empty window or device.
  bool usable_by(const VfioDevice& device) const;
  // The directions the window was mapped with (PeerDmaOptions): the initiator reads from
  // the BAR, writes into it. False for an empty window.
  bool device_reads() const;
  // As above: whether the initiator may write into the BAR.
  bool device_writes() const;
  // The device whose BAR the window is (0000:00:00.0 for an empty window).
  const Bdf& peer() const;

  // Unmaps now and reports what the kernel said (the destructor ignores it). The window is
  // empty afterwards either way; on an error its bus address stays taken, since the device
  // may still reach the BAR there.
  Result<void> release();

 private:
  friend Result<PeerDmaWindow> map_peer_bar(const VfioDevice&, const VfioDevice&, unsigned, std::uint64_t,
                                            std::uint64_t, const PeerDmaOptions&);
  explicit PeerDmaWindow(std::shared_ptr<detail::PeerWindowState> state) : state_(std::move(state)) {}
  std::shared_ptr<detail::PeerWindowState> state_;
};

// Makes bytes [offset, offset + length) of BAR `bar` of `peer` a DMA target for
// `initiator` (and every device of its container). Both must be open in one VfioContainer.
// offset and length must be multiples of 4096 (an IOMMU maps pages), length nonzero.
// Errors:
//  - invalid_argument: an empty device, a BAR index above 5, an offset or length not a
//    multiple of 4096, neither direction allowed, the initiator and the peer one device,
//    the two in different containers (open both through one VfioContainer), or a window
//    that covers the peer's MSI-X table or pending-bit array;
//  - out_of_range: the window is not inside the BAR (overflow-safe), or no bus address
//    below options.dma_limit is free (IOVA space) or the BAR lies above it (no IOMMU);
//  - not_found: the BAR is not implemented;
//  - not_supported: the BAR is I/O space or has no address; type1: vfio-pci maps no part
//    of the BAR that holds the window; iommufd: the kernel cannot export the BAR as a
//    dma-buf (before Linux 6.19, or without CONFIG_PCI_P2PDMA and CONFIG_DMA_SHARED_BUFFER;
//    the hint says to use type1 or a newer kernel) or the device's driver cannot; no IOMMU:
//    the devices below different (or unknown) host bridges, or a BAR whose bus address
//    differs from its CPU address;
//  - permission_denied: type1 and a read-only region with device_writes;
//  - device_disabled: the peer does not decode memory (Memory Space Enable off) or is being
//    reset, in every mode: type1's IOMMU mapping cannot reach the BAR's pages (EFAULT),
//    iommufd's export or import is refused (ENODEV), no IOMMU reads the command register;
//  - device_removed: the peer's config space reads all ones (no IOMMU);
//  - malformed: the peer's capability list cannot be walked (the MSI-X check fails closed);
//  - the kernel's error otherwise (mmap of the region, the IOMMU mapping, the import).
Result<PeerDmaWindow> map_peer_bar(const VfioDevice& initiator, const VfioDevice& peer, unsigned bar,
                                   std::uint64_t offset, std::uint64_t length, const PeerDmaOptions& options = {});

// One way map_peer_bar could give the initiator a window, and whether it can here.
struct PeerPathCheck {
  PeerDmaPath path = PeerDmaPath::iommu_bar_mapping;  // the way checked
  bool possible = false;  // whether map_peer_bar could take it on this machine
  std::string reason;  // why, or why not: what to change
};

// What peer_reachability found.
struct PeerReachability {
  std::string target;                // "0000:00:04.0 BAR2 (1048576 bytes, 64-bit prefetchable memory)"
  std::vector<PeerPathCheck> paths;  // iommu_bar_mapping, iommufd_dma_buf, bus_address, in that order
  // What map_peer_bar needs besides: devices to bind to vfio-pci, and the parts of the BAR
  // a window must avoid (the MSI-X table and pending-bit array).
  std::vector<std::string> notes;
  // Whether any of `paths` is possible.
  bool any_possible() const;
};

// Whether `initiator` could reach BAR `bar` of `peer` through map_peer_bar, and by which
// path, told from sysfs, procfs and the config space alone: nothing is opened, bound or
// written, so it can run before anyone writes a driver (`pciectl peer`). A path is
// possible when:
//  - type1: the initiator is behind an IOMMU (<device>/iommu) and the BAR is a memory BAR
//    with an address and at least a page;
//  - iommufd: the same, /dev/iommu exists, and the kernel is Linux 6.19 or later (which can
//    export a BAR as a dma-buf, if built with CONFIG_VFIO_PCI_DMABUF: not visible from
//    here);
//  - the BAR's bus address: the initiator is behind no IOMMU, both devices sit below one
//    host bridge, the BAR's bus address equals its CPU address, and the peer is not an
//    SR-IOV virtual function (whose BAR address its own config space does not hold).
// No path is possible when one device is behind an IOMMU and the other is not (no
// container holds both). Notes say which backend a container opened with the defaults
// would take (choose_vfio_backend_for, which opens /dev/iommu to tell), the peer's memory
// decoding being off (opening it through VFIO turns it on), the drivers to bind, and the
// parts of the BAR MSI-X uses.
// Whether the fabric then routes the transaction (a switch does; many root complexes do
// not) cannot be told from here. Errors: invalid_argument (a BAR index above 5, the
// initiator as its own peer), not_found (no such device), and discovery's errors.
Result<PeerReachability> peer_reachability(const Bdf& initiator, const Bdf& peer, unsigned bar,
                                           const VfioPaths& paths = {});

}  // namespace pcie
