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

inline constexpr unsigned kBarCount = 6;

struct BarInfo {
  enum class Space { memory, io };
  unsigned index = 0;            // 0..5; a 64-bit BAR takes its index and the next
  // The BAR's address as the kernel's resource holds it (flag bits removed): the CPU's view,
  // which on x86 is also the bus address the device decodes (a host bridge may translate).
  std::uint64_t bus_address = 0;
  std::uint64_t size = 0;
  Space space = Space::memory;
  bool is_64bit = false;
  bool prefetchable = false;
  // False where the kernel gave the BAR no address (IORESOURCE_UNSET or IORESOURCE_DISABLED
  // in <device>/resource; dmesg then says "BAR n: no space" or "failed to assign"): the
  // address above is stale, and opening the BAR is refused.
  bool assigned = true;
  friend bool operator==(const BarInfo&, const BarInfo&) = default;
};

struct RomInfo {
  std::uint64_t bus_address = 0;
  std::uint64_t size = 0;
};

// The bus numbers a bridge forwards (PCI-to-PCI Bridge Architecture Spec 1.2, 3.2.5.2-3.2.5.4:
// Primary, Secondary and Subordinate Bus Number at 0x18-0x1a; a CardBus bridge's type 2
// header has its Primary, CardBus and Subordinate Bus Numbers at the same offsets). As the
// device reports them: nothing guarantees secondary <= subordinate.
struct BridgeBuses {
  std::uint8_t primary = 0;
  std::uint8_t secondary = 0;
  std::uint8_t subordinate = 0;
  friend bool operator==(const BridgeBuses&, const BridgeBuses&) = default;
};

// A physical function's SR-IOV state (<device>/sriov_totalvfs, sriov_numvfs).
struct SriovInfo {
  unsigned total_vfs = 0;  // VFs the device can have
  unsigned num_vfs = 0;    // VFs enabled now
};

struct DeviceInfo {
  Bdf bdf;
  std::uint16_t vendor_id = 0;
  std::uint16_t device_id = 0;
  std::uint16_t subsystem_vendor_id = 0;
  std::uint16_t subsystem_id = 0;
  std::uint8_t revision = 0;
  std::uint8_t base_class = 0;  // class code, PCI Code and ID Assignment Spec 1.11
  std::uint8_t subclass = 0;
  std::uint8_t prog_if = 0;
  std::uint8_t header_type = 0;  // without the multi-function bit; 0xff if unknown

  // From pci.ids; empty when the ID is unknown or names were not requested.
  std::string vendor_name;
  std::string device_name;
  std::string class_name;
  std::string subsystem_name;         // the subsystem (card) name
  std::string subsystem_vendor_name;  // the subsystem vendor's name

  // The slot's name where the platform describes one (<sysfs>/bus/pci/slots/NAME/address
  // naming this device's domain, bus and device: hot-plug and firmware-described slots).
  std::optional<std::string> physical_slot;

  std::vector<BarInfo> bars;  // implemented BARs only, by index
  std::optional<RomInfo> rom;
  // Filled when DiscoveryOptions::read_bindings is set.
  std::optional<std::string> driver;  // the bound kernel driver
  std::optional<int> iommu_group;
  std::optional<int> numa_node;       // nullopt where the kernel reports -1
  std::optional<LinkInfo> link;       // a VF's is its PF's (LinkInfo::Source::physical_function)

  // SR-IOV (PCIe Base Spec 6.0, 9): a virtual function names its physical function (the
  // <device>/physfn link); a physical function lists its enabled VFs (virtfnN links, in
  // VF order) and its VF counts. A VF's config-space IDs read 0xffff by specification;
  // vendor_id/device_id above are its real IDs, from sysfs.
  std::optional<Bdf> physical_function;
  std::vector<Bdf> virtual_functions;
  std::optional<SriovInfo> sriov;

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
  const BarInfo* find_bar(unsigned index) const;
};

struct DiscoveryOptions {
  SysfsPaths paths;
  // lspci's -s syntax: [[[[<domain>]:]<bus>]:][<device>][.[<func>]]; empty matches all.
  std::string slot_filter;
  // lspci's -d syntax: [<vendor>]:[<device>][:<class>[:<prog-if>]]; empty matches all.
  std::string id_filter;
  // Only devices bound to this driver; empty matches all.
  std::string driver_filter;
  // Look up names in pci.ids (libpci's default path unless pci_ids_path is set).
  bool resolve_names = true;
  std::string pci_ids_path;
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
