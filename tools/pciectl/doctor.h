// pciectl doctor [BDF]: everything that makes a first userspace-driver run fail, checked at
// once, each with its fix (the coverage of dpdk-devbind.py --status and SPDK's setup.sh
// status, and more): the IOMMU and its mode, VFIO/UIO/iommufd, /dev/vfio permissions,
// RLIMIT_MEMLOCK, huge pages per size and NUMA node, lockdown and Secure Boot, PAT,
// /dev/mem restrictions; for a device its driver (and whether the host uses it), its IOMMU
// group's viability and access, and who owns its BARs. Only reads. Exit 0 when the device
// (or, without one, VFIO) is ready for a userspace driver and no check failed; 1 when it is
// not ready or any check reports "fail" (a device on uio_pci_generic without an IOMMU is
// ready, and still exits 1 for the failed IOMMU check); 2 for a bad BDF.
#pragma once

#include <string>

#include "pcie/sysfs_paths.h"

namespace pciectl {

struct DoctorOptions {
  std::string bdf;                // empty: the machine only
  pcie::SysfsPaths paths;         // every sysfs and procfs file: SysfsPaths::under(sysfs, proc)
  std::string sysfs = "/sys";
  std::string proc = "/proc";
  std::string dev_vfio = "/dev/vfio";
  std::string dev_root = "/dev";  // for /dev/iommu
  std::string boot_dir = "/boot";
  bool json = false;
};

int run_doctor(const DoctorOptions& options);

}  // namespace pciectl
