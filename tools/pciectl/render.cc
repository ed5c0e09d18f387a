#include "tools/pciectl/render.h"

#include "tools/device_record/device_record.h"
#include "tools/pciectl/device_names.h"

#include "pcie/memory_type.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>

namespace pciectl {
namespace {

std::string or_default(const std::string& text, const char* fallback) { return text.empty() ? fallback : text; }

std::string bar_kind(const pcie::BarInfo& bar) {
  if (bar.space == pcie::BarInfo::Space::io) return "I/O ports";
  return fmt::format("memory {} {}{}", bar.is_64bit ? "64-bit" : "32-bit",
                     bar.prefetchable ? "prefetchable" : "non-prefetchable",
                     bar.assigned ? "" : " [no address assigned]");
}

std::string speed_text(double gts) { return gts > 0 ? fmt::format("{:g} GT/s", gts) : "unknown speed"; }

}  // namespace

void print_warnings(const pcie::DeviceInfo& device) {
  for (const std::string& warning : device.warnings) {
    fmt::print(stderr, "pciectl: warning: {}: {}\n", device.bdf.to_string(), pcie::printable(warning));
  }
}

std::string human_size(std::uint64_t bytes) {
  static constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  unsigned unit = 0;
  while (unit + 1 < std::size(kUnits) && bytes >= 1024 && bytes % 1024 == 0) {
    bytes /= 1024;
    ++unit;
  }
  return fmt::format("{} {}", bytes, kUnits[unit]);
}

std::string render_line(const pcie::DeviceInfo& raw, bool with_prog_if) {
  const pcie::DeviceInfo device = pcie_records::displayable(raw);
  std::string line = fmt::format("{} {} [{:04x}]: ", device.bdf.to_string(), or_default(device.class_name, "Class"),
                                 device.class_id());
  line += render_vendor_and_device(device);
  if (device.revision != 0) line += fmt::format(" (rev {:02x})", device.revision);
  // lspci -nn prints the programming interface only with -v.
  if (with_prog_if && device.prog_if != 0) line += fmt::format(" (prog-if {:02x})", device.prog_if);
  return line;
}

namespace {

// lspci -mm quotes each name and escapes '"' and '\\' in it with a backslash.
std::string shell_quoted(std::string_view text) {
  std::string out = "\"";
  for (char c : text) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  out += '"';
  return out;
}

// The names as lspci -nn shows them one by one: "Name [id]", with lspci's words for an
// unknown one.
struct MachineNames {
  std::string class_name, vendor, device, subsystem_vendor, subsystem;
  bool has_subsystem = false;
};

MachineNames machine_names(const pcie::DeviceInfo& d) {
  MachineNames names;
  names.class_name = fmt::format("{} [{:04x}]", or_default(d.class_name, "Class"), d.class_id());
  names.vendor = fmt::format("{} [{:04x}]", or_default(d.vendor_name, "Vendor"), d.vendor_id);
  names.device = fmt::format("{} [{:04x}]", or_default(d.device_name, "Device"), d.device_id);
  // 0 and ffff: no subsystem IDs (PCI Local Bus Spec 3.0, 6.2.4).
  names.has_subsystem = d.subsystem_vendor_id != 0 && d.subsystem_vendor_id != 0xffff;
  if (names.has_subsystem) {
    names.subsystem_vendor =
        fmt::format("{} [{:04x}]", or_default(d.subsystem_vendor_name, "Unknown vendor"), d.subsystem_vendor_id);
    names.subsystem = fmt::format("{} [{:04x}]", or_default(d.subsystem_name, "Device"), d.subsystem_id);
  }
  return names;
}

}  // namespace

std::string render_machine_line(const pcie::DeviceInfo& raw) {
  const pcie::DeviceInfo d = pcie_records::displayable(raw);
  const MachineNames names = machine_names(d);
  std::string line = fmt::format("{} {} {} {}", d.bdf.to_string(), shell_quoted(names.class_name), shell_quoted(names.vendor),
                                 shell_quoted(names.device));
  if (d.revision != 0) line += fmt::format(" -r{:02x}", d.revision);
  line += fmt::format(" -p{:02x}", d.prog_if);
  line += names.has_subsystem ? " " + shell_quoted(names.subsystem_vendor) + " " + shell_quoted(names.subsystem) : " \"\" \"\"";
  return line;
}

std::string render_machine_record(const pcie::DeviceInfo& raw, bool with_driver) {
  const pcie::DeviceInfo d = pcie_records::displayable(raw);
  const MachineNames names = machine_names(d);
  std::string record = fmt::format("Slot:\t{}\nClass:\t{}\nVendor:\t{}\nDevice:\t{}\n", d.bdf.to_string(),
                                   names.class_name, names.vendor, names.device);
  if (names.has_subsystem) record += fmt::format("SVendor:\t{}\nSDevice:\t{}\n", names.subsystem_vendor, names.subsystem);
  if (d.physical_slot) record += fmt::format("PhySlot:\t{}\n", *d.physical_slot);
  if (d.revision != 0) record += fmt::format("Rev:\t{:02x}\n", d.revision);
  record += fmt::format("ProgIf:\t{:02x}\n", d.prog_if);
  if (with_driver && d.driver) record += fmt::format("Driver:\t{}\n", *d.driver);
  if (d.numa_node) record += fmt::format("NUMANode:\t{}\n", *d.numa_node);
  if (d.iommu_group) record += fmt::format("IOMMUGroup:\t{}\n", *d.iommu_group);
  return record;
}

BarMemoryTypes read_bar_memory_types(const pcie::SysfsPaths& paths, const pcie::DeviceInfo& device) {
  BarMemoryTypes types;
  auto entries = pcie::read_pat_memtypes(paths);  // once, for every BAR
  if (!entries) {
    types.note = fmt::format("unverified: {} cannot be read ({}; it needs root and debugfs)", paths.pat_memtype_list,
                             entries.error().reason);
    return types;
  }
  types.verified = true;
  for (const pcie::BarInfo& bar : device.bars) {
    if (bar.space != pcie::BarInfo::Space::memory) continue;
    for (const pcie::PatEntry& entry : pcie::overlapping(*entries, bar.bus_address, bar.size)) {
      types.by_bar[bar.index].push_back(entry.type);
    }
  }
  return types;
}

namespace {

// render_details' "  Name:         value" lines.
class DetailLines {
 public:
  explicit DetailLines(std::string first_line) : out_(std::move(first_line)) {}
  void field(std::string_view name, const std::string& value) {
    out_ += fmt::format("  {:<14}{}\n", std::string(name) + ":", value);
  }
  void raw(const std::string& text) { out_ += text; }
  std::string take() { return std::move(out_); }

 private:
  std::string out_;
};

// Names and IDs, the driver, the IOMMU group and VFIO, the NUMA node and slot.
void add_identity(DetailLines& lines, const pcie::DeviceInfo& d, const VfioNodes* vfio) {
  lines.field("Vendor", fmt::format("{} [{:04x}]", or_default(d.vendor_name, "unknown"), d.vendor_id));
  lines.field("Device", fmt::format("{} [{:04x}]", or_default(d.device_name, "unknown"), d.device_id));
  lines.field("Subsystem", fmt::format("{} [{:04x}:{:04x}]", or_default(d.subsystem_name, "unknown"),
                                       d.subsystem_vendor_id, d.subsystem_id));
  lines.field("Class", fmt::format("{} [{:02x}:{:02x}.{:02x}]", or_default(d.class_name, "unknown"), d.base_class,
                                   d.subclass, d.prog_if));
  lines.field("Revision", fmt::format("{:02x}", d.revision));
  lines.field("Driver", d.driver.value_or("none"));
  lines.field("IOMMU group", d.iommu_group ? std::to_string(*d.iommu_group) : "none");
  if (vfio != nullptr) {
    lines.field("VFIO group", vfio->group_node);
    lines.field("VFIO cdev", vfio->cdev);
    lines.field("VFIO backend", vfio->reason);
  }
  lines.field("NUMA node", d.numa_node ? std::to_string(*d.numa_node) : "unknown");
  if (d.physical_slot) lines.field("Physical slot", *d.physical_slot);
}

// Bridge bus numbers, the link, SR-IOV.
void add_topology(DetailLines& lines, const pcie::DeviceInfo& d) {
  if (d.bridge_buses) {
    lines.field("Bridge buses", fmt::format("primary {:02x}, secondary {:02x}, subordinate {:02x}",
                                            d.bridge_buses->primary, d.bridge_buses->secondary,
                                            d.bridge_buses->subordinate));
  }
  if (d.link) {
    const bool downgraded = d.link->current_speed_gts < d.link->max_speed_gts || d.link->current_width < d.link->max_width;
    const char* source = d.link->source == pcie::LinkInfo::Source::sysfs               ? " [from sysfs]"
                         : d.link->source == pcie::LinkInfo::Source::physical_function ? " [of its PF]"
                                                                                        : "";
    lines.field("Link", fmt::format("{} x{} (max {} x{}){}{}", speed_text(d.link->current_speed_gts),
                                    d.link->current_width, speed_text(d.link->max_speed_gts), d.link->max_width,
                                    downgraded ? ", downgraded" : "", source));
  } else {
    lines.field("Link", "none");
  }
  if (d.physical_function) lines.field("SR-IOV", "virtual function of " + d.physical_function->to_string());
  if (d.sriov) {
    std::string vfs;
    for (const pcie::Bdf& vf : d.virtual_functions) vfs += (vfs.empty() ? ": " : ", ") + vf.to_string();
    lines.field("SR-IOV", fmt::format("{} of {} VFs enabled{}", d.sriov->num_vfs, d.sriov->total_vfs, vfs));
  }
}

// The BARs (with the memory types mapped now, when known) and the ROM.
void add_bars(DetailLines& lines, const pcie::DeviceInfo& d, const BarMemoryTypes* memory_types) {
  for (const pcie::BarInfo& bar : d.bars) {
    std::string mapped;
    if (memory_types != nullptr && memory_types->by_bar.contains(bar.index)) {
      mapped = fmt::format(" [mapped now: {}]", fmt::join(memory_types->by_bar.at(bar.index), ", "));
    }
    lines.field(fmt::format("BAR{}", bar.index),
                fmt::format("{} at 0x{:x}, size {}{}", bar_kind(bar), bar.bus_address, human_size(bar.size), mapped));
  }
  if (memory_types != nullptr) {
    lines.field("Memory types", memory_types->verified ? "verified against the kernel's PAT table" : memory_types->note);
  }
  if (d.rom) lines.field("ROM", fmt::format("at 0x{:x}, size {}", d.rom->bus_address, human_size(d.rom->size)));
}

// How much config space was readable, and the capabilities found in it.
void add_config_space(DetailLines& lines, const pcie::DeviceInfo& d) {
  const bool privilege_limited = d.config_bytes_readable < d.config_file_bytes;
  std::string config_note;
  if (privilege_limited) {
    config_note = fmt::format(" (run as root for all {})", d.config_file_bytes);
  } else if (d.config_bytes_readable < 256) {
    config_note = fmt::format(" (the config file holds only {})", d.config_bytes_readable);
  }
  lines.field("Config space", fmt::format("{} bytes readable{}", d.config_bytes_readable, config_note));
  if (d.capabilities.empty() && privilege_limited && d.config_bytes_readable < 256) {
    lines.field("Capabilities", "not readable: only the 64-byte header is visible to non-root users");
    return;
  }
  if (d.capabilities.empty()) {
    lines.field("Capabilities", "none");
    return;
  }
  lines.raw("  Capabilities:\n");
  for (const pcie::Capability& capability : d.capabilities) {
    if (capability.space == pcie::Capability::Space::standard) {
      lines.raw(fmt::format("    [{:02x}] {} ({:02x})\n", capability.offset, capability.name(), capability.id));
    } else {
      lines.raw(fmt::format("    [{:03x} v{}] {} ({:04x})\n", capability.offset, capability.version, capability.name(),
                            capability.id));
    }
  }
}

}  // namespace

std::string render_details(const pcie::DeviceInfo& raw, const BarMemoryTypes* memory_types, const VfioNodes* vfio) {
  const pcie::DeviceInfo d = pcie_records::displayable(raw);
  DetailLines lines(render_line(d, true) + "\n");
  add_identity(lines, d, vfio);
  add_topology(lines, d);
  add_bars(lines, d, memory_types);
  add_config_space(lines, d);
  for (const std::string& warning : d.warnings) lines.raw("  Warning:      " + warning + "\n");
  return lines.take();
}

nlohmann::ordered_json to_json(const pcie::DeviceInfo& d, const BarMemoryTypes* memory_types, const VfioNodes* vfio) {
  // The record the Python module also gives (one place for the fields), then what only
  // pciectl finds out: the VFIO nodes and the BARs' granted memory types.
  nlohmann::ordered_json json = pcie_records::device_record(d, pcie_records::IdStyle::hex_strings);
  json["vfio"] = vfio != nullptr ? to_json(*vfio) : nlohmann::ordered_json();
  if (memory_types != nullptr) {
    for (nlohmann::ordered_json& bar : json["bars"]) {
      const unsigned index = bar["index"].get<unsigned>();
      bar["mapped_memory_types"] = memory_types->verified
                                       ? nlohmann::ordered_json(memory_types->by_bar.contains(index)
                                                                    ? memory_types->by_bar.at(index)
                                                                    : std::vector<std::string>{})
                                       : nlohmann::ordered_json();
    }
    json["memory_types_verified"] = memory_types->verified;
    if (!memory_types->verified) json["memory_types_note"] = memory_types->note;
  }
  return json;
}

}  // namespace pciectl
