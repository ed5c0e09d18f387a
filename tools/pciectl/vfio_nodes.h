// pciectl info's VFIO lines for a device on vfio-pci: the nodes a program opens to reach it
// (its group node for type1, its cdev for iommufd) and the IOMMU backend a container would
// take for it, with the reason.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "pcie/discovery.h"
#include "pcie/vfio.h"

namespace pciectl {

struct VfioNodes {
  std::string group_node;  // "/dev/vfio/5 (yours)", or what is wrong with it
  std::string cdev;        // "/dev/vfio/devices/vfio0 (root's: 0:0 600)", or "none: <why>"
  std::string backend;     // "type1", "iommufd", or "unknown"
  std::string reason;      // why that backend (VfioBackendChoice::reason), or the error
};

// Nullopt for a device not bound to vfio-pci (VFIO cannot reach it). Never fails: what
// cannot be read is said in the fields.
std::optional<VfioNodes> read_vfio_nodes(const pcie::VfioPaths& paths, const pcie::DeviceInfo& device);

nlohmann::ordered_json to_json(const VfioNodes& nodes);

}  // namespace pciectl
