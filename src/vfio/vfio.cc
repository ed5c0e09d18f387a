#include "pcie/vfio.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>

#include <algorithm>
#include <limits>
#include <utility>
#include <cstring>

#include "pcie/config_space.h"
#include "src/bar/register_file.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"
#include "src/sys/vfio_ioctls.h"
#include "src/vfio/capability_chain.h"

namespace pcie {
namespace {

bool is_bridge(const SysfsPaths& sysfs, const Bdf& bdf) {
  auto class_text = sys::read_text_file(sysfs.device_dir(bdf) + "/class", 64);
  // "0x060400": PCI-to-PCI bridge (06 04) or CardBus bridge (06 07).
  return class_text && (class_text->starts_with("0x0604") || class_text->starts_with("0x0607"));
}

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

std::string bind_hint(const Bdf& bdf) {
  const std::string name = bdf.to_string();
  return fmt::format("bind it to vfio-pci: echo vfio-pci > /sys/bus/pci/devices/{0}/driver_override; "
                     "echo {0} > /sys/bus/pci/drivers_probe (after unbinding its current driver)",
                     name);
}

// The IOVA ranges the IOMMU reports; empty when the kernel does not report them (before
// Linux 5.4), an error when the ioctl itself fails.
Result<std::vector<IovaRange>> read_iova_ranges(int container_fd) {
  std::vector<IovaRange> ranges;
  auto info = sys::vfio::iommu_info(container_fd);
  if (!info) return std::unexpected(info.error());
  vfio_iommu_type1_info base;
  std::memcpy(&base, info->data(), sizeof base);
  if (!(base.flags & VFIO_IOMMU_INFO_CAPS)) return ranges;
  const auto at = vfio_detail::find_capability(*info, base.cap_offset, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE,
                                               sizeof(vfio_iommu_type1_info_cap_iova_range));
  if (!at) return ranges;
  vfio_iommu_type1_info_cap_iova_range capability;
  std::memcpy(&capability, info->data() + *at, sizeof capability);
  for (const vfio_iova_range& range :
       vfio_detail::capability_entries<vfio_iova_range>(*info, *at + sizeof capability, capability.nr_iovas)) {
    ranges.push_back({range.start, range.end});
  }
  return ranges;
}

}  // namespace

bool vfio_member_allows_viability(const VfioGroupMember& member) {
  return member.is_bridge || !member.driver || *member.driver == "vfio-pci" || *member.driver == "pci-stub";
}

Error explain_vfio_failure(const Error& raw, std::string_view step, const VfioFailureContext& context) {
  Error error = raw;
  const std::string name = context.bdf.to_string();
  if (!context.group) {
    error.code = Errc::not_supported;
    if (!context.iommu_enabled) {
      error.reason = "the IOMMU is off: the kernel created no IOMMU groups";
      error.hint = "enable VT-d / AMD-Vi in the firmware and boot with intel_iommu=on (Intel) or amd_iommu=on "
                   "(AMD); the sysfs path (BarMapping) works without an IOMMU";
    } else {
      error.reason = name + " is in no IOMMU group";
      error.hint = "the IOMMU does not cover this device; check dmesg for DMAR/AMD-Vi messages";
    }
    return error;
  }
  const int group = *context.group;
  const std::string current = context.driver ? "bound to '" + *context.driver + "'" : "bound to no driver";
  if (step == "viable") {
    std::vector<std::string> blockers;
    std::string unbind;
    for (const VfioGroupMember& member : context.members) {
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
  if (step == "group") {
    const std::string node = "/dev/vfio/" + std::to_string(group);
    if (raw.sys_errno == ENOENT) {
      error.code = Errc::not_found;
      error.reason = fmt::format("{} does not exist: {} is {}, not to vfio-pci", node, name, current);
      error.hint = bind_hint(context.bdf);
    } else if (raw.sys_errno == EBUSY) {
      error.reason = fmt::format("group {} is already open (another process, or another container in this one)", group);
      error.hint = fmt::format("a group can be opened once; find the holder with `fuser {}`", node);
    } else if (raw.code == Errc::permission_denied) {
      error.hint = fmt::format("run as root, or give your user {} (chown) and enough RLIMIT_MEMLOCK for DMA", node);
    }
    return error;
  }
  if (step == "device" && context.driver.value_or("") != "vfio-pci") {
    error.code = Errc::not_found;
    error.reason = fmt::format("{} is {}, not to vfio-pci", name, current);
    error.hint = bind_hint(context.bdf);
  }
  return error;
}

Result<VfioContainer> VfioContainer::open(const VfioPaths& paths) {
  const std::string node = paths.dev_vfio + "/vfio";
  auto fd = sys::open_file(node, O_RDWR, "open VFIO container");
  if (!fd) {
    Error error = fd.error();
    if (error.code == Errc::not_found) error.hint = "load the VFIO modules: modprobe vfio-pci";
    return std::unexpected(error);
  }
  auto version = sys::vfio::get_api_version(fd->get());
  if (!version) return std::unexpected(version.error());
  if (*version != VFIO_API_VERSION) {
    return std::unexpected(make_error(Errc::not_supported, "open VFIO container", node,
                                      fmt::format("VFIO API version {}, expected {}", *version, VFIO_API_VERSION)));
  }
  auto type1v2 = sys::vfio::check_extension(fd->get(), VFIO_TYPE1v2_IOMMU);
  if (!type1v2) return std::unexpected(type1v2.error());
  if (!*type1v2) {
    return std::unexpected(make_error(Errc::not_supported, "open VFIO container", node,
                                      "the kernel offers no type1v2 IOMMU model",
                                      "load vfio_iommu_type1 (modprobe vfio_iommu_type1)"));
  }
  return VfioContainer(paths, std::move(*fd));
}

std::vector<int> VfioContainer::attached_groups() const {
  std::vector<int> numbers;
  for (const Group& group : groups_) numbers.push_back(group.number);
  return numbers;
}

Result<VfioContainer::AttachedGroup> VfioContainer::attach_group(const Bdf& bdf) {
  const auto group = sysfs::device_iommu_group(paths_.sysfs, bdf);
  if (!group) {
    if (!sys::path_exists(paths_.sysfs.device_dir(bdf))) {
      return std::unexpected(make_error(Errc::not_found, "open through VFIO", bdf.to_string(), "no such device"));
    }
    return std::unexpected(explain_vfio_failure(make_error(Errc::not_supported, "open through VFIO", bdf.to_string(), ""),
                                                "group", failure_context(paths_, bdf)));
  }
  for (const Group& attached : groups_) {
    if (attached.number == *group) return AttachedGroup{attached.number, attached.fd.get()};
  }
  const std::string node = paths_.dev_vfio + "/" + std::to_string(*group);
  auto fd = sys::open_file(node, O_RDWR, "open VFIO group");
  if (!fd) return std::unexpected(explain_vfio_failure(fd.error(), "group", failure_context(paths_, bdf)));

  auto flags = sys::vfio::group_status(fd->get(), node);
  if (!flags) return std::unexpected(flags.error());
  if (!(*flags & VFIO_GROUP_FLAGS_VIABLE)) {
    return std::unexpected(explain_vfio_failure(make_error(Errc::busy, "open VFIO group", node, ""), "viable",
                                                failure_context(paths_, bdf)));
  }
  if (auto attached = sys::vfio::group_set_container(fd->get(), container_.get(), node); !attached) {
    return std::unexpected(attached.error());
  }
  if (groups_.empty()) {
    // The IOMMU model is chosen once, after the first group is attached (vfio.rst).
    if (auto set = sys::vfio::set_iommu(container_.get(), VFIO_TYPE1v2_IOMMU); !set) return std::unexpected(set.error());
    auto ranges = read_iova_ranges(container_.get());
    if (!ranges) return std::unexpected(ranges.error());
    iova_ranges_ = std::move(*ranges);
  }
  groups_.push_back({*group, std::move(*fd)});
  return AttachedGroup{*group, groups_.back().fd.get()};
}

Result<VfioDevice> VfioContainer::open_device(const Bdf& bdf) {
  auto group = attach_group(bdf);
  if (!group) return std::unexpected(group.error());
  const std::string name = bdf.to_string();
  auto fd = sys::vfio::group_get_device_fd(group->fd, name);
  if (!fd) return std::unexpected(explain_vfio_failure(fd.error(), "device", failure_context(paths_, bdf)));
  auto info = sys::vfio::device_info(fd->get(), name);
  if (!info) return std::unexpected(info.error());
  if (!(info->flags & VFIO_DEVICE_FLAGS_PCI)) {
    return std::unexpected(make_error(Errc::not_supported, "open through VFIO", name, "not a vfio-pci device"));
  }
  return VfioDevice(bdf, group->number, std::move(*fd), info->num_regions, info->num_irqs,
                    (info->flags & VFIO_DEVICE_FLAGS_RESET) != 0);
}

Result<VfioRegionInfo> VfioDevice::region_info(std::uint32_t index) const {
  const std::string name = bdf_.to_string();
  if (index >= region_count_) {
    return std::unexpected(make_error(Errc::not_found, "region info", name + " region " + std::to_string(index),
                                      fmt::format("the device has {} regions", region_count_)));
  }
  auto raw = sys::vfio::region_info(fd_.get(), index, name);
  if (!raw) return std::unexpected(raw.error());
  vfio_region_info base;
  std::memcpy(&base, raw->data(), sizeof base);
  VfioRegionInfo info;
  info.index = index;
  info.size = base.size;
  info.file_offset = base.offset;
  info.readable = base.flags & VFIO_REGION_INFO_FLAG_READ;
  info.writable = base.flags & VFIO_REGION_INFO_FLAG_WRITE;
  info.mappable = base.flags & VFIO_REGION_INFO_FLAG_MMAP;
  if (!info.mappable || info.size == 0) return info;

  std::optional<std::size_t> sparse;
  if (base.flags & VFIO_REGION_INFO_FLAG_CAPS) {
    sparse = vfio_detail::find_capability(*raw, base.cap_offset, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
                                          sizeof(vfio_region_info_cap_sparse_mmap));
  }
  if (!sparse) {
    info.mmap_areas.push_back({0, info.size});
    return info;
  }
  vfio_region_info_cap_sparse_mmap capability;
  std::memcpy(&capability, raw->data() + *sparse, sizeof capability);
  for (const vfio_region_sparse_mmap_area& area : vfio_detail::capability_entries<vfio_region_sparse_mmap_area>(
           *raw, *sparse + sizeof capability, capability.nr_areas)) {
    // Untrusted all the same: an area must lie inside the region.
    if (area.size == 0 || area.offset > info.size || area.size > info.size - area.offset) continue;
    info.mmap_areas.push_back({area.offset, area.size});
  }
  return info;
}

Result<VfioRegion> VfioDevice::open_region(std::uint32_t index, const VfioRegionOptions& options) const {
  auto info = region_info(index);
  if (!info) return std::unexpected(info.error());
  const std::string name = fmt::format("{} {}", bdf_.to_string(),
                                       index < kVfioRomRegion ? "BAR" + std::to_string(index)
                                       : index == kVfioRomRegion ? std::string("ROM")
                                       : index == kVfioConfigRegion ? std::string("config")
                                                                    : "region " + std::to_string(index));
  if (info->size == 0) {
    return std::unexpected(make_error(Errc::not_found, "open VFIO region", name, "not implemented (size 0)"));
  }
  if (options.writable && !info->writable) {
    return std::unexpected(make_error(Errc::permission_denied, "open VFIO region", name, "the region is read-only",
                                      "open it with writable = false"));
  }
  std::vector<VfioRegion::MappedArea> mappings;
  if (options.map && info->mappable) {
    const int prot = PROT_READ | (options.writable ? PROT_WRITE : 0);
    for (const VfioRegionInfo::Area& area : info->mmap_areas) {
      auto mapping = sys::map_shared(fd_.get(), area.size, info->file_offset + area.offset, prot, name);
      if (!mapping) return std::unexpected(mapping.error());
      mappings.push_back({area.offset, std::move(*mapping)});
    }
  }
  return VfioRegion(name, fd_.get(), std::move(*info), std::move(mappings), options.writable);
}

Result<void> VfioDevice::enable_bus_master(bool enable) const {
  auto config = open_region(kVfioConfigRegion, {.map = false});
  if (!config) return std::unexpected(config.error());
  auto command = config->read(Width::bits16, cfg::kCommand);
  if (!command) return std::unexpected(command.error());
  std::uint64_t value = *command;
  if (enable) {
    value |= cfg::kCommandBusMaster | cfg::kCommandMemorySpace;
  } else {
    value &= ~std::uint64_t{cfg::kCommandBusMaster};
  }
  if (value == *command) return {};
  return config->write(Width::bits16, cfg::kCommand, value);
}

Result<void> VfioDevice::reset() const {
  if (!reset_supported_) {
    return std::unexpected(make_error(Errc::not_supported, "reset", bdf_.to_string(),
                                      "vfio-pci knows no reset method for this device (no FLR, PM or bus reset)"));
  }
  return sys::vfio::reset_device(fd_.get(), bdf_.to_string());
}

namespace {
std::uint32_t irq_index_of(IrqKind kind) {
  switch (kind) {
    case IrqKind::intx: return VFIO_PCI_INTX_IRQ_INDEX;
    case IrqKind::msi: return VFIO_PCI_MSI_IRQ_INDEX;
    case IrqKind::msix: return VFIO_PCI_MSIX_IRQ_INDEX;
    case IrqKind::error: return VFIO_PCI_ERR_IRQ_INDEX;
    case IrqKind::request: return VFIO_PCI_REQ_IRQ_INDEX;
  }
  return VFIO_PCI_MSI_IRQ_INDEX;
}
const char* irq_name(IrqKind kind) {
  switch (kind) {
    case IrqKind::intx: return "INTx";
    case IrqKind::msi: return "MSI";
    case IrqKind::msix: return "MSI-X";
    case IrqKind::error: return "error IRQ";
    case IrqKind::request: return "request IRQ";
  }
  return "?";
}
}  // namespace

Result<VfioInterrupts> VfioInterrupts::enable(const VfioDevice& device, IrqKind kind, unsigned count) {
  const std::string name = fmt::format("{} {}", device.bdf().to_string(), irq_name(kind));
  auto info = sys::vfio::irq_info(device.fd(), irq_index_of(kind), device.bdf().to_string());
  if (!info) return std::unexpected(info.error());
  if (count == 0 || count > info->count) {
    return std::unexpected(make_error(Errc::out_of_range, "enable interrupts", name,
                                      fmt::format("{} vectors asked, the device has {}", count, info->count),
                                      info->count == 0 ? "the device does not implement this interrupt kind" : ""));
  }
  std::vector<UniqueFd> eventfds;
  std::vector<int> raw;
  for (unsigned i = 0; i < count; ++i) {
    auto fd = sys::make_eventfd();
    if (!fd) return std::unexpected(fd.error());
    raw.push_back(fd->get());
    eventfds.push_back(std::move(*fd));
  }
  if (auto set = sys::vfio::set_irq_eventfds(device.fd(), irq_index_of(kind), raw, device.bdf().to_string()); !set) {
    return std::unexpected(set.error());
  }
  return VfioInterrupts(device.fd(), name, kind, std::move(eventfds));
}

VfioInterrupts& VfioInterrupts::operator=(VfioInterrupts&& other) noexcept {
  if (this != &other) {
    (void)disable();
    device_fd_ = std::exchange(other.device_fd_, -1);
    name_ = std::move(other.name_);
    kind_ = other.kind_;
    eventfds_ = std::move(other.eventfds_);
  }
  return *this;
}

VfioInterrupts::~VfioInterrupts() { (void)disable(); }

Result<void> VfioInterrupts::disable() {
  if (device_fd_ < 0 || eventfds_.empty()) return {};
  // Disable before the eventfds close: the kernel must stop signalling them first.
  auto disabled = sys::vfio::set_irq_eventfds(device_fd_, irq_index_of(kind_), {}, name_);
  eventfds_.clear();
  return disabled;
}

Result<std::uint64_t> VfioInterrupts::wait(unsigned vector, std::chrono::milliseconds timeout) const {
  if (vector >= eventfds_.size()) {
    return std::unexpected(make_error(Errc::out_of_range, "wait for interrupt", name_,
                                      fmt::format("vector {} of {}", vector, eventfds_.size())));
  }
  // poll() takes an int of milliseconds, where -1 means forever: clamp, never wrap.
  const auto bounded = std::clamp<std::chrono::milliseconds::rep>(timeout.count(), 0, std::numeric_limits<int>::max());
  return sys::wait_eventfd(eventfds_[vector].get(), static_cast<int>(bounded));
}

Result<void> VfioInterrupts::unmask_intx() const {
  if (kind_ != IrqKind::intx) return {};
  return sys::vfio::unmask_irq(device_fd_, VFIO_PCI_INTX_IRQ_INDEX, name_);
}

std::byte* VfioRegion::mapped_base() const {
  if (mappings_.size() != 1 || mappings_[0].offset != 0 || mappings_[0].mapping.size() != info_.size) return nullptr;
  return mappings_[0].mapping.data();
}

std::optional<MmioView> VfioRegion::mmio() const {
  std::byte* base = mapped_base();
  if (base == nullptr) return std::nullopt;
  return MmioView(base, info_.size, allowed_widths(), name_);
}

const VfioRegion::MappedArea* VfioRegion::area_for(std::uint64_t offset, std::uint64_t bytes) const {
  for (const MappedArea& area : mappings_) {
    if (offset >= area.offset && offset - area.offset <= area.mapping.size() &&
        bytes <= area.mapping.size() - (offset - area.offset)) {
      return &area;
    }
  }
  return nullptr;
}

Result<std::uint64_t> VfioRegion::read_checked(Width width, std::uint64_t offset) const {
  if (const MappedArea* area = area_for(offset, byte_count(width))) {
    return MmioView(area->mapping.data(), area->mapping.size(), allowed_widths(), name_).read_as(width, offset - area->offset);
  }
  return read_register_file(device_fd_, width, info_.file_offset + offset, name_);
}

Result<void> VfioRegion::write_checked(Width width, std::uint64_t offset, std::uint64_t value) {
  if (const MappedArea* area = area_for(offset, byte_count(width))) {
    MmioView(area->mapping.data(), area->mapping.size(), allowed_widths(), name_).write_as(width, offset - area->offset, value);
    return {};
  }
  return write_register_file(device_fd_, width, info_.file_offset + offset, value, name_);
}

}  // namespace pcie
