#include "pcie/discovery.h"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdio>

#include "pcie/config_space.h"
#include "src/pci/libpci_session.h"
#include "src/pci/resource_file.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

namespace pcie {
namespace {

constexpr unsigned kFillFlags = PCI_FILL_IDENT | PCI_FILL_CLASS | PCI_FILL_CLASS_EXT |
                                PCI_FILL_SUBSYS | PCI_FILL_BASES | PCI_FILL_SIZES |
                                PCI_FILL_ROM_BASE | PCI_FILL_IO_FLAGS | PCI_FILL_PHYS_SLOT;

// A BAR's type from the kernel's resource flags (include/linux/ioport.h), falling back to
// the BAR's own low bits (PCI 3.0, 6.2.5.1) when the flags are not available.
BarInfo decode_bar(const pci_dev* device, unsigned index) {
  BarInfo bar;
  bar.index = index;
  bar.size = device->size[index];
  const pciaddr_t raw = device->base_addr[index];
  const pciaddr_t flags = device->flags[index];
  if (flags != 0) {
    bar.space = (flags & PCI_IORESOURCE_IO) ? BarInfo::Space::io : BarInfo::Space::memory;
    bar.is_64bit = (flags & PCI_IORESOURCE_MEM_64) != 0;
    bar.prefetchable = (flags & PCI_IORESOURCE_PREFETCH) != 0;
    bar.assigned = sysfs::resource_assigned(flags);
  } else {
    bar.space = (raw & PCI_BASE_ADDRESS_SPACE_IO) ? BarInfo::Space::io : BarInfo::Space::memory;
    bar.is_64bit = bar.space == BarInfo::Space::memory &&
                   (raw & PCI_BASE_ADDRESS_MEM_TYPE_MASK) == PCI_BASE_ADDRESS_MEM_TYPE_64;
    bar.prefetchable = bar.space == BarInfo::Space::memory && (raw & PCI_BASE_ADDRESS_MEM_PREFETCH);
  }
  bar.bus_address = bar.space == BarInfo::Space::io ? (raw & PCI_ADDR_IO_MASK) : (raw & PCI_ADDR_MEM_MASK);
  return bar;
}

// An attribute the kernel writes only for some devices (sriov_totalvfs) or that may be
// absent in a partial tree: nullopt when absent. One that exists but cannot be read, or
// holds no number, is nullopt too, with a warning that says so and why: a field missing
// for an unknown reason must never look like a field the device does not have.
std::optional<std::int64_t> read_optional_number(const std::string& path, std::vector<std::string>& warnings) {
  auto text = sys::read_text_file(path, 64);
  if (!text) {
    if (text.error().sys_errno != ENOENT) warnings.push_back("cannot read " + path + ": " + text.error().reason);
    return std::nullopt;
  }
  auto value = sysfs::parse_number(*text);
  if (!value) warnings.push_back(fmt::format("{} holds no number: '{}'", path, printable(*text)));
  return value;
}

// The link of a device from its own config space, else from sysfs' link files; nullopt
// when it has none, an error (the last one met) when neither could be read.
Result<std::optional<LinkInfo>> own_link(const SysfsPaths& paths, const Bdf& bdf) {
  std::optional<Error> problem;
  if (auto config = ConfigSpace::open(paths, bdf); !config) {
    problem = config.error();
  } else if (auto bytes = config->snapshot(); !bytes) {
    problem = bytes.error();
  } else {
    const auto walk = walk_standard_capabilities(*bytes);
    auto link = decode_link(*bytes, walk.capabilities);
    if (link && *link && (*link)->current_width != 0) return *link;
    if (!link) problem = link.error();
  }
  auto link = read_sysfs_link(paths.device_dir(bdf));
  if (!link) return std::unexpected(link.error());
  if (*link && (*link)->current_width != 0) return *link;
  if (problem) return std::unexpected(*problem);
  return std::optional<LinkInfo>{};
}

void read_bridge_buses(std::span<const std::uint8_t> bytes, DeviceInfo& info) {
  if ((info.header_type == cfg::kHeaderTypeBridge || info.header_type == cfg::kHeaderTypeCardbus) &&
      bytes.size() > cfg::kSubordinateBus) {
    info.bridge_buses = BridgeBuses{bytes[cfg::kPrimaryBus], bytes[cfg::kSecondaryBus], bytes[cfg::kSubordinateBus]};
  }
}

void read_capabilities(const ConfigSpace& config, std::span<const std::uint8_t> bytes, DeviceInfo& info) {
  for (auto walk : {walk_standard_capabilities(bytes), walk_extended_capabilities(bytes)}) {
    info.capabilities.insert(info.capabilities.end(), walk.capabilities.begin(), walk.capabilities.end());
    if (walk.problem) {
      walk.problem->object = info.bdf.to_string();
      // Unprivileged readers see 64 bytes by design; that is not a device problem. A list
      // that runs past a config file root reads whole is one.
      if (walk.problem->code != Errc::out_of_range || !config.limited_by_privilege()) {
        info.warnings.push_back(walk.problem->message());
      }
    }
  }
}

void read_link(const SysfsPaths& paths, std::span<const std::uint8_t> bytes, DeviceInfo& info) {
  auto link = decode_link(bytes, info.capabilities);
  if (link && *link) info.link = **link;
  if (!link) info.warnings.push_back(link.error().message());
  if (!info.link && bytes.size() < cfg::kConventionalSize) {
    auto sysfs_link = read_sysfs_link(paths.device_dir(info.bdf));
    if (sysfs_link) {
      info.link = *sysfs_link;
    } else {
      info.warnings.push_back("cannot read the link from sysfs: " + sysfs_link.error().message());
    }
  }
}

// A VF's Link registers are reserved (SR-IOV 1.1, 3.5): it is reached over its PF's link.
void read_physical_function_link(const SysfsPaths& paths, DeviceInfo& info) {
  if (!info.physical_function || (info.link && info.link->current_width != 0)) return;
  auto pf_link = own_link(paths, *info.physical_function);
  if (!pf_link) {
    info.warnings.push_back("the link of its physical function " + info.physical_function->to_string() +
                            " cannot be read: " + pf_link.error().message());
  } else if (*pf_link) {
    info.link = **pf_link;
    info.link->source = LinkInfo::Source::physical_function;
  }
}

void read_config_details(const SysfsPaths& paths, DeviceInfo& info) {
  auto config = ConfigSpace::open(paths, info.bdf);
  if (!config) {
    info.warnings.push_back(config.error().message());
    return;
  }
  auto bytes = config->snapshot();
  if (!bytes) {
    info.warnings.push_back(bytes.error().message());
    return;
  }
  info.config_bytes_readable = bytes->size();
  info.config_file_bytes = config->file_size();
  info.header_type = (*bytes)[cfg::kHeaderType] & cfg::kHeaderTypeMask;
  read_bridge_buses(*bytes, info);
  read_capabilities(*config, *bytes, info);
  read_link(paths, *bytes, info);
  read_physical_function_link(paths, info);
}

// What libpci read: IDs, class, slot, BARs and ROM.
DeviceInfo info_from_libpci(const pci_dev* device) {
  DeviceInfo info;
  info.bdf = Bdf{static_cast<std::uint32_t>(device->domain), device->bus, device->dev, device->func};
  info.vendor_id = device->vendor_id;
  info.device_id = device->device_id;
  info.subsystem_vendor_id = device->subsys_vendor_id;
  info.subsystem_id = device->subsys_id;
  info.revision = device->rev_id;
  info.base_class = static_cast<std::uint8_t>(device->device_class >> 8);
  info.subclass = static_cast<std::uint8_t>(device->device_class & 0xff);
  info.prog_if = device->prog_if;
  info.header_type = 0xff;
  if ((device->known_fields & PCI_FILL_PHYS_SLOT) != 0 && device->phy_slot != nullptr) {
    info.physical_slot = std::string(device->phy_slot);
  }
  for (unsigned index = 0; index < kBarCount; ++index) {
    if (device->size[index] != 0) info.bars.push_back(decode_bar(device, index));
  }
  if (device->rom_size != 0) info.rom = RomInfo{device->rom_base_addr & PCI_ADDR_MEM_MASK, device->rom_size};
  return info;
}

std::optional<std::uint16_t> as_id(const std::optional<std::int64_t>& value) {
  if (!value || *value < 0 || *value > 0xffff) return std::nullopt;
  return static_cast<std::uint16_t>(*value);
}

// A VF's config-space IDs read 0xffff by specification (SR-IOV 1.1, 3.4.1.1); the
// kernel's vendor and device attributes hold the real ones (libpci reads those when it
// scans, but config space when asked for one device).
void read_virtual_function_ids(const std::string& dir, DeviceInfo& info) {
  if (info.vendor_id != 0xffff && info.device_id != 0xffff) return;
  if (auto vendor = as_id(read_optional_number(dir + "/vendor", info.warnings))) info.vendor_id = *vendor;
  if (auto id = as_id(read_optional_number(dir + "/device", info.warnings))) info.device_id = *id;
}

// libpci takes an unreadable subsystem attribute for a value (and says nothing): read
// them here, where a failure becomes a warning. Absent ones (conventional PCI bridges,
// partial trees) leave libpci's values from config space.
void read_subsystem_ids(const std::string& dir, DeviceInfo& info) {
  std::vector<std::string> problems;
  auto subsystem_vendor = as_id(read_optional_number(dir + "/subsystem_vendor", problems));
  auto subsystem = as_id(read_optional_number(dir + "/subsystem_device", problems));
  if (subsystem_vendor) info.subsystem_vendor_id = *subsystem_vendor;
  if (subsystem) info.subsystem_id = *subsystem;
  for (std::string& problem : problems) info.warnings.push_back("subsystem IDs: " + std::move(problem));
}

void read_sriov(const SysfsPaths& paths, const std::string& dir, DeviceInfo& info) {
  if (auto vfs = sysfs::virtual_functions(paths, info.bdf)) {
    info.virtual_functions = std::move(*vfs);
  } else {
    info.warnings.push_back("cannot list its SR-IOV virtual functions: " + vfs.error().message());
  }
  auto total = read_optional_number(dir + "/sriov_totalvfs", info.warnings);
  auto enabled = read_optional_number(dir + "/sriov_numvfs", info.warnings);
  if (total && enabled && *total >= 0 && *enabled >= 0) {
    info.sriov = SriovInfo{static_cast<unsigned>(*total), static_cast<unsigned>(*enabled)};
  }
}

void read_bindings(const SysfsPaths& paths, const std::string& dir, DeviceInfo& info) {
  read_sriov(paths, dir, info);
  if (auto driver = sysfs::read_link_name(dir + "/driver")) {
    info.driver = *driver;
  } else {
    info.warnings.push_back("cannot tell the driver: " + driver.error().message());
  }
  if (auto group = sysfs::read_link_name(dir + "/iommu_group"); !group) {
    info.warnings.push_back("cannot tell the IOMMU group: " + group.error().message());
  } else if (*group) {
    info.iommu_group = sysfs::parse_group_number(**group);
    if (!info.iommu_group) info.warnings.push_back("the iommu_group link names no group: '" + **group + "'");
  }
  // Read here rather than by libpci, which takes an unreadable file for "no node".
  if (auto node = read_optional_number(dir + "/numa_node", info.warnings); node && *node >= 0 && *node < 1 << 16) {
    info.numa_node = static_cast<int>(*node);
  }
}

void resolve_names(detail::LibpciSession& session, DeviceInfo& info) {
  info.vendor_name = session.lookup_name(PCI_LOOKUP_VENDOR, info.vendor_id);
  info.device_name = session.lookup_name(PCI_LOOKUP_DEVICE, info.vendor_id, info.device_id);
  info.class_name = session.lookup_name(PCI_LOOKUP_CLASS, info.class_id());
  // When only the base class is known, libpci formats "Name [ccss]"; keep just the name.
  const std::string numeric_suffix = fmt::format(" [{:04x}]", info.class_id());
  if (info.class_name.ends_with(numeric_suffix)) info.class_name.resize(info.class_name.size() - numeric_suffix.size());
  if (info.subsystem_vendor_id != 0 && info.subsystem_vendor_id != 0xffff) {
    info.subsystem_name = session.lookup_name(PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_DEVICE,
                                              info.vendor_id, info.device_id,
                                              info.subsystem_vendor_id, info.subsystem_id);
    info.subsystem_vendor_name =
        session.lookup_name(PCI_LOOKUP_SUBSYSTEM | PCI_LOOKUP_VENDOR, info.subsystem_vendor_id);
  }
  if (auto unavailable = session.names_unavailable()) info.warnings.push_back(*unavailable);
  if (auto hwdb = session.hwdb_unavailable()) info.warnings.push_back(*hwdb);
}

Result<DeviceInfo> build_device_info(detail::LibpciSession& session, pci_dev* device,
                                     const DiscoveryOptions& options) {
  auto filled = session.fill(device, kFillFlags);
  if (!filled) return std::unexpected(filled.error());
  DeviceInfo info = info_from_libpci(device);
  const std::string dir = options.paths.device_dir(info.bdf);
  if (auto pf = sysfs::physical_function(options.paths, info.bdf)) {
    info.physical_function = *pf;
  } else {
    info.warnings.push_back("cannot tell whether it is an SR-IOV virtual function: " + pf.error().message());
  }
  read_virtual_function_ids(dir, info);
  read_subsystem_ids(dir, info);
  if (options.read_bindings) read_bindings(options.paths, dir, info);
  if (options.resolve_names) resolve_names(session, info);
  if (options.read_capabilities) read_config_details(options.paths, info);
  return info;
}

// libpci parses <device>/resource with fgets into 256 bytes and sscanf "%llx %llx %llx",
// 7 + 6 times (BARs, ROM, SR-IOV BARs), and reports a line that does not parse through its
// error callback while the file is still open: the longjmp back to us would leak the FILE.
// So the file is parsed the same way first, and refused here, where nothing leaks.
constexpr int kResourceLinesLibpciReads = 13;

Result<void> check_resource_file(const std::string& device_dir) {
  const std::string path = device_dir + "/resource";
  auto text = sys::read_text_file(path, 64 * 1024);
  if (!text) {
    // Missing or unreadable: libpci fails on it at once, before holding anything open.
    return {};
  }
  std::string_view rest = *text;
  for (int line = 0; line < kResourceLinesLibpciReads && !rest.empty(); ++line) {
    // fgets(buffer, 256): up to 255 bytes, through the first newline.
    std::size_t length = std::min<std::size_t>(rest.size(), 255);
    if (const auto newline = rest.substr(0, length).find('\n'); newline != std::string_view::npos) length = newline + 1;
    const std::string chunk(rest.substr(0, length));
    rest.remove_prefix(length);
    unsigned long long start = 0, end = 0, flags = 0;
    if (std::sscanf(chunk.c_str(), "%llx %llx %llx", &start, &end, &flags) != 3) {
      return std::unexpected(make_error(Errc::malformed, "read the BARs of", path,
                                        fmt::format("line {} is not three hex numbers: '{}'", line + 1,
                                                    chunk.substr(0, chunk.find('\n'))),
                                        "a kernel's resource file has one 'start end flags' line per resource"));
    }
  }
  return {};
}

// libpci's scan stops the whole process on a directory entry it cannot parse; checking the
// names first turns that into an error that names the entry.
Result<void> check_device_directory(const std::string& devices_dir) {
  auto names = sys::list_directory(devices_dir);
  if (!names) {
    Error error = names.error();
    error.operation = "list PCI devices in";
    error.hint = "is sysfs mounted, and is this a PCI sysfs root (it must contain devices/)?";
    return std::unexpected(error);
  }
  for (const std::string& name : *names) {
    if (name.starts_with('.')) continue;  // libpci skips these too
    auto bdf = Bdf::parse(name);
    if (!bdf || std::count(name.begin(), name.end(), ':') != 2) {
      return std::unexpected(make_error(Errc::malformed, "list PCI devices in", devices_dir,
                                        fmt::format("entry '{}' is not a DDDD:BB:DD.F address", name)));
    }
    if (auto resources = check_resource_file(devices_dir + "/" + name); !resources) return resources;
  }
  return {};
}

Result<pci_filter> make_filter(detail::LibpciSession& session, const DiscoveryOptions& options) {
  pci_filter filter{};
  pci_filter_init(session.access(), &filter);
  // libpci's parsers write into the string they are given, so each gets its own copy.
  if (!options.slot_filter.empty()) {
    std::string slot = options.slot_filter;
    if (const char* problem = pci_filter_parse_slot(&filter, slot.data())) {
      return std::unexpected(make_error(Errc::invalid_argument, "parse slot filter",
                                        fmt::format("'{}'", options.slot_filter), problem,
                                        "expected [[[[domain]:]bus]:][device][.[func]]"));
    }
  }
  if (!options.id_filter.empty()) {
    std::string id = options.id_filter;
    if (const char* problem = pci_filter_parse_id(&filter, id.data())) {
      return std::unexpected(make_error(Errc::invalid_argument, "parse ID filter",
                                        fmt::format("'{}'", options.id_filter), problem,
                                        "expected [vendor]:[device][:class[:prog-if]] in hex"));
    }
  }
  return filter;
}

}  // namespace

const BarInfo* DeviceInfo::find_bar(unsigned index) const {
  for (const BarInfo& bar : bars) {
    if (bar.index == index) return &bar;
  }
  return nullptr;
}

Result<std::vector<DeviceInfo>> discover(const DiscoveryOptions& options) {
  if (!options.driver_filter.empty() && !options.read_bindings) {
    return std::unexpected(make_error(Errc::invalid_argument, "discover", options.paths.pci_root,
                                      "a driver filter needs read_bindings"));
  }
  auto checked = check_device_directory(options.paths.pci_root + "/devices");
  if (!checked) return std::unexpected(checked.error());
  auto session = detail::LibpciSession::open(options.paths.pci_root, options.pci_ids_path);
  if (!session) return std::unexpected(session.error());
  session->set_names_from_hwdb(options.names_from_hwdb);
  auto filter = make_filter(*session, options);
  if (!filter) return std::unexpected(filter.error());
  auto scanned = session->scan();
  if (!scanned) return std::unexpected(scanned.error());

  std::vector<DeviceInfo> devices;
  for (pci_dev* device = session->access()->devices; device != nullptr; device = device->next) {
    auto matched = session->matches(&*filter, device);
    if (!matched) return std::unexpected(matched.error());
    if (!*matched) continue;
    auto info = build_device_info(*session, device, options);
    if (!info) return std::unexpected(info.error());
    if (!options.driver_filter.empty() && info->driver != options.driver_filter) continue;
    devices.push_back(std::move(*info));
  }
  std::sort(devices.begin(), devices.end(),
            [](const DeviceInfo& a, const DeviceInfo& b) { return a.bdf < b.bdf; });
  return devices;
}

Result<DeviceInfo> describe(const Bdf& bdf, const DiscoveryOptions& options) {
  const std::string dir = options.paths.device_dir(bdf);
  if (!sys::path_exists(dir)) {
    return std::unexpected(make_error(Errc::not_found, "find device", bdf.to_string(),
                                      fmt::format("{} does not exist", dir),
                                      "list devices with 'pciectl ls'"));
  }
  if (auto resources = check_resource_file(dir); !resources) return std::unexpected(resources.error());
  auto session = detail::LibpciSession::open(options.paths.pci_root, options.pci_ids_path);
  if (!session) return std::unexpected(session.error());
  session->set_names_from_hwdb(options.names_from_hwdb);
  auto device = session->get_device(bdf);
  if (!device) return std::unexpected(device.error());
  auto info = build_device_info(*session, *device, options);
  // libpci names slots only for the devices of a scan, and this one was not scanned.
  if (info && !info->physical_slot) {
    if (auto slot = sysfs::physical_slot(options.paths, bdf)) info->physical_slot = *slot;
    else info->warnings.push_back(slot.error().message());
  }
  return info;
}

}  // namespace pcie
