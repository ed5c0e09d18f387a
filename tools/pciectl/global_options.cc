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

pcie::SysfsPaths paths_of(const GlobalOptions& global) { return pcie::SysfsPaths::under(global.sysfs, global.proc); }

pcie::VfioPaths vfio_paths_of(const GlobalOptions& global) {
  // iommufd's node beside VFIO's: /dev/iommu, or <dir>/dev/iommu for a fake tree.
  pcie::VfioPaths paths =
      pcie::VfioPaths::under(global.sysfs, global.proc, std::filesystem::path(global.dev_vfio).parent_path().string());
  paths.dev_vfio = global.dev_vfio;
  return paths;
}

pcie::DiscoveryOptions discovery_options(const GlobalOptions& global) {
  pcie::DiscoveryOptions options;
  options.paths = paths_of(global);
  options.pci_ids_path = global.pci_ids;
  return options;
}

}  // namespace pciectl
