// What VFIO handles share (private): the container (type1: /dev/vfio/vfio with its groups;
// iommufd: /dev/iommu with its IOAS) and its one IOVA space, and each device's descriptor. Reference-counted, so that the last handle to go closes
// them, in the right order, whatever order the caller destroys its objects in.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <vector>

#include "pcie/dma_backend.h"
#include "pcie/iova.h"
#include "pcie/sys/unique_fd.h"
#include "pcie/vfio.h"
#include "src/vfio/iommu_mode.h"

namespace pcie::detail {

struct VfioContainerState {
  struct Group {
    int number = -1;
    UniqueFd fd;
  };
  VfioPaths paths;
  // What the user asked for, and what is in use (type1 or iommufd); an automatic choice of
  // iommufd may turn to type1 until a device is open (`backend_fixed`).
  VfioIommuBackend requested = VfioIommuBackend::automatic;
  VfioBackendChoice choice;
  bool backend_fixed = false;
  // How devices are attached and opened, and whose DMA backend they use: type1, iommufd, or
  // none for a container opened without an IOMMU (its buffers have physical addresses,
  // which the user acknowledged). Never null in a container that was opened.
  std::unique_ptr<IommuMode> mode;
  UniqueFd fd;  // /dev/vfio/vfio or /dev/iommu; declared before `groups`, so closed after them
  std::uint32_t ioas = 0;  // iommufd: the IOAS every device is attached to
  // Guards everything below: groups attached by open_device, and the IOVA space shared by
  // every DmaAllocator of the container (two allocators with spaces of their own would
  // hand out the same addresses).
  mutable std::mutex mutex;
  std::vector<Group> groups;      // type1: attached to the container
  std::set<int> device_groups;   // iommufd: the groups of the devices open (for reports)
  std::vector<IovaRange> iova_ranges;
  std::uint64_t iova_alignment = 1;  // iommufd: what the IOAS asks of a mapping's IOVA
  std::optional<IovaAllocator> iovas;  // made when the first group sets the IOMMU model
  std::uint64_t mapped_bytes = 0;      // mapped into the IOMMU through this container
  // Devices open through this container: a second open of one would reset it and turn
  // its bus mastering off under the first owner.
  std::set<Bdf> open_devices;
};

struct VfioDeviceState {
  VfioDeviceState() = default;
  VfioDeviceState(const VfioDeviceState&) = delete;
  VfioDeviceState& operator=(const VfioDeviceState&) = delete;
  // Closes the device, then lets the container open it again.
  ~VfioDeviceState() {
    fd = UniqueFd();
    if (container && registered) {
      std::lock_guard lock(container->mutex);
      container->open_devices.erase(bdf);
    }
  }
  std::shared_ptr<VfioContainerState> container;  // declared first: released last
  bool registered = false;  // in container->open_devices
  Bdf bdf;
  int group = -1;
  UniqueFd fd;  // the device: from VFIO_GROUP_GET_DEVICE_FD, or its cdev (iommufd)
  std::uint32_t iommufd_device_id = 0;  // iommufd: what VFIO_DEVICE_BIND_IOMMUFD answered
  // Guards read-modify-writes of the command register and the IRQ indexes in use.
  std::mutex mutex;
  unsigned irq_indexes_in_use = 0;  // bit n: VFIO IRQ index n is enabled by a VfioInterrupts
  // VfioDevice::reset() calls so far: a peer window through iommufd is revoked by each.
  std::atomic<std::uint64_t> resets{0};
};

// The error of a call on an empty VfioDevice (default-constructed or moved from).
Error empty_device_error(std::string operation);

}  // namespace pcie::detail
