#include "tools/pciectl/global_options.h"

#include <cstdlib>
#include <filesystem>

namespace pciectl {

GlobalOptions global_options_from_environment() {
  GlobalOptions global;
  if (const char* sysfs = std::getenv("PCIE_SYSFS")) global.sysfs = sysfs;
  if (const char* proc = std::getenv("PCIE_PROC")) global.proc = proc;
  if (const char* dev_vfio = std::getenv("PCIE_DEV_VFIO")) global.dev_vfio = dev_vfio;
  return global;
}

pcie::SysfsPaths paths_of(const GlobalOptions& global) {
  pcie::SysfsPaths paths;
  paths.pci_root = global.sysfs + "/bus/pci";
  paths.lockdown_file = global.sysfs + "/kernel/security/lockdown";
  paths.class_block = global.sysfs + "/class/block";
  paths.class_net = global.sysfs + "/class/net";
  paths.mountinfo_file = global.proc + "/self/mountinfo";
  paths.swaps_file = global.proc + "/swaps";
  paths.pat_memtype_list = global.sysfs + "/kernel/debug/x86/pat_memtype_list";
  paths.kernel_cmdline = global.proc + "/cmdline";
  paths.iomem_file = global.proc + "/iomem";
  return paths;
}

pcie::VfioPaths vfio_paths_of(const GlobalOptions& global) {
  pcie::VfioPaths paths;
  paths.sysfs = paths_of(global);
  paths.dev_vfio = global.dev_vfio;
  paths.iommu_groups = global.sysfs + "/kernel/iommu_groups";
  paths.vfio_dev_class = global.sysfs + "/class/vfio-dev";
  // iommufd's node beside VFIO's: /dev/iommu, or <dir>/dev/iommu for a fake tree.
  paths.dev_iommu = std::filesystem::path(global.dev_vfio).parent_path().string() + "/iommu";
  return paths;
}

pcie::DiscoveryOptions discovery_options(const GlobalOptions& global) {
  pcie::DiscoveryOptions options;
  options.paths = paths_of(global);
  options.pci_ids_path = global.pci_ids;
  return options;
}

}  // namespace pciectl
