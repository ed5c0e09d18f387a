// Where VFIO's nodes and sysfs files lie below the mounts (pcie/vfio.h, VfioPaths::under).
#include "pcie/vfio.h"

namespace pcie {

VfioPaths VfioPaths::under(const std::string& sys, const std::string& proc, const std::string& dev) {
  VfioPaths paths;
  paths.sysfs = SysfsPaths::under(sys, proc);
  paths.dev_vfio = dev + "/vfio";
  paths.iommu_groups = sys + "/kernel/iommu_groups";
  paths.dev_iommu = dev + "/iommu";
  paths.vfio_dev_class = sys + "/class/vfio-dev";
  return paths;
}

}  // namespace pcie
