// pciectl's commands that hold a BAR mapping (bench, dump, read, write) survive the
// device's removal (hot unplug, surprise removal) and end with device_removed (exit code 6)
// instead of measuring or printing whatever a stale mapping now reaches.
//
// While the command runs: the library's removal guard (pcie/removal.h: a SIGBUS on a
// mapping the kernel zapped reads all ones instead of killing pciectl) and a watcher of the
// device's uevents that revokes its mappings the moment the kernel removes it, so that no
// later access of the command reaches the device, or another one hot-added at its bus
// address. check() also looks for the device's sysfs node, so a removal whose uevent was
// lost, or a watch that could not start, is still seen between accesses.
#pragma once

#include <atomic>
#include <memory>
#include <string>
#include <string_view>

#include "pcie/bdf.h"
#include "pcie/error.h"
#include "pcie/removal.h"
#include "pcie/sysfs_paths.h"

namespace pciectl {

class RemovalWatch {
 public:
  // How long the command holds the mapping: a command of many accesses (bench, dump) gets
  // the watcher thread, which revokes the mappings the moment the device goes; one of a
  // single access (read, write) only the guard and check()'s look, before and after it: a
  // thread and a netlink socket would cost more than the access, and could not come
  // between the open and the access any sooner than the look after it.
  enum class Span { many_accesses, single_access };

  // Installs the guard and, for many accesses, starts the watcher for `bdf`. A guard or
  // watcher that cannot start (no netlink socket in a container, a descriptor limit) is
  // reported on stderr once (not with --json), and the watch goes on with check()'s sysfs
  // look; never fails.
  static RemovalWatch start(const pcie::SysfsPaths& paths, const pcie::Bdf& bdf, Span span = Span::many_accesses);


  RemovalWatch(RemovalWatch&&) noexcept = default;
  RemovalWatch& operator=(RemovalWatch&&) noexcept = default;

  // device_removed (operation `operation`, the BDF, a hint to look at the device and run
  // the command again) once the watcher has fired or the device's sysfs node is gone; then
  // the device's mappings are revoked first. Otherwise success.
  pcie::Result<void> check(std::string_view operation) const;

 private:
  RemovalWatch(pcie::Bdf bdf, std::string node) : bdf_(bdf), node_(std::move(node)) {}

  pcie::Bdf bdf_;
  std::string node_;  // <pci_root>/devices/<bdf>
  std::shared_ptr<std::atomic<bool>> fired_ = std::make_shared<std::atomic<bool>>(false);
  pcie::RemovalWatcher watcher_;  // last: stopped before the flag it sets goes
};

}  // namespace pciectl
