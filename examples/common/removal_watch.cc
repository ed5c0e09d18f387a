#include "examples/common/removal_watch.h"

#include <cstdio>

namespace examples {

int exit_status_for(const pcie::Error& error) { return error.code == pcie::Errc::device_removed ? kExitDeviceRemoved : 1; }

DeviceRemovalWatch DeviceRemovalWatch::start(const pcie::Device& device, const char* program) {
  DeviceRemovalWatch watch;
  auto on_removal = [fired = watch.fired_, bdf = device.bdf()](const pcie::RemovalNotice& notice) {
    // The watcher revokes on a removal itself; VFIO's request IRQ comes while the device is
    // still there (the unplug waits for us): cut the driver off so that it stops and lets go.
    if (notice.signal == pcie::RemovalSignal::request_irq) (void)pcie::revoke_device_mappings(bdf);
    fired->store(true);
  };
  // The guard first, whether or not a watcher starts: a fault on a zapped mapping then reads
  // all ones instead of killing the program.
  if (auto guard = pcie::install_removal_guard(); !guard) {
    std::fprintf(stderr, "%s: no removal guard (%s)\n", program, guard.error().message().c_str());
  }
  auto watcher = pcie::RemovalWatcher::start(device, on_removal);
  if (!watcher) {
    // The request IRQ may be the driver's (busy: edu's waits end on it) or not to be had:
    // the uevents alone.
    watcher = pcie::RemovalWatcher::start(device, on_removal, {.request_irq = false});
  }
  if (watcher) {
    watch.watcher_ = std::move(*watcher);
  } else {
    std::fprintf(stderr, "%s: not watching %s for its removal (%s)\n", program, device.bdf().to_string().c_str(),
                 watcher.error().message().c_str());
  }
  return watch;
}

int DeviceRemovalWatch::final_status(int status, const char* program, const pcie::Device& device) const {
  if (!fired()) return status;
  std::fprintf(stderr, "%s: %s was removed or asked back during the run: nothing it printed is to be trusted\n",
               program, device.bdf().to_string().c_str());
  return kExitDeviceRemoved;
}

}  // namespace examples
