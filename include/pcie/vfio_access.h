// Handing a device to a normal user for a userspace driver, and giving it back, as OPAE's
// `opae.io init` / `release` do: bind the device to vfio-pci, give the user its VFIO group
// node (/dev/vfio/N), and remember what was there before, so that release() restores
// exactly that (the previous driver, the node's owner and mode), not whatever driver the
// kernel would pick. Needs root. The record lives in a small file per device under
// `state_dir` (default /run/pcie/vfio-grants, gone at reboot like the binding itself).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/binding.h"
#include "pcie/error.h"
#include "pcie/vfio.h"

namespace pcie {

// Where the grant functions find sysfs and /dev/vfio, where they keep their records, and
// how they bind.
struct VfioGrantOptions {
  VfioPaths paths;  // sysfs and /dev/vfio; tests point them at fake trees
  std::string state_dir = "/run/pcie/vfio-grants";  // one record file per granted device
  BindOptions bind;  // force: take the device from a driver this machine uses
};

// One device handed to a user: what grant_vfio_access() did, as its record keeps it.
struct VfioGrant {
  Bdf bdf;  // the device granted
  std::optional<std::string> previous_driver;  // nullopt: none was bound
  int group = -1;  // its IOMMU group number, the N of /dev/vfio/N
  std::string group_node;                       // /dev/vfio/N, now owned by the user
  unsigned uid = 0;  // the user the node was given to
  unsigned gid = 0;  // the group the node was given to
  // Other devices of the group that keep it from being viable (bound to a host driver):
  // the user's open of the device fails until they are bound to vfio-pci or unbound.
  std::vector<VfioGroupMember> spoilers;
};

// Binds `bdf` to vfio-pci (unless it already is), waits (up to 2 s) for its group node, makes
// `uid`:`gid` its owner with mode 0600 and records the previous driver and the node's
// previous ownership. Errors: those of bind_driver (busy when this machine uses the
// device), not_supported when the device has no IOMMU group (IOMMU off: no-IOMMU mode is
// not granted to users), busy when a grant is already recorded (release it first),
// permission_denied when not root. A failure after binding rebinds the previous driver.
Result<VfioGrant> grant_vfio_access(const Bdf& bdf, unsigned uid, unsigned gid, const VfioGrantOptions& options = {});

// Undoes grant_vfio_access: gives the group node back its recorded owner and mode (root's
// 0600 when no other granted device shares the group), unbinds vfio-pci, clears
// driver_override and binds the recorded previous driver (none: left unbound), then drops
// the record. Returns the driver now bound. Errors: not_found when no grant is recorded
// (pciectl bind --restore undoes a plain bind), and the binding errors. While the user
// still has the device open, unbinding vfio-pci waits: the kernel asks the user to let go
// through the device's request IRQ (a driver should watch it) and blocks until it does.
Result<std::optional<std::string>> release_vfio_access(const Bdf& bdf, const VfioGrantOptions& options = {});

// The recorded grant of `bdf`, if any (read-only; no root needed to read a world-readable
// record). Errors: malformed for a record this library did not write.
Result<std::optional<VfioGrant>> recorded_vfio_grant(const Bdf& bdf, const VfioGrantOptions& options = {});

}  // namespace pcie
