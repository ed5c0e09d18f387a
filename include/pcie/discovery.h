// Device discovery from sysfs, as lspci's sysfs back end sees the devices (the kernel's IDs
// and classes), with names from pci.ids (or udev's hwdb) through libpci. Each device's
// files are opened once and read in one call: the cost of a scan is its syscalls.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/capabilities.h"
#include "pcie/error.h"
#include "pcie/link.h"
#include "pcie/sysfs_paths.h"

namespace pcie {

// BARs in a type 0 (endpoint) header: BAR0 to BAR5.
inline constexpr unsigned kBarCount = 6;

// One implemented BAR of a device, from <device>/resource (the kernel's view, which also
// holds the size), decoded as libpci does.
struct BarInfo {
  // The address space the BAR decodes: memory (MMIO) or I/O ports.
  enum class Space { memory, io };
  unsigned index = 0;            // 0..5; a 64-bit BAR takes its index and the next
  // The BAR's address as the kernel's resource holds it (flag bits removed): the CPU's view,
  // which on x86 is also the bus address the device decodes (a host bridge may translate).
  std::uint64_t bus_address = 0;
  std::uint64_t size = 0;         // bytes the BAR decodes, never 0 in DeviceInfo::bars
  Space space = Space::memory;    // memory (MMIO) or I/O ports
  bool is_64bit = false;          // a 64-bit memory BAR (it uses the next index too)
  bool prefetchable = false;      // memory without read side effects: may be write-combined
  // False where the kernel gave the BAR no address (IORESOURCE_UNSET or IORESOURCE_DISABLED
  // in <device>/resource; dmesg then says "BAR n: no space" or "failed to assign"): the
  // address above is stale, and opening the BAR is refused.
  bool assigned = true;
  // Equal when every field is.
  friend bool operator==(const BarInfo&, const BarInfo&) = default;
};

// The device's expansion ROM, from line 6 of <device>/resource.
struct RomInfo {
  std::uint64_t bus_address = 0;  // as BarInfo::bus_address, flag bits removed
  std::uint64_t size = 0;         // bytes, never 0
};

// The bus numbers a bridge forwards (PCI-to-PCI Bridge Architecture Spec 1.2, 3.2.5.2-3.2.5.4:
// Primary, Secondary and Subordinate Bus Number at 0x18-0x1a; a CardBus bridge's type 2
// header has its Primary, CardBus and Subordinate Bus Numbers at the same offsets). As the
// device reports them: nothing guarantees secondary <= subordinate.
struct BridgeBuses {
  std::uint8_t primary = 0;      // the bus the bridge sits on
  std::uint8_t secondary = 0;    // the bus right below it
  std::uint8_t subordinate = 0;  // the highest bus number below it
  // Equal when all three numbers are.
  friend bool operator==(const BridgeBuses&, const BridgeBuses&) = default;
};

// A physical function's SR-IOV state (<device>/sriov_totalvfs, sriov_numvfs).
struct SriovInfo {
  unsigned total_vfs = 0;  // VFs the device can have
  unsigned num_vfs = 0;    // VFs enabled now
};

// One device as discover() and describe() read it. The IDs and class are the kernel's
// (<device>/modalias, else the vendor, device and class attributes), as lspci shows them.
struct DeviceInfo {
  Bdf bdf;                      // the device's address, as its sysfs directory names it
  std::uint16_t vendor_id = 0;  // the PCI-SIG-assigned vendor ID (0x8086: Intel)
  std::uint16_t device_id = 0;  // the device ID, the vendor's own numbering
  std::uint16_t subsystem_vendor_id = 0;  // 0 when the kernel shows none
  std::uint16_t subsystem_id = 0;         // the subsystem (card) ID; 0 when none is shown
  // From config space (offset 0x08) where it reads, else <device>/revision; 0xff if unknown.
  std::uint8_t revision = 0;
  std::uint8_t base_class = 0;  // class code, PCI Code and ID Assignment Spec 1.11
  std::uint8_t subclass = 0;    // the class code's middle byte
  std::uint8_t prog_if = 0;     // the programming interface: the class code's low byte
  std::uint8_t header_type = 0;  // without the multi-function bit; 0xff if unknown

  // From pci.ids; empty when the ID is unknown or names were not requested.
  std::string vendor_name;
  std::string device_name;            // the device's name under its vendor
  std::string class_name;             // the subclass's name, else the base class's
  std::string subsystem_name;         // the subsystem (card) name
  std::string subsystem_vendor_name;  // the subsystem vendor's name

  // The slot's name where the platform describes one (<sysfs>/bus/pci/slots/NAME/address
  // naming this device's domain, bus and device: hot-plug and firmware-described slots).
  std::optional<std::string> physical_slot;

  std::vector<BarInfo> bars;  // implemented BARs only, by index
  std::optional<RomInfo> rom;  // nullopt when the device has no ROM (or the kernel shows none)
  // Filled when DiscoveryOptions::read_bindings is set.
  std::optional<std::string> driver;  // the bound kernel driver
  std::optional<int> iommu_group;     // nullopt: in no IOMMU group, or bindings not read
  std::optional<int> numa_node;       // nullopt where the kernel reports -1
  std::optional<LinkInfo> link;       // a VF's is its PF's (LinkInfo::Source::physical_function)

  // SR-IOV (PCIe Base Spec 6.0, 9): a virtual function names its physical function (the
  // <device>/physfn link); a physical function lists its enabled VFs (virtfnN links, in
  // VF order) and its VF counts. A VF's config-space IDs read 0xffff by specification;
  // vendor_id/device_id above are its real IDs, from sysfs.
  std::optional<Bdf> physical_function;
  std::vector<Bdf> virtual_functions;  // a PF's enabled VFs, read with the bindings; else empty
  std::optional<SriovInfo> sriov;      // a PF's VF counts, read with the bindings; else nullopt

  // Filled with the capabilities (DiscoveryOptions::read_capabilities) for a type 1 or type 2
  // header; nullopt for other headers or when config space could not be read.
  std::optional<BridgeBuses> bridge_buses;

  std::vector<Capability> capabilities;  // standard, then extended
  std::size_t config_bytes_readable = 0; // 64 for unprivileged users
  std::size_t config_file_bytes = 0;     // what the config file holds: what root can read
  // Problems found in untrusted data (a capability list that loops, a link capability
  // cut off by the readable size, ...). Discovery reports them and carries on.
  std::vector<std::string> warnings;

  // 0xCCSS: base class and subclass, as lspci's [0200].
  std::uint16_t class_id() const { return static_cast<std::uint16_t>(base_class << 8 | subclass); }
  // The BAR with `index` in `bars`; nullptr when the device does not implement it (or
  // `index` is the upper half of a 64-bit BAR). Valid while this DeviceInfo lives.
  const BarInfo* find_bar(unsigned index) const;
};

// What discover() and describe() read, and which devices discover() keeps.
struct DiscoveryOptions {
  SysfsPaths paths;  // where sysfs lies: the machine's own, or a fake tree in tests
  // lspci's -s syntax: [[[[<domain>]:]<bus>]:][<device>][.[<func>]]; empty matches all.
  std::string slot_filter;
  // lspci's -d syntax: [<vendor>]:[<device>][:<class>[:<prog-if>]]; empty matches all.
  std::string id_filter;
  // Only devices bound to this driver; empty matches all.
  std::string driver_filter;
  // Look up names in pci.ids (libpci's default path unless pci_ids_path is set).
  bool resolve_names = true;
  std::string pci_ids_path;  // a pci.ids file to read instead of libpci's; empty: libpci's
  // Ask udev's hardware database (hwdb) before pci.ids, as lspci does, for names that equal
  // lspci's on this machine. The two differ for subsystems: the hwdb names a subsystem that
  // pci.ids does not list after its device. Off by default: libpci reopens the hwdb for
  // every name it looks up.
  bool names_from_hwdb = false;
  // Read the bound driver, IOMMU group, NUMA node and SR-IOV state (two links and two
  // small files per device; a PF's virtfn links besides).
  bool read_bindings = true;
  // Read config space for capabilities and link status (costs one read per device).
  bool read_capabilities = true;
};

// Every device under options.paths that matches the filters, sorted by BDF. Fails on a
// bad filter (invalid_argument), a missing or unreadable sysfs tree, an entry that is not
// a device address (malformed), or a matching device whose IDs or resource file cannot be
// read (malformed when absent or not what a kernel writes, else the read's error).
Result<std::vector<DeviceInfo>> discover(const DiscoveryOptions& options = {});

// One device, without scanning the rest of the bus, read as discover() reads it. The
// filters in `options` are ignored. Fails with not_found when the device does not exist,
// else as discover() fails for a device.
Result<DeviceInfo> describe(const Bdf& bdf, const DiscoveryOptions& options = {});

}  // namespace pcie
