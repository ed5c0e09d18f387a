#include "pcie/sysfs_paths.h"

namespace pcie {

std::string SysfsPaths::device_dir(const Bdf& bdf) const {
  return pci_root + "/devices/" + bdf.to_string();
}

SysfsPaths SysfsPaths::under(const std::string& sys, const std::string& proc) {
  SysfsPaths paths;
  paths.pci_root = sys + "/bus/pci";
  paths.lockdown_file = sys + "/kernel/security/lockdown";
  paths.class_block = sys + "/class/block";
  paths.class_net = sys + "/class/net";
  paths.mountinfo_file = proc + "/self/mountinfo";
  paths.swaps_file = proc + "/swaps";
  paths.pat_memtype_list = sys + "/kernel/debug/x86/pat_memtype_list";
  paths.kernel_cmdline = proc + "/cmdline";
  paths.kernel_release_file = proc + "/sys/kernel/osrelease";
  paths.iomem_file = proc + "/iomem";
  return paths;
}

}  // namespace pcie
