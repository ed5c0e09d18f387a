#include "pcie/sysfs_paths.h"

namespace pcie {

std::string SysfsPaths::device_dir(const Bdf& bdf) const {
  return pci_root + "/devices/" + bdf.to_string();
}

}  // namespace pcie
