#include "pcie/binding.h"

#include <fmt/format.h>

#include <charconv>
#include <sstream>

#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

constexpr unsigned kInterfaceUp = 0x1;  // IFF_UP in <net/if.h>

// Whether the interface is up (IFF_UP in its flags), or nullopt when the flags cannot be read.
std::optional<bool> interface_is_up(const std::string& interface_dir) {
  auto flags = sys::read_text_file(interface_dir + "/flags", 64);
  if (!flags) return std::nullopt;
  std::string_view text = *flags;
  if (text.starts_with("0x")) text.remove_prefix(2);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.remove_suffix(1);
  unsigned value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value, 16);
  if (ec != std::errc() || end != text.data() + text.size()) return std::nullopt;
  return (value & kInterfaceUp) != 0;
}

// Block devices below the device's directory (…/nvme/nvme0/nvme0n1, …/host0/…/block/sda),
// with their partitions. The search is bounded in depth and in entries: sysfs is untrusted.
void find_block_devices(const std::string& dir, int depth, std::vector<std::string>& found, int& budget) {
  if (depth > 6 || budget <= 0) return;
  auto entries = sys::list_directory(dir);
  if (!entries) return;
  for (const std::string& name : *entries) {
    if (--budget <= 0) return;
    const std::string path = dir + "/" + name;
    if (sys::read_link(path)) continue;  // a link (driver, subsystem, ...) leads up or sideways
    if (sys::path_exists(path + "/dev") && sys::path_exists(path + "/size") && sys::path_exists(path + "/holders")) {
      found.push_back(name);  // a block device or a partition
    }
    find_block_devices(path, depth + 1, found, budget);
  }
}

std::string unbind_file(const SysfsPaths& paths, const Bdf& bdf) { return paths.device_dir(bdf) + "/driver/unbind"; }

}  // namespace

std::optional<std::string> bound_driver(const SysfsPaths& paths, const Bdf& bdf) {
  return sysfs::device_driver(paths, bdf);
}

Result<std::vector<std::string>> host_uses_of(const SysfsPaths& paths, const Bdf& bdf) {
  const std::string dir = paths.device_dir(bdf);
  if (!sys::path_exists(dir)) {
    return std::unexpected(make_error(Errc::not_found, "check host use of", bdf.to_string(), "no such device"));
  }
  std::vector<std::string> uses;
  if (auto interfaces = sys::list_directory(dir + "/net")) {
    for (const std::string& interface : *interfaces) {
      // Unknown counts as in use: refusing wrongly costs a --force, the opposite a machine.
      const auto up = interface_is_up(dir + "/net/" + interface);
      if (!up) {
        uses.push_back(fmt::format("network interface {} is in an unknown state", interface));
      } else if (*up) {
        uses.push_back(fmt::format("network interface {} is up", interface));
      }
    }
  }
  std::vector<std::string> block_devices;
  int budget = 4096;
  find_block_devices(dir, 0, block_devices, budget);
  if (block_devices.empty()) return uses;

  std::vector<std::pair<std::string, std::string>> mounts;  // device basename, mount point
  // The device has disks: without the mount table we cannot tell, so say so (fail closed).
  auto table = sys::read_text_file(paths.mounts_file, 16 << 20);
  if (!table) {
    Error error = table.error();
    error.operation = "check host use of " + bdf.to_string() + ": read mount table";
    error.hint = "it has block devices (" + fmt::format("{}", fmt::join(block_devices, ", ")) +
                 "); check they are not mounted, then force it";
    return std::unexpected(error);
  }
  {
    std::istringstream lines(*table);
    for (std::string line; std::getline(lines, line);) {
      std::istringstream fields(line);
      std::string source, target;
      fields >> source >> target;
      if (source.starts_with("/dev/")) mounts.emplace_back(source.substr(source.rfind('/') + 1), target);
    }
  }
  for (const std::string& block : block_devices) {
    for (const auto& [source, target] : mounts) {
      if (source == block) uses.push_back(fmt::format("{} is mounted on {}", block, target));
    }
  }
  return uses;
}

Result<void> unbind_driver(const SysfsPaths& paths, const Bdf& bdf, const BindOptions& options) {
  const auto driver = bound_driver(paths, bdf);
  if (!driver) return {};
  const std::string name = bdf.to_string();
  if (!options.force) {
    auto uses = host_uses_of(paths, bdf);
    if (!uses) return std::unexpected(uses.error());
    if (!uses->empty()) {
      return std::unexpected(make_error(Errc::busy, "unbind " + *driver + " from", name,
                                        fmt::format("this machine uses it: {}", fmt::join(*uses, "; ")),
                                        "unmount or take the interface down first, or force it if you are sure"));
    }
  }
  return sys::write_text_file(unbind_file(paths, bdf), name, "unbind " + *driver + " from " + name);
}

Result<void> bind_driver(const SysfsPaths& paths, const Bdf& bdf, std::string_view driver, const BindOptions& options) {
  const std::string name = bdf.to_string();
  if (bound_driver(paths, bdf) == std::optional<std::string>(driver)) return {};
  if (auto unbound = unbind_driver(paths, bdf, options); !unbound) return unbound;
  const std::string operation = fmt::format("bind {} to", driver);
  if (auto set = sys::write_text_file(paths.device_dir(bdf) + "/driver_override", driver, operation); !set) return set;
  if (auto probed = sys::write_text_file(paths.pci_root + "/drivers_probe", name, operation); !probed) return probed;
  const auto now = bound_driver(paths, bdf);
  if (now != std::optional<std::string>(driver)) {
    return std::unexpected(make_error(Errc::io_error, operation, name,
                                      fmt::format("{} did not take the device (driver now: {})", driver, now.value_or("none")),
                                      fmt::format("is the {} module loaded (modprobe {})? dmesg says why a probe failed",
                                                  driver, driver)));
  }
  return {};
}

Result<std::optional<std::string>> restore_driver(const SysfsPaths& paths, const Bdf& bdf, const BindOptions& options) {
  const std::string name = bdf.to_string();
  // An empty write clears driver_override (drivers/pci/pci-sysfs.c, driver_override_store).
  if (auto cleared = sys::write_text_file(paths.device_dir(bdf) + "/driver_override", "\n", "restore the driver of");
      !cleared) {
    return std::unexpected(cleared.error());
  }
  if (auto unbound = unbind_driver(paths, bdf, options); !unbound) return std::unexpected(unbound.error());
  if (auto probed = sys::write_text_file(paths.pci_root + "/drivers_probe", name, "restore the driver of"); !probed) {
    return std::unexpected(probed.error());
  }
  return bound_driver(paths, bdf);
}

}  // namespace pcie
