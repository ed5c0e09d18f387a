#include "pcie/discovery.h"

#include <fmt/format.h>

#include <algorithm>

#include "pcie/config_space.h"
#include "src/pci/config_file.h"
#include "src/pci/device_filter.h"
#include "src/pci/device_identity.h"
#include "src/pci/libpci_session.h"
#include "src/pci/resource_file.h"
#include "src/pci/sysfs_attributes.h"
#include "src/pci/sysfs_links.h"
#include "src/sys/syscalls.h"

// Each device costs a handful of syscalls, each a few microseconds on a paravirtualized
// machine, so each file is opened once and read in one call: <device>/modalias and the
// revision (device_identity.h), <device>/resource, the physfn link; with bindings, the
// driver and IOMMU group links, numa_node and sriov_totalvfs; at the full level config,
// whose bytes also give the revision. libpci is left the names (pci.ids, hwdb) and the
// filter syntax.
namespace pcie {
namespace {

using sysfs::read_optional_number;

// A BAR as libpci 3.9 takes it from a resource line (lib/sysfs.c: base = start | (flags &
// 0xf)) and as discovery has always decoded it: the type from the kernel's resource flags
// (include/linux/ioport.h), else from the BAR's own low bits (PCI 3.0, 6.2.5.1).
BarInfo decode_bar(unsigned index, const sysfs::ResourceLine& line) {
  BarInfo bar;
  bar.index = index;
  bar.size = line.end > line.start ? line.end - line.start + 1 : 0;
  const std::uint64_t raw = line.start | (line.flags & PCI_ADDR_FLAG_MASK);
  const std::uint64_t flags = line.flags;
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

// BARs 0-5 and the ROM (line 6) from <device>/resource, which every device has: a file
// that cannot be read or parsed fails the device, as does one of fewer than 7 lines (the
// kernel's resource_show writes the 6 BARs and the ROM at least, then the SR-IOV and
// bridge windows): a short file says nothing of the BARs it leaves out.
Result<void> read_resources(const std::string& dir, DeviceInfo& info) {
  const std::string path = dir + "/resource";
  auto text = sys::read_attribute(path, 4096);
  if (!text) return std::unexpected(sysfs::required_attribute_error(text.error(), path, info.bdf));
  auto lines = sysfs::parse_resource_file(*text, path);
  if (!lines) return std::unexpected(lines.error());
  if (lines->size() < kBarCount + 1) {
    return std::unexpected(make_error(Errc::malformed, "read BARs from", path,
                                      fmt::format("{} lines; the kernel writes at least {} (6 BARs and the ROM)",
                                                  lines->size(), kBarCount + 1),
                                      "is this a sysfs tree the kernel wrote?"));
  }
  for (unsigned index = 0; index < kBarCount && index < lines->size(); ++index) {
    if (BarInfo bar = decode_bar(index, (*lines)[index]); bar.size != 0) info.bars.push_back(bar);
  }
  if (lines->size() > kBarCount) {
    const sysfs::ResourceLine& rom = (*lines)[kBarCount];
    if (rom.end > rom.start) {
      info.rom = RomInfo{(rom.start | (rom.flags & PCI_ADDR_FLAG_MASK)) & PCI_ADDR_MEM_MASK, rom.end - rom.start + 1};
    }
  }
  return {};
}

// The link of a device from its own config space, else from sysfs' link files; nullopt
// when it has none, an error (the last one met) when neither could be read.
Result<std::optional<LinkInfo>> own_link(const SysfsPaths& paths, const Bdf& bdf) {
  std::optional<Error> problem;
  if (auto config = detail::read_config_file(paths.device_dir(bdf) + "/config", cfg::kExtendedSize, false); !config) {
    problem = config.error();
  } else {
    const auto walk = walk_standard_capabilities(config->bytes);
    auto link = decode_link(config->bytes, walk.capabilities);
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

void read_capabilities(const detail::ConfigBytes& config, DeviceInfo& info) {
  for (auto walk : {walk_standard_capabilities(config.bytes), walk_extended_capabilities(config.bytes)}) {
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

// The full level, from the config bytes the IDs were read from (one open per device).
void read_config_details(const SysfsPaths& paths, const Result<detail::ConfigBytes>& config, DeviceInfo& info) {
  if (!config) {
    info.warnings.push_back(config.error().message());
    return;
  }
  info.config_bytes_readable = config->bytes.size();
  info.config_file_bytes = config->file_size;
  info.header_type = config->bytes[cfg::kHeaderType] & cfg::kHeaderTypeMask;
  read_bridge_buses(config->bytes, info);
  read_capabilities(*config, info);
  read_link(paths, config->bytes, info);
  read_physical_function_link(paths, info);
}

void read_physical_function(const SysfsPaths& paths, DeviceInfo& info) {
  if (auto pf = sysfs::physical_function(paths, info.bdf)) {
    info.physical_function = *pf;
  } else {
    info.warnings.push_back("cannot tell whether it is an SR-IOV virtual function: " + pf.error().message());
  }
}

// Only a physical function has sriov_totalvfs (the kernel shows its SR-IOV attributes for
// PFs alone) and virtfnN links, so for any other device this is one failed open, not a
// listing of its directory. One that exists but cannot be read may still be a PF's.
void read_sriov(const SysfsPaths& paths, const std::string& dir, DeviceInfo& info) {
  std::vector<std::string> total_problems;
  auto total = read_optional_number(dir + "/sriov_totalvfs", total_problems);
  if (!total && total_problems.empty()) return;
  if (auto vfs = sysfs::virtual_functions(paths, info.bdf)) {
    info.virtual_functions = std::move(*vfs);
  } else {
    info.warnings.push_back("cannot list its SR-IOV virtual functions: " + vfs.error().message());
  }
  for (std::string& problem : total_problems) info.warnings.push_back(std::move(problem));
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

// What discover() and describe() share for every device they read.
struct Scan {
  const DiscoveryOptions& options;
  detail::LibpciSession& session;
  const detail::DeviceFilter* filter;  // null for describe(), which ignores the filters
  Result<sysfs::PhysicalSlots> slots;  // read once per scan
};

void add_physical_slot(const Scan& scan, DeviceInfo& info) {
  if (scan.slots) {
    info.physical_slot = sysfs::slot_of(*scan.slots, info.bdf);
  } else {
    info.warnings.push_back(scan.slots.error().message());
  }
}

// After the IDs: what the device has and is bound to, its names, its config details. The
// driver filter applies once the driver is known: nothing more is read for a device it
// leaves out. False when it does.
bool read_the_rest(const Scan& scan, const std::string& dir, const Result<detail::ConfigBytes>& config,
                   DeviceInfo& info) {
  const DiscoveryOptions& options = scan.options;
  if (options.read_bindings) read_bindings(options.paths, dir, info);
  if (!options.driver_filter.empty() && info.driver != options.driver_filter) return false;
  if (options.resolve_names) resolve_names(scan.session, info);
  if (options.read_capabilities) read_config_details(options.paths, config, info);
  add_physical_slot(scan, info);
  return true;
}

// Fills `info` (a new DeviceInfo, filled where it will stay) with the device at `bdf`;
// false when the filters leave it out. Fails when its IDs or BARs cannot be read;
// anything else it cannot read is a warning in the DeviceInfo.
Result<bool> read_device(const Scan& scan, const Bdf& bdf, DeviceInfo& info) {
  if (scan.filter != nullptr && !scan.filter->matches_address(bdf)) return false;
  const DiscoveryOptions& options = scan.options;
  const std::string dir = options.paths.device_dir(bdf);
  info.bdf = bdf;
  info.header_type = 0xff;  // known at the full level only
  // Config is read at the full level only, once: for the capabilities, and the revision.
  const auto config = options.read_capabilities
                          ? detail::read_config_file(dir + "/config", cfg::kExtendedSize, true)
                          : Result<detail::ConfigBytes>(detail::ConfigBytes{});
  std::span<const std::uint8_t> bytes;
  if (config) bytes = config->bytes;
  std::vector<std::string> identity_warnings;
  if (auto identity = detail::read_identity(dir, bytes, info, identity_warnings); !identity) {
    return std::unexpected(identity.error());
  }
  if (scan.filter != nullptr && !scan.filter->matches_ids(info)) return false;
  if (auto resources = read_resources(dir, info); !resources) return std::unexpected(resources.error());
  read_physical_function(options.paths, info);
  for (std::string& warning : identity_warnings) info.warnings.push_back(std::move(warning));
  return read_the_rest(scan, dir, config, info);
}

// The devices under devices_dir, by address; every entry must be one (libpci's own scan
// stopped the process on one it could not parse, and lspci fails on it).
Result<std::vector<Bdf>> list_devices(const std::string& devices_dir) {
  auto names = sys::list_directory(devices_dir);
  if (!names) {
    Error error = names.error();
    error.operation = "list PCI devices in";
    error.hint = "is sysfs mounted, and is this a PCI sysfs root (it must contain devices/)?";
    return std::unexpected(error);
  }
  std::vector<Bdf> devices;
  for (const std::string& name : *names) {
    if (name.starts_with('.')) continue;  // libpci skips these too
    auto bdf = Bdf::parse(name);
    if (!bdf || std::count(name.begin(), name.end(), ':') != 2) {
      return std::unexpected(make_error(Errc::malformed, "list PCI devices in", devices_dir,
                                        fmt::format("entry '{}' is not a DDDD:BB:DD.F address", name)));
    }
    devices.push_back(*bdf);
  }
  return devices;
}

Result<detail::LibpciSession> open_session(const DiscoveryOptions& options) {
  auto session = detail::LibpciSession::open(options.paths.pci_root, options.pci_ids_path);
  if (session) session->set_names_from_hwdb(options.names_from_hwdb);
  return session;
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
  auto addresses = list_devices(options.paths.pci_root + "/devices");
  if (!addresses) return std::unexpected(addresses.error());
  auto session = open_session(options);
  if (!session) return std::unexpected(session.error());
  auto filter = detail::DeviceFilter::parse(*session, options);
  if (!filter) return std::unexpected(filter.error());
  const Scan scan{options, *session, &*filter, sysfs::read_physical_slots(options.paths)};
  std::vector<DeviceInfo> devices;
  devices.reserve(addresses->size());
  for (const Bdf& bdf : *addresses) {
    auto kept = read_device(scan, bdf, devices.emplace_back());
    if (!kept) return std::unexpected(kept.error());
    if (!*kept) devices.pop_back();
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
  auto session = open_session(options);
  if (!session) return std::unexpected(session.error());
  DiscoveryOptions unfiltered = options;
  unfiltered.driver_filter.clear();
  const Scan scan{unfiltered, *session, nullptr, sysfs::read_physical_slots(options.paths)};
  DeviceInfo info;
  if (auto read = read_device(scan, bdf, info); !read) return std::unexpected(read.error());
  return info;
}

}  // namespace pcie
