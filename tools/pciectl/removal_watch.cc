#include "tools/pciectl/removal_watch.h"

#include <fmt/format.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <utility>

#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

// The node's absence, as only a removal leaves it: ENOENT (or ENOTDIR), not a stat that
// failed for another reason (EACCES, ENOMEM), which says nothing about the device.
bool node_gone(const std::string& node) {
  struct stat status {};
  if (::stat(node.c_str(), &status) == 0) return false;
  return errno == ENOENT || errno == ENOTDIR;
}

}  // namespace

RemovalWatch RemovalWatch::start(const pcie::SysfsPaths& paths, const pcie::Bdf& bdf, Span span) {
  RemovalWatch watch(bdf, paths.device_dir(bdf));
  if (span == Span::single_access) {
    if (auto guard = pcie::install_removal_guard(); !guard && !json_errors()) {
      fmt::print(stderr, "pciectl: {}: no removal guard ({}); checking its sysfs node after the access\n",
                 bdf.to_string(), pcie::printable(guard.error().message()));
    }
    return watch;
  }
  pcie::RemovalWatchOptions options;
  options.sysfs_devices = paths.pci_root + "/devices";
  options.request_irq = false;  // a uevent watch: the command's mapping may be sysfs, VFIO or UIO
  auto watcher = pcie::RemovalWatcher::start(
      bdf, [fired = watch.fired_](const pcie::RemovalNotice&) { fired->store(true); }, options);
  if (watcher) {
    watch.watcher_ = std::move(*watcher);
  } else if (!json_errors()) {
    fmt::print(stderr, "pciectl: {}: not watching for its removal ({}); checking its sysfs node between accesses\n",
               bdf.to_string(), pcie::printable(watcher.error().message()));
  }
  return watch;
}

pcie::Result<void> RemovalWatch::check(std::string_view operation) const {
  if (!fired_->load() && !node_gone(node_)) return {};
  (void)pcie::revoke_device_mappings(bdf_);  // the watcher's own revocation, where it did not run
  return std::unexpected(pcie::make_error(pcie::Errc::device_removed, std::string(operation), bdf_.to_string(),
                                          "the device was removed while the command ran (its mappings are revoked: "
                                          "no later access reaches a device)",
                                          "check that it is back (pciectl ls) and run the command again"));
}

}  // namespace pciectl
