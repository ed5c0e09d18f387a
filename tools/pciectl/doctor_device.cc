#include "tools/pciectl/doctor_device.h"

#include <fmt/format.h>
#include <unistd.h>

#include <optional>
#include <string>

#include "pcie/binding.h"
#include "pcie/discovery.h"
#include "pcie/iomem.h"

namespace pciectl::doctor {
namespace {

// What several checks read: the device as described, and its driver.
struct Device {
  const DoctorOptions& options;
  const pcie::Bdf& bdf;
  std::string name;  // "0000:03:00.0"
  pcie::DeviceInfo info;
  std::string driver;  // "none" when unbound
};

std::optional<Check> check_device(const Device& device) {
  const pcie::DeviceInfo& info = device.info;
  return Check{.status = Status::ok,
               .detail = fmt::format("{} [{:04x}:{:04x}], NUMA node {}", device.name, info.vendor_id, info.device_id,
                                     info.numa_node ? std::to_string(*info.numa_node) : "unknown")};
}

// Whether it is bound to a userspace driver; if not, what on this machine uses it.
std::optional<Check> check_driver(const Device& device) {
  const bool userspace = device.driver == "vfio-pci" || device.driver == "uio_pci_generic";
  Check binding{.status = userspace ? Status::ok : Status::fail,
                .detail = "bound to " + device.driver,
                .blocks_device = !userspace};
  if (userspace) return binding;
  auto uses = pcie::host_uses_of(device.options.paths, device.bdf);
  if (!uses) {
    binding.detail += fmt::format("; whether this machine uses it cannot be told ({})", uses.error().reason);
  } else if (!uses->empty()) {
    binding.detail += fmt::format("; this machine uses it: {}", fmt::join(*uses, "; "));
  }
  binding.fix = uses && uses->empty()
                    ? fmt::format("sudo pciectl vfio grant {} $USER (binds vfio-pci, gives you the group), or "
                                  "sudo pciectl bind {} vfio-pci",
                                  device.name, device.name)
                    : "taking it from the host would break what uses it; pick another device";
  return binding;
}

struct GroupMembers {
  std::vector<std::string> members;   // every device of the group, this one included
  std::vector<std::string> spoilers;  // "0000:03:00.1 (bound to e1000e)": what makes it not viable
};

// The group's devices, and those bound to a host driver (bridges aside).
GroupMembers group_members(const Device& device, const std::string& group) {
  const pcie::SysfsPaths& paths = device.options.paths;
  GroupMembers found;
  for (const std::string& member : list(device.options.sysfs + "/kernel/iommu_groups/" + group + "/devices")) {
    auto member_bdf = pcie::Bdf::parse(member);
    if (!member_bdf) continue;
    found.members.push_back(member);
    if (*member_bdf == device.bdf) continue;
    auto member_driver = pcie::bound_driver(paths, *member_bdf);
    const std::string class_text = trimmed(slurp(paths.device_dir(*member_bdf) + "/class"));
    const bool bridge = class_text.starts_with("0x0604");
    const std::string their = member_driver ? member_driver->value_or("none") : "unknown";
    if (!bridge && their != "none" && their != "vfio-pci" && their != "pci-stub") {
      found.spoilers.push_back(fmt::format("{} (bound to {})", member, their));
    }
  }
  return found;
}

std::string node_access(const std::string& node) {
  if (!exists(node)) return "not present";
  return ::access(node.c_str(), R_OK | W_OK) == 0 ? "you may open it" : "you may not open it";
}

// Whether its IOMMU group is viable (every member on vfio-pci or unbound), and openable.
std::optional<Check> check_iommu_group(const Device& device) {
  if (!device.info.iommu_group) {
    return Check{.status = Status::fail,
                 .detail = "in no IOMMU group",
                 .fix = "VFIO needs the IOMMU (see the iommu check); without it: VFIO no-IOMMU mode or UIO (root)",
                 .blocks_device = device.driver != "uio_pci_generic"};
  }
  const std::string group = std::to_string(*device.info.iommu_group);
  const GroupMembers found = group_members(device, group);
  const std::string node = device.options.dev_vfio + "/" + group;
  const std::string access = node_access(node);
  Check viability{.status = found.spoilers.empty() ? Status::ok : Status::fail,
                  .detail = fmt::format("group {} ({}); {}: {}", group, fmt::join(found.members, " "), node, access),
                  .blocks_device = !found.spoilers.empty()};
  if (!found.spoilers.empty()) {
    viability.detail += fmt::format("; not viable: {}", fmt::join(found.spoilers, ", "));
    viability.fix = "bind every device of the group to vfio-pci (or unbind it); the group is the unit of isolation";
  } else if (device.driver == "vfio-pci" && access != "you may open it") {
    // Root opens it all the same (the node's owner is root); anyone else cannot.
    viability.status = ::geteuid() == 0 ? Status::warn : Status::fail;
    viability.fix = fmt::format("run as root, or sudo pciectl vfio grant {} $USER", device.name);
    viability.blocks_device = ::geteuid() != 0;
  }
  return viability;
}

// Who owns each memory BAR in the kernel's resource tree.
std::optional<Check> check_bar_owners(const Device& device) {
  auto tree = pcie::read_iomem(device.options.paths.iomem_file);
  std::vector<std::string> owners;
  for (const pcie::BarInfo& bar : device.info.bars) {
    if (bar.space != pcie::BarInfo::Space::memory) continue;
    if (!tree || tree->addresses_hidden) {
      owners.push_back(fmt::format("BAR{}: unknown ({})", bar.index,
                                   tree ? "addresses hidden: not root" : tree.error().reason));
      continue;
    }
    owners.push_back(fmt::format("BAR{}: {}", bar.index, pcie::iomem_owner(*tree, bar.bus_address).description));
  }
  return Check{.status = Status::info,
               .detail = owners.empty() ? "no memory BARs" : fmt::format("{}", fmt::join(owners, "; "))};
}

// Each check by its stable name, in the order they are reported.
struct DeviceCheck {
  const char* name;
  std::optional<Check> (*run)(const Device&);
};

constexpr DeviceCheck kDeviceChecks[] = {
    {"device", check_device},
    {"driver", check_driver},
    {"iommu_group", check_iommu_group},
    {"bar_owners", check_bar_owners},
};

}  // namespace

void device_checks(const DoctorOptions& options, const pcie::Bdf& bdf, std::vector<Check>& checks) {
  pcie::DiscoveryOptions discovery;
  discovery.paths = options.paths;
  auto info = pcie::describe(bdf, discovery);
  if (!info) {
    checks.push_back({"device", Status::fail, info.error().message(), "check the address with pciectl ls", true});
    return;
  }
  const std::string driver = info->driver.value_or("none");
  const Device device{options, bdf, bdf.to_string(), std::move(*info), driver};
  for (const DeviceCheck& entry : kDeviceChecks) {
    std::optional<Check> check = entry.run(device);
    if (!check) continue;
    check->name = entry.name;
    checks.push_back(std::move(*check));
  }
}

}  // namespace pciectl::doctor
