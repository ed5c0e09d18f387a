// SR-IOV virtual functions through the kernel's sysfs interface
// (Documentation/PCI/pci-iov-howto.rst): how many a physical function has and may have,
// creating and removing them through sriov_numvfs, listing them, and binding them all to
// one driver (vfio-pci, for userspace drivers or guests) in one step.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/binding.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// One VF of a physical function, as its virtfnN link shows it.
struct VirtualFunction {
  unsigned index = 0;                 // virtfnN
  Bdf bdf;                            // the VF's own address
  std::optional<std::string> driver;  // nullopt: none bound
};

// A physical function's SR-IOV sysfs attributes and its VFs.
struct SriovState {
  Bdf physical_function;  // the PF the state is of
  unsigned total_vfs = 0;  // sriov_totalvfs: the most the device offers
  unsigned num_vfs = 0;    // sriov_numvfs: enabled now
  std::optional<bool> drivers_autoprobe;  // sriov_drivers_autoprobe, where the kernel has it
  std::vector<VirtualFunction> vfs;  // the VFs the virtfnN links name, in index order
};

// The PF's SR-IOV state and its VFs. Errors: not_found (no such device), not_supported
// (the device is not an SR-IOV physical function: no sriov_totalvfs; a VF says so and names
// its PF), malformed (attributes that do not parse).
Result<SriovState> sriov_state(const SysfsPaths& paths, const Bdf& pf);

// How set_vf_count() changes the count and what it does with the new VFs.
struct SetVfCountOptions {
  // Whether host drivers probe the new VFs (sriov_drivers_autoprobe); nullopt leaves the
  // setting alone. Off when the VFs go to vfio-pci, so no host driver grabs them first.
  std::optional<bool> drivers_autoprobe;
  // Bind every VF to this driver afterwards (e.g. "vfio-pci"); empty: leave them.
  std::string bind_driver;
  // Change the count even while VFs are bound to drivers (the kernel unbinds them, and a
  // VF that vfio-pci holds open makes the write wait for its user).
  bool force = false;
  // How long to wait for the new VFs to appear in sysfs.
  std::chrono::milliseconds settle = std::chrono::seconds(5);
};

// Sets the number of enabled VFs to `count` (0 removes them). From one non-zero count to
// another the kernel needs 0 in between, which this does. Refuses (busy, naming each VF
// and its driver) to remove VFs that are bound to a driver, unless options.force: a VF in
// use by a guest or a userspace driver disappears under it. Errors: out_of_range (count
// above total_vfs), permission_denied (not root), busy (VFs in use, or the PF's driver
// refuses now), not_supported (the PF's driver cannot enable VFs: no sriov_configure),
// io_error (the kernel's other refusals, with its errno), and bind errors. Returns the new
// state.
Result<SriovState> set_vf_count(const SysfsPaths& paths, const Bdf& pf, unsigned count,
                                const SetVfCountOptions& options = {});

}  // namespace pcie
