#include "tools/pciectl/vfio_nodes.h"

#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

namespace pciectl {
namespace {

// "(yours)", or the owner and mode that keep this user out.
std::string node_access(const std::string& path) {
  struct stat status {};
  if (::stat(path.c_str(), &status) != 0) return "(missing)";
  if (::access(path.c_str(), R_OK | W_OK) == 0) return "(yours)";
  return fmt::format("(not yours: {}:{} {:o})", status.st_uid, status.st_gid, status.st_mode & 0777);
}

}  // namespace

std::optional<VfioNodes> read_vfio_nodes(const pcie::VfioPaths& paths, const pcie::DeviceInfo& device) {
  if (device.driver.value_or("") != "vfio-pci") return std::nullopt;
  VfioNodes nodes;
  if (!device.iommu_group) {
    nodes.group_node = "none: the device has no IOMMU group";
  } else {
    // No-IOMMU mode names the node noiommu-N (Documentation/driver-api/vfio.rst).
    std::string node = paths.dev_vfio + "/" + std::to_string(*device.iommu_group);
    const std::string noiommu = paths.dev_vfio + "/noiommu-" + std::to_string(*device.iommu_group);
    struct stat status {};
    if (::stat(node.c_str(), &status) != 0 && ::stat(noiommu.c_str(), &status) == 0) node = noiommu;
    nodes.group_node = node + " " + node_access(node);
  }
  if (auto cdev = pcie::vfio_device_cdev(device.bdf, paths)) {
    nodes.cdev = *cdev + " " + node_access(*cdev);
  } else {
    nodes.cdev = "none: " + pcie::printable(cdev.error().reason);
  }
  if (auto choice = pcie::choose_vfio_backend_for(device.bdf, paths)) {
    nodes.backend = std::string(pcie::to_string(choice->backend));
    nodes.reason = choice->reason;
  } else {
    nodes.backend = "unknown";
    nodes.reason = choice.error().message();
  }
  return nodes;
}

nlohmann::ordered_json to_json(const VfioNodes& nodes) {
  return {{"group_node", nodes.group_node},
          {"cdev", nodes.cdev},
          {"backend", nodes.backend},
          {"backend_reason", nodes.reason}};
}

}  // namespace pciectl
