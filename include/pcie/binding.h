// Which kernel driver owns a device: bind one (vfio-pci, uio_pci_generic, ...) through
// driver_override, unbind, and give the device back to the driver the kernel would pick
// (Documentation/ABI/testing/sysfs-bus-pci). Unbinding the driver of a disk with mounted
// file systems or of an up network interface is refused unless forced: those devices are
// the machine's own.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

struct BindOptions {
  bool force = false;  // unbind even if the device backs a mounted file system or an up interface
};

// Why the host is using the device: "network interface eth0 is up", "nvme0n1p2 is mounted
// on /", "nvme0n1 is held by dm-0". Empty when nothing is known to use it.
Result<std::vector<std::string>> host_uses_of(const SysfsPaths& paths, const Bdf& bdf);

// The bound driver, or nullopt.
std::optional<std::string> bound_driver(const SysfsPaths& paths, const Bdf& bdf);

// Unbinds the current driver (a no-op without one). Fails with busy, listing the uses,
// when host_uses_of() finds any and options.force is not set.
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
