// One opener for a BAR by BDF that takes whichever path works: the sysfs resource file
// (root, no driver owning the BAR) or VFIO (the device bound to vfio-pci, the caller able
// to open its group: root, or a user given /dev/vfio/N, e.g. by `pciectl vfio grant`).
// The Region it returns is the same interface either way, and keeps what it needs open
// (for VFIO its device and container), so it outlives nothing it depends on.
//
// What it never does: bind or unbind a driver, reset the device (VFIO opens with
// reset_on_open off, unlike VfioContainer::open_device's default, so a peek does not
// disturb the device's state), or enable bus mastering.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/region.h"
#include "pcie/vfio.h"

namespace pcie {

// The way a BAR was opened.
enum class BarPath {
  sysfs,  // /sys/bus/pci/devices/<bdf>/resourceN (uncached; I/O BARs through pread/pwrite)
  vfio,   // the device's VFIO region (mapped where vfio-pci allows, else pread/pwrite)
};

// "sysfs" or "VFIO".
const char* to_string(BarPath path);

// Which ways open_bar() may try.
enum class BarPathPreference {
  // For a device bound to vfio-pci, VFIO first (a normal user given the group can use
  // it; while the device is open its BARs are claimed and the sysfs path refused), then
  // sysfs; for any other device sysfs only (VFIO cannot open it).
  automatic,
  sysfs_only,  // the sysfs resource file only
  vfio_only,   // VFIO only (the device must be bound to vfio-pci)
};

// How open_bar() opens a BAR.
struct BarOpenOptions {
  BarPathPreference preference = BarPathPreference::automatic;  // which ways to try
  bool writable = false;          // false opens (and maps) read-only where the path allows
  bool enable_decoding = false;   // sysfs: enable Memory/I/O Space decoding first (root)
  VfioPaths paths;                // sysfs paths and /dev/vfio; tests point them at fake trees
};

// What open_bar() opened, and how.
struct OpenedBar {
  std::unique_ptr<Region> region;  // the BAR; keeps what it needs open
  BarPath path = BarPath::sysfs;   // the way that worked
  // Why each path tried before the one that worked failed ("sysfs: permission denied ...").
  std::vector<std::string> refused;
};

// Opens BAR `bar` (0-5) of `bdf`. On success says which path was used and why others
// failed. When every path fails, the error is the most telling one (a failure that is not
// simply "this path does not apply" wins: a permission or ownership problem over "not
// bound to vfio-pci"), with the other paths' reasons in its text, so the user sees what
// to fix for either; invalid_argument for a BAR index past 5.
Result<OpenedBar> open_bar(const Bdf& bdf, unsigned bar, const BarOpenOptions& options = {});

}  // namespace pcie
