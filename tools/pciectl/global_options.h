// pciectl's global options (--sysfs, --proc, --pci-ids, --dev-vfio) and the library paths
// every command derives from them.
#pragma once

#include <string>

#include "pcie/discovery.h"
#include "pcie/vfio.h"

namespace pciectl {

struct GlobalOptions {
  std::string sysfs = "/sys";  // the sysfs mount; a fake tree's <dir>/sys in tests
  std::string proc = "/proc";  // the proc mount (mount table, swaps); a fake tree's <dir>/proc
  std::string pci_ids;
  std::string dev_vfio = "/dev/vfio";  // VFIO's nodes; a fake tree's <dir>/dev/vfio in tests
};

// The defaults, with $PCIE_SYSFS, $PCIE_PROC and $PCIE_DEV_VFIO applied where set.
GlobalOptions global_options_from_environment();

// The sysfs and proc files the library reads, below the global mounts.
pcie::SysfsPaths paths_of(const GlobalOptions& global);
// paths_of() plus VFIO's nodes and classes (and iommufd's /dev/iommu beside /dev/vfio).
pcie::VfioPaths vfio_paths_of(const GlobalOptions& global);
// Discovery over paths_of() with --pci-ids; the caller adds filters and what to read.
pcie::DiscoveryOptions discovery_options(const GlobalOptions& global);

}  // namespace pciectl
