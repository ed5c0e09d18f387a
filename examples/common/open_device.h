// How the example command lines open a device on the backend the user names:
//   vfio          bound to vfio-pci, behind an IOMMU (type1 or iommufd, as the library chooses)
//   vfio-noiommu  bound to vfio-pci in no-IOMMU mode: DMA to physical addresses
//   uio           bound to uio_pci_generic: INTx only, DMA to physical addresses
// The last two let the device reach all of memory; the example programs accept that on the
// user's behalf, as their usage text says.
#pragma once

#include <memory>
#include <string_view>

#include "pcie/device.h"
#include "pcie/vfio.h"

namespace examples {

inline constexpr const char* kBackendNames = "vfio|vfio-noiommu|uio";

// Whether `backend` is one of kBackendNames.
bool known_backend(std::string_view backend);

// The device at `bdf` through `backend`. invalid_argument for an unknown backend name;
// otherwise the errors of VfioContainer::open / open_without_iommu, open_device and
// UioDevice::open (not_found when the device is not bound to the backend's driver).
pcie::Result<std::unique_ptr<pcie::Device>> open_device(std::string_view backend, const pcie::Bdf& bdf);

// Two devices opened in one VFIO container, so that one can reach the other's BAR by DMA
// (pcie/peer_dma.h). Both stay usable when the container object goes. The peer is opened
// without a reset: its BAR's contents are the point.
struct DevicePair {
  std::unique_ptr<pcie::VfioDevice> device;
  std::unique_ptr<pcie::VfioDevice> peer;
};

// `bdf` and `peer` through `backend`, one container for both. invalid_argument for an
// unknown backend or one device named twice; not_supported for uio (peer DMA needs VFIO:
// bind both to vfio-pci); otherwise as open_device.
pcie::Result<DevicePair> open_device_and_peer(std::string_view backend, const pcie::Bdf& bdf, const pcie::Bdf& peer);

}  // namespace examples
