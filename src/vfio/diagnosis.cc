// Why opening a device through VFIO failed, in words the user can act on.
#include <fmt/format.h>

#include <algorithm>
#include <cerrno>

#include "pcie/vfio.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/vfio/diagnosis.h"

namespace pcie {
namespace {

bool is_bridge(const SysfsPaths& sysfs, const Bdf& bdf) {
  auto class_text = sys::read_text_file(sysfs.device_dir(bdf) + "/class", 64);
  // "0x060400": PCI-to-PCI bridge (06 04) or CardBus bridge (06 07).
  return class_text && (class_text->starts_with("0x0604") || class_text->starts_with("0x0607"));
}

std::string bind_hint(const Bdf& bdf) {
  const std::string name = bdf.to_string();
  return fmt::format("bind it to vfio-pci: echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; "
                     "echo {0} > /sys/bus/pci/drivers_probe (after unbinding its current driver)",
                     name);
}

// "bound to 'e1000e'", or "bound to no driver".
std::string current_binding(const VfioFailureContext& context) {
  return context.driver ? "bound to '" + *context.driver + "'" : "bound to no driver";
}

// The device is in no IOMMU group: the IOMMU is off, or does not cover it.
Error explain_no_group(const Error& raw, const VfioFailureContext& context) {
  Error error = raw;
  error.code = Errc::not_supported;
  if (!context.iommu_enabled) {
    error.reason = "the IOMMU is off: the kernel created no IOMMU groups";
    error.hint = "enable VT-d / AMD-Vi in the firmware and boot with intel_iommu=on (Intel) or amd_iommu=on "
                 "(AMD); the sysfs path (BarMapping) works without an IOMMU";
  } else {
    error.reason = context.bdf.to_string() + " is in no IOMMU group";
    error.hint = "the IOMMU does not cover this device; check dmesg for DMAR/AMD-Vi messages";
  }
  return error;
}

// The group is not viable: names the members bound to other drivers, and how to unbind the first.
Error explain_not_viable(const Error& raw, int group, const std::vector<VfioGroupMember>& members) {
  Error error = raw;
  std::vector<std::string> blockers;
  std::string unbind;
  for (const VfioGroupMember& member : members) {
    if (vfio_member_allows_viability(member)) continue;
    blockers.push_back(fmt::format("{} is bound to {}", member.bdf.to_string(), *member.driver));
    if (unbind.empty()) unbind = fmt::format("echo {} > /sys/bus/pci/drivers/{}/unbind", member.bdf.to_string(), *member.driver);
  }
  error.code = Errc::busy;
  error.reason = fmt::format("group {} not viable: {}", group,
                             blockers.empty() ? "a device in it is bound to a driver other than vfio-pci"
                                              : fmt::format("{}", fmt::join(blockers, ", ")));
  error.hint = "every device in an IOMMU group must be bound to vfio-pci or to no driver; unbind "
               "the others or bind them to vfio-pci" + (unbind.empty() ? std::string() : " (" + unbind + ")");
  return error;
}

// Opening /dev/vfio/GROUP failed: no node (not bound to vfio-pci), already open, or not allowed.
Error explain_group_open(const Error& raw, const VfioFailureContext& context) {
  Error error = raw;
  const std::string name = context.bdf.to_string();
  const int group = *context.group;
  const std::string node = "/dev/vfio/" + std::to_string(group);
  if (raw.sys_errno == ENOENT) {
    error.code = Errc::not_found;
    error.reason = fmt::format("{} does not exist: {} is {}, not to vfio-pci", node, name, current_binding(context));
    error.hint = bind_hint(context.bdf);
  } else if (raw.sys_errno == EBUSY) {
    error.reason = fmt::format("group {} is already open (another process, or another container in this one)", group);
    error.hint = fmt::format("a group can be opened once; find the holder with `fuser {}`", node);
  } else if (raw.code == Errc::permission_denied) {
    error.hint = fmt::format("run as root, or have root give you the group: sudo pciectl vfio grant {} $USER "
                             "(owns {} and checks RLIMIT_MEMLOCK for DMA)",
                             name, node);
  }
  return error;
}

}  // namespace

namespace vfio_detail {

VfioFailureContext failure_context(const VfioPaths& paths, const Bdf& bdf) {
  VfioFailureContext context;
  context.bdf = bdf;
  context.group = sysfs::device_iommu_group(paths.sysfs, bdf);
  context.driver = sysfs::device_driver(paths.sysfs, bdf).value_or(std::nullopt);
  auto groups = sys::list_directory(paths.iommu_groups);
  context.iommu_enabled = groups && !groups->empty();
  if (context.group) {
    auto members = sys::list_directory(paths.iommu_groups + "/" + std::to_string(*context.group) + "/devices");
    if (members) {
      std::sort(members->begin(), members->end());
      for (const std::string& name : *members) {
        auto member_bdf = Bdf::parse(name);
        if (!member_bdf) continue;
        context.members.push_back({*member_bdf, sysfs::device_driver(paths.sysfs, *member_bdf).value_or(std::nullopt),
                                   is_bridge(paths.sysfs, *member_bdf)});
      }
    }
  }
  return context;
}

}  // namespace vfio_detail

bool vfio_member_allows_viability(const VfioGroupMember& member) {
  return member.is_bridge || !member.driver || *member.driver == "vfio-pci" || *member.driver == "pci-stub";
}

Error explain_vfio_failure(const Error& raw, std::string_view step, const VfioFailureContext& context) {
  if (!context.group) return explain_no_group(raw, context);
  if (step == "viable") return explain_not_viable(raw, *context.group, context.members);
  if (step == "group") return explain_group_open(raw, context);
  Error error = raw;
  if (step == "device" && context.driver.value_or("") != "vfio-pci") {
    error.code = Errc::not_found;
    error.reason = fmt::format("{} is {}, not to vfio-pci", context.bdf.to_string(), current_binding(context));
    error.hint = bind_hint(context.bdf);
  }
  return error;
}


}  // namespace pcie
