// The container's IOMMU mode (private): what differs between a type1 container, an iommufd
// one and one without an IOMMU, in one object per mode (as libvfn's iommu_ctx_ops): how a
// device is attached and opened, and which DMA backend hands out its bus addresses. The
// container, device and allocator code call the mode; none of them branches on it.
#pragma once

#include <memory>

#include "pcie/dma_backend.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/vfio.h"

namespace pcie::detail {

struct VfioContainerState;
struct VfioDeviceState;
struct PeerWindowRequest;  // src/vfio/peer_mapping.h
class PeerMapping;

class IommuMode {
 public:
  virtual ~IommuMode() = default;
  // True when the container's devices reach memory through physical addresses (the user
  // acknowledged no IOMMU when opening it).
  virtual bool without_iommu() const = 0;
  // Opens device.bdf in the container: sets device.fd and device.group (and, for iommufd,
  // device.iommufd_device_id), attaching its group or binding its cdev first. Errors say
  // what to do (a missing group, the wrong container kind, a node not this user's, a group
  // not viable, the device in use elsewhere). Called with state.mutex held.
  virtual Result<void> open_device(VfioContainerState& state, VfioDeviceState& device) = 0;
  // The backend through which DmaAllocator maps buffers for the container's devices.
  // Errors: not_supported when an IOMMU mode knows no IOVA ranges yet (no device open, or a
  // kernel before 5.4). Called with state.mutex held.
  virtual Result<std::shared_ptr<DmaBackend>> dma_backend(const std::shared_ptr<VfioContainerState>& state) = 0;
  // Makes a window of a peer device's BAR reachable by the container's devices
  // (pcie/peer_dma.h says how each mode does it and how it fails). Called without
  // state.mutex held.
  virtual Result<std::unique_ptr<PeerMapping>> map_peer_window(const std::shared_ptr<VfioContainerState>& state,
                                                               const PeerWindowRequest& request) = 0;
};

// VFIO type1v2 (/dev/vfio/vfio): each device's group attached to the container.
std::unique_ptr<IommuMode> make_type1_mode();
// VFIO no-IOMMU (VFIO_NOIOMMU_IOMMU, groups named noiommu-N): buffers from `physical`.
std::unique_ptr<IommuMode> make_noiommu_mode(std::shared_ptr<DmaBackend> physical);
// iommufd (/dev/iommu and one IOAS): each device through its cdev. An automatic choice
// that cannot open the first device's cdev turns into type1 for good (VfioContainerState::
// choice says so).
std::unique_ptr<IommuMode> make_iommufd_mode();
// iommufd without an IOMMU (/dev/iommu and one IOAS; each device through its noiommu-vfioN
// cdev): buffers pinned by the IOAS, their physical addresses from the kernel.
std::unique_ptr<IommuMode> make_iommufd_noiommu_mode(const PhysicalDmaOptions& options);

// The error of an IOMMU mode asked for a DMA backend before it knows IOVA ranges.
Error no_iova_ranges_error();

// /dev/vfio/vfio, of the VFIO API version this library speaks. Errors: not_found (modules
// not loaded), permission_denied (with the hint), not_supported (another API version).
Result<UniqueFd> open_container_node(const VfioPaths& paths);
// open_container_node() with the type1v2 model on offer (not_supported without it).
Result<UniqueFd> open_type1_container(const VfioPaths& paths);

}  // namespace pcie::detail
