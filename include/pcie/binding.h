// Which kernel driver owns a device: bind one (vfio-pci, uio_pci_generic, ...) through
// driver_override, unbind, and give the device back to the driver the kernel would pick
// (Documentation/ABI/testing/sysfs-bus-pci).
//
// The guard: unbinding the driver of a device this machine uses is refused unless forced.
// "Uses" means any network interface below the device that is up, and any disk or
// partition below it (at any depth: NVMe, SATA, SAS HBAs, USB behind xHCI) that is
// mounted, used as swap, or held by another block device (LVM, dm-crypt, md RAID),
// followed down the holder chain to its mounts and swap. The guard fails closed: anything
// it cannot read (a listing that fails, EMFILE, a link it cannot resolve, a mount table
// it cannot parse) is an error or a use, never "free".
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// How unbind_driver(), bind_driver() and restore_driver() treat a device the host uses.
struct BindOptions {
  bool force = false;  // skip the guard: unbind even a device this machine uses
};

// Why the host is using the device: "network interface eth0 is up", "nvme0n1p2 is mounted
// on /", "nvme0n1p2 is held by dm-0 (vg-root)", "dm-0 (vg-root) is mounted on /",
// "nvme0n1p3 is used as swap", or a part it could not read. Empty only when every check
// ran and found nothing. Errors: not_found (no such device), or the error of a check that
// could not run (listing /sys/class/block, reading the mount table or the swap list).
Result<std::vector<std::string>> host_uses_of(const SysfsPaths& paths, const Bdf& bdf);

// The bound driver, or nullopt when none is. An error when the driver link exists but
// cannot be read (not "no driver": acting on that would unbind nothing and report success).
Result<std::optional<std::string>> bound_driver(const SysfsPaths& paths, const Bdf& bdf);

// Unbinds the current driver (a no-op without one). Fails with busy, listing the uses,
// when host_uses_of() finds any, and with its error when it cannot tell, unless
// options.force is set; with the error of bound_driver() when the driver is unknown.
Result<void> unbind_driver(const SysfsPaths& paths, const Bdf& bdf, const BindOptions& options = {});

// Binds `driver`: unbinds the current one (as unbind_driver), sets driver_override so that
// only `driver` may take the device, and asks the kernel to probe it. Fails when the driver
// did not take it (not loaded, or its probe refused the device), saying which driver has it.
Result<void> bind_driver(const SysfsPaths& paths, const Bdf& bdf, std::string_view driver,
                         const BindOptions& options = {});

// Clears driver_override, unbinds, and lets the kernel pick the device's own driver again.
// Returns the driver that took it (nullopt when none did).
Result<std::optional<std::string>> restore_driver(const SysfsPaths& paths, const Bdf& bdf,
                                                  const BindOptions& options = {});

}  // namespace pcie
