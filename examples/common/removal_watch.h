// What every example program does about its device's removal (hot unplug, surprise
// removal, VFIO's request to give the device back), as pciectl does: the run ends with the
// device_removed error and exit status 6, never with a crash (SIGBUS on a zapped mapping),
// a hang on an unplug that waits for the program, or results computed from what a stale
// mapping now reads.
#pragma once

#include <atomic>
#include <memory>

#include "pcie/device.h"
#include "pcie/error.h"
#include "pcie/removal.h"

namespace examples {

// The exit status of a run that ended because the device went away (pciectl's too).
inline constexpr int kExitDeviceRemoved = 6;

// kExitDeviceRemoved for a device_removed error, 1 for any other. Never fails.
int exit_status_for(const pcie::Error& error);

// Watches one opened device while the program runs: the library's removal guard (a fault
// on a zapped mapping reads all ones), and a RemovalWatcher (uevents; VFIO's request IRQ)
// whose signal revokes the device's mappings at once. The drivers' next register access
// then reads all ones, which each of them reports as device_removed; and a VFIO unplug,
// which waits for the program to let go of the device, completes once that error ends the
// run. Destroy it before the device.
class DeviceRemovalWatch {
 public:
  // Installs the removal guard and starts watching `device`: its uevents, and VFIO's
  // request IRQ where that can be had (the driver may hold it itself: edu's waits end on
  // it). Never fails: a watch that cannot start (no netlink socket in a container) is said
  // on standard error, and the run goes on with the guard and the drivers' all-ones checks.
  static DeviceRemovalWatch start(const pcie::Device& device, const char* program);

  // Whether the device was removed or asked back (the watcher has fired).
  bool fired() const { return fired_->load(); }

  // The run's exit status given how it ended (`status`): kExitDeviceRemoved, after saying
  // on standard error that `device` went away during the run, whenever the watcher fired,
  // whatever the run's own status (a driver cut off mid-run may have failed with a timeout
  // or a bogus status rather than device_removed, or ended well with what a revoked mapping
  // read); `status` otherwise. Never fails.
  int final_status(int status, const char* program, const pcie::Device& device) const;

 private:
  DeviceRemovalWatch() = default;
  std::shared_ptr<std::atomic<bool>> fired_ = std::make_shared<std::atomic<bool>>(false);
  pcie::RemovalWatcher watcher_;  // last: stopped before the flag it sets goes
};

}  // namespace examples
