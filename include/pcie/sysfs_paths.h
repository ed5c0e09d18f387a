// Where the library looks for sysfs. Every path is configurable so tests (and users'
// driver tests) can point the library at a fake tree; see pcie/testing/fake_sysfs.h.
#pragma once

#include <string>

#include "pcie/bdf.h"

namespace pcie {

struct SysfsPaths {
  // The PCI bus directory; libpci's `sysfs.path` parameter. Devices live in
  // <pci_root>/devices/<bdf>/.
  std::string pci_root = "/sys/bus/pci";
  // The kernel lockdown state file, read to explain refused mappings.
  std::string lockdown_file = "/sys/kernel/security/lockdown";
  // The mount table, read before unbinding a driver (a disk with mounted file systems).
  std::string mounts_file = "/proc/self/mounts";

  // <pci_root>/devices/<bdf>
  std::string device_dir(const Bdf& bdf) const;
};

}  // namespace pcie
