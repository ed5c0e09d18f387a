// Surviving the removal of a device: hot unplug, surprise removal, or its memory decoding
// turned off under the driver.
//
// Three pieces, each opt-in:
//  - Errors: an I/O on a descriptor of a removed device (config space, a VFIO ioctl) fails
//    with Errc::device_removed, as does a register poll that reads all ones where the
//    driver asked for it (WaitOptions::all_ones_means_removed).
//  - The guard (install_removal_guard): every BAR mapping the library makes (sysfs, VFIO,
//    UIO) is registered with it. When an access to one faults with SIGBUS because the
//    device is gone (the kernel zapped the mapping: a removed sysfs resource file, a VFIO
//    device whose memory decoding is off), the handler replaces the whole mapping by memory
//    that reads all ones and the access is retried, in the manner of DPDK's hot-plug
//    SIGBUS handler: the process lives, the access reads 0xff..., and the next checked
//    access through the region (Region::read/write, MmioView::checked_read) reports
//    device_removed. Faults anywhere else go to the handler that was installed before
//    (or the default action: the process dies as it would have).
//  - The watcher (RemovalWatcher): a thread that calls the driver back when the kernel
//    asks for the device (VFIO's request IRQ: an unplug waits until the driver releases
//    the device) or removes it (a "remove" uevent for its sysfs node), and on removal
//    revokes the device's mappings at once, so that a new device hot-added in the same
//    slot, at the same bus address, can never be reached through the old process's
//    mapping.
//
// After a revocation, reads of the old mapping return all ones until this process writes
// there (writes land in private memory and reach no device). Release the device's objects
// and open it again when a device is back.
#pragma once

#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "pcie/bdf.h"
#include "pcie/error.h"

namespace pcie {

class Device;

// Installs the guard's SIGBUS handler (and a SIGSEGV handler that acts only on revoked
// mappings), once per process; later calls return at once. Keeps one 2 MiB memfd of all
// ones open for the life of the process. io_error when the memfd or sigaction fails.
Result<void> install_removal_guard();
// Whether install_removal_guard() has succeeded in this process (directly, or through
// revoke_device_mappings() or a RemovalWatcher).
bool removal_guard_installed() noexcept;

// Whether `address` lies in a device mapping that the guard replaced.
bool mapping_revoked(const void* address) noexcept;

// Replaces every guarded mapping of `device` in this process by all-ones memory now, and
// returns how many there were: what the watcher does on a removal, for a driver that
// learned of one another way (a link-down AER event, its own all-ones reads). Installs
// the guard first (its errors).
Result<std::size_t> revoke_device_mappings(const Bdf& device);

// What told the watcher that its device is going or gone.
enum class RemovalSignal {
  request_irq,  // VFIO's request IRQ: the kernel wants the device back (unplug, unbind)
  removed,      // the device's sysfs node went away (a "remove" uevent)
};

// "request IRQ" or "removed".
const char* to_string(RemovalSignal signal);

// What a RemovalWatcher's callback is told.
struct RemovalNotice {
  Bdf device;                                     // the device watched
  RemovalSignal signal = RemovalSignal::removed;  // the first signal seen
  std::size_t mappings_revoked = 0;  // by the watcher before the callback ran
};

// How RemovalWatcher::start watches a device.
struct RemovalWatchOptions {
  // On a removal, revoke_device_mappings() before the callback (installs the guard).
  bool revoke_mappings = true;
  // For a VFIO device: enable its request IRQ and report it (RemovalSignal::request_irq).
  bool request_irq = true;
  // Where the devices' sysfs nodes are: a node missing when the watch starts, or after the
  // kernel dropped uevents, counts as removed.
  std::string sysfs_devices = "/sys/bus/pci/devices";
};

// A thread that watches one device and calls `on_removal` once, on that thread, with the
// first signal. Move-only; an empty one (default-constructed) watches nothing. Destroy it
// before the device (it holds the device's request IRQ, which keeps a VFIO device open);
// destroying it stops and joins the thread (from the callback itself, it detaches). Besides
// the uevents, it looks at the device's sysfs node after each second without one, so that
// a removal is seen within about a second where uevents never arrive (a network namespace
// owned by a user namespace other than the initial one, as in rootless containers: the
// kernel broadcasts uevents only to network namespaces the initial user namespace owns,
// since Linux 4.18). Should poll(2) fail in the thread (ENOMEM, a descriptor limit
// lowered under it), the watch goes on by checking the request IRQ's count and the sysfs
// node every 100 ms.
class RemovalWatcher {
 public:
  // What the watcher calls, once, on its own thread (so beside the driver's threads). It
  // may destroy the watcher: the thread then detaches and ends when the callback returns.
  using Callback = std::function<void(const RemovalNotice&)>;

  // An empty watcher: watches nothing, active() false.
  RemovalWatcher() = default;
  // Move-only: the watch (its thread and callback) goes to the new object; the moved-from
  // watcher is empty.
  RemovalWatcher(RemovalWatcher&&) noexcept;
  // Stops this watcher's watch (as the destructor does), then takes `other`'s; `other` is
  // left empty.
  RemovalWatcher& operator=(RemovalWatcher&&) noexcept;
  ~RemovalWatcher();

  // Watches a device opened through any backend: its request IRQ where the backend has
  // one (VFIO), and its uevents. invalid_argument for an empty callback; the errors of
  // enabling the request IRQ (busy when enabled elsewhere), of the uevent socket, of
  // install_removal_guard().
  static Result<RemovalWatcher> start(const Device& device, Callback on_removal, RemovalWatchOptions options = {});
  // Watches `device`'s uevents only: for a BAR mapped through sysfs (BarMapping).
  static Result<RemovalWatcher> start(const Bdf& device, Callback on_removal, RemovalWatchOptions options = {});

  // Whether this object holds a watch (made by start(); false when default-constructed or
  // moved from). It stays true after the callback has been called.
  bool active() const noexcept { return state_ != nullptr; }
  // Whether the callback has been called (it may still be running).
  bool fired() const noexcept;

 private:
  struct State;
  static Result<RemovalWatcher> launch(std::shared_ptr<State> state);
  std::shared_ptr<State> state_;
};

namespace detail {
// Whether a kernel uevent (NUL-separated "KEY=value" fields after a "action@devpath" header)
// announces the removal of PCI device `device`. Bounded by `message`; hostile input safe.
bool uevent_removes(std::string_view message, const Bdf& device);
}  // namespace detail

}  // namespace pcie
