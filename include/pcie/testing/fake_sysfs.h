// A fake sysfs PCI tree in a temporary directory, for testing drivers and tools without
// hardware. It writes what the kernel exports under /sys/bus/pci/devices/<bdf>/ that
// libpci and this library read: config, resource, resourceN (and resourceN_wc for
// prefetchable BARs) files of the BAR's size, vendor/device/class/... attributes, the
// driver and iommu_group links, numa_node, and the link speed/width files.
//
// Point the library at it with FakeSysfs::paths(), or lspci with
// `lspci -A linux-sysfs -O sysfs.path=<pci_root()>`. BAR files are ordinary (sparse)
// files: mapping and writing them works and changes only the file.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "pcie/bdf.h"
#include "pcie/discovery.h"
#include "pcie/error.h"
#include "pcie/sysfs_paths.h"

namespace pcie::testing {

// One BAR of a FakeDevice: written to its BAR register(s) in config space, its line of the
// `resource` file, and a resourceN file of `size` bytes.
struct FakeBar {
  // A 32-bit or 64-bit memory BAR, or an I/O BAR (PCI 3.0, 6.2.5.1).
  enum class Kind { memory32, memory64, io };
  unsigned index = 0;            // a 64-bit BAR also occupies index + 1
  Kind kind = Kind::memory32;    // the BAR's type bits and the resource flags follow it
  std::uint64_t size = 0;        // a power of two
  std::uint64_t bus_address = 0;  // a multiple of `size`; the BAR's and resource's address
  bool prefetchable = false;     // memory BARs: BAR bit 3, and a resourceN_wc file too
};

// A standard capability to lay out in a FakeDevice's config space, from 0x40 on.
struct FakeCapability {
  std::uint8_t id = 0;             // a pcie::cap ID
  std::vector<std::uint8_t> body;  // bytes after the 2-byte header (id, next)
};

// An extended capability to lay out in a FakeDevice's config space, from 0x100 on.
struct FakeExtendedCapability {
  std::uint16_t id = 0;            // a pcie::ext_cap ID
  std::uint8_t version = 1;        // the header's 4-bit Capability Version
  std::vector<std::uint8_t> body;  // bytes after the 4-byte header
};

// Link encodings as in the Link Capabilities/Status registers (1 = 2.5 GT/s ... 6 = 64).
struct FakeLink {
  std::uint8_t current_speed = 0;  // Link Status: Current Link Speed; current_link_speed
  std::uint8_t current_width = 0;  // Link Status: Negotiated Link Width, in lanes
  std::uint8_t max_speed = 0;      // Link Capabilities: Max Link Speed; max_link_speed
  std::uint8_t max_width = 0;      // Link Capabilities: Maximum Link Width, in lanes
};

// An SR-IOV physical function's VF settings: its SR-IOV extended capability (PCIe Base
// Spec 6.0, 9.3.3) and the sriov_totalvfs/sriov_numvfs attributes.
struct FakeSriov {
  std::uint16_t total_vfs = 0;  // TotalVFs (+0x0e) and sriov_totalvfs
  std::uint16_t num_vfs = 0;    // NumVFs (+0x10) and sriov_numvfs; VF Enable is always set
  bool vf_memory_space_enable = true;  // SR-IOV Control bit 3: the VFs decode their BARs
};

// A PCI function for FakeSysfs::add_device(): the IDs, BARs, capabilities and links from
// which its config space (build_config()) and its sysfs files are written. The command
// register enables memory and I/O decoding for the kinds of BARs it has (a VF's: neither).
struct FakeDevice {
  Bdf bdf;                                // its address, and its directory's name
  std::uint16_t vendor_id = 0;            // config 0x00 and the vendor file
  std::uint16_t device_id = 0;            // config 0x02 and the device file
  std::uint16_t subsystem_vendor_id = 0;  // config 0x2c and the subsystem_vendor file
  std::uint16_t subsystem_id = 0;         // config 0x2e and the subsystem_device file
  std::uint8_t revision = 0;              // config 0x08 and the revision file
  std::uint32_t class_code = 0;  // 24 bits: base class, subclass, prog-if (0x010802)
  std::uint8_t header_type = 0;  // config 0x0e: cfg::kHeaderType* (bit 7: multi-function)
  // Written at 0x18-0x1a (a bridge's bus numbers; set header_type to 1 or 2 with them).
  std::optional<BridgeBuses> bridge_buses;
  std::uint8_t interrupt_pin = 0;  // config 0x3d: 0 none, 1-4 INTA#-INTD# (irq file: 11)
  std::vector<FakeBar> bars;       // in slots 0-5, none shared (a 64-bit BAR takes two)
  std::optional<std::uint64_t> rom_size;       // an expansion ROM of this size
  std::optional<std::string> driver;           // a "driver" link to drivers/<name>
  std::optional<int> iommu_group;              // an "iommu_group" link to kernel/iommu_groups/<n>
  std::optional<std::string> physical_slot;    // bus/pci/slots/<name>/address naming the device
  int numa_node = -1;                          // the numa_node file; -1: no NUMA node
  std::vector<FakeCapability> capabilities;    // laid out from 0x40
  // With a link, a PCI Express capability (endpoint) is appended and the sysfs link files
  // are written.
  std::optional<FakeLink> link;
  std::vector<FakeExtendedCapability> extended_capabilities;  // laid out from 0x100
  // 256, or 4096; 0 picks 4096 when there is a link or extended capabilities.
  std::size_t config_size = 0;
  // A physical function: an SR-IOV capability is appended to the extended capabilities.
  std::optional<FakeSriov> sriov;
  // A virtual function of this (already added) physical function: as in real hardware its
  // config space Vendor and Device IDs read 0xffff and its command register leaves memory
  // decoding to the PF (SR-IOV 1.1, 3.4.1); the sysfs vendor/device files hold the real
  // IDs; a "physfn" link points at the PF and the PF gets the next "virtfnN" link.
  std::optional<Bdf> physical_function;
};

// A block device as the kernel exports it (<dir>/<name>/{dev,size,holders/}, a link in
// /sys/class/block), for tests of the unbind guard: disks below a PCI device at any depth,
// partitions, and virtual devices (device-mapper, md) that hold them.
struct FakeBlockDevice {
  std::string name;          // "nvme0n1", "sda1", "dm-0", "md0"
  std::string dev;           // "major:minor", as in <name>/dev
  std::optional<Bdf> owner;  // the PCI device it sits below; nullopt: devices/virtual/block
  std::string path;          // directories between the owner and <name>: "nvme/nvme0",
                             // "host0/target0:0:0/0:0:0:0/block/sda" (a partition of sda)
  std::string dm_name;       // a device-mapper device's name (<name>/dm/name, /dev/mapper/NAME)
};

// A fake sysfs tree in a temporary directory, as the file comment describes, removed when
// the object that owns it is destroyed. Movable, not copyable. Methods fail with io_error
// when a file cannot be written, invalid_argument for a device that exists or cannot be
// laid out.
class FakeSysfs {
 public:
  // Creates an empty tree in a new directory under $TEST_TMPDIR (or $TMPDIR, or /tmp).
  static Result<FakeSysfs> create();

  // Takes over `other`'s tree; `other` then owns none and removes nothing.
  FakeSysfs(FakeSysfs&& other) noexcept;
  // Removes this object's tree, then takes over `other`'s; `other` then owns none.
  FakeSysfs& operator=(FakeSysfs&& other) noexcept;
  // Not copyable: one object owns the tree.
  FakeSysfs(const FakeSysfs&) = delete;
  // Not copy-assignable.
  FakeSysfs& operator=(const FakeSysfs&) = delete;
  // Removes the whole tree.
  ~FakeSysfs();

  // Writes the device's directory. Fails on a duplicate BDF, a BAR that is not a power of
  // two, or capabilities that do not fit in config space.
  Result<void> add_device(const FakeDevice& device);

  // Replaces the device's config file with `bytes`: for malformed-config tests (loops,
  // bad pointers, truncation, all ones).
  Result<void> write_config(const Bdf& bdf, std::span<const std::uint8_t> bytes);
  // Writes (or replaces) any file in the device directory.
  Result<void> write_device_file(const Bdf& bdf, const std::string& name, const std::string& contents);
  // Writes `bytes` at `offset` into a device file without truncating it: preloads what a
  // device would answer in a BAR file ("resource0").
  Result<void> write_device_bytes(const Bdf& bdf, const std::string& name, std::uint64_t offset,
                                  std::span<const std::uint8_t> bytes);
  // Reads `count` bytes at `offset` of a device file: what a driver wrote through a mapping.
  Result<std::vector<std::uint8_t>> read_device_bytes(const Bdf& bdf, const std::string& name,
                                                      std::uint64_t offset, std::size_t count) const;
  // Writes the lockdown file, e.g. "none [integrity] confidentiality".
  Result<void> set_lockdown(const std::string& contents);

  // Storage and network for the unbind guard's tests. add_block_device writes the device
  // and its /sys/class/block link; add_holder makes `holder` hold `held` (LVM, dm-crypt,
  // md: <held>/holders/<holder>); add_network_interface writes <owner>/<path>/net/<name>
  // with `flags` (e.g. "0x1003", up) and its /sys/class/net link. The mount table
  // (/proc/self/mountinfo format) and swap list (/proc/swaps format) start with a root on
  // a device of no PCI device and no swap.
  Result<void> add_block_device(const FakeBlockDevice& device);
  // See add_block_device(): `held` and `holder` are names under /sys/class/block, added
  // before.
  Result<void> add_holder(const std::string& held, const std::string& holder);
  // See add_block_device(); no flags file is written when `flags` is empty.
  Result<void> add_network_interface(const Bdf& owner, const std::string& path, const std::string& name,
                                     const std::string& flags);
  // Replaces the mount table (<directory>/proc/self/mountinfo).
  Result<void> set_mountinfo(const std::string& contents);
  // Replaces the swap list (<directory>/proc/swaps).
  Result<void> set_swaps(const std::string& contents);
  // The kernel's resource tree (/proc/iomem format; absent until set).
  Result<void> set_iomem(const std::string& contents);
  // What the kernel's x86 PAT table lists (pat_memtype_list: "PAT: [mem 0x..-0x..] type"
  // lines); absent until set, as without debugfs. And the kernel command line.
  Result<void> set_pat_memtypes(const std::string& contents);
  // Replaces <directory>/proc/cmdline (at first "BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro
  // quiet").
  Result<void> set_kernel_cmdline(const std::string& contents);

  // Gives up ownership: the tree stays on disk after this object is destroyed. Returns
  // the directory (for demos and for handing a tree to another process).
  std::string release() { return std::exchange(directory_, {}); }

  // The directory holding the whole tree.
  const std::string& directory() const { return directory_; }
  // <directory>/sys/bus/pci: what libpci calls sysfs.path.
  std::string pci_root() const;
  // Paths for the library, lockdown file included.
  SysfsPaths paths() const;
  // <pci_root()>/devices/<bdf>: the device's directory (whether or not it was added).
  std::string device_dir(const Bdf& bdf) const;

  // The config space add_device() writes for `device`.
  static Result<std::vector<std::uint8_t>> build_config(const FakeDevice& device);

 private:
  explicit FakeSysfs(std::string directory) : directory_(std::move(directory)) {}
  std::string directory_;
};

// The test VM's device set at fixed addresses, as pcie-fake-tree and the tests use it.
inline const Bdf kVmEdu{0, 0, 3, 0};         // 0000:00:03.0, qemu_edu()
inline const Bdf kVmIvshmem{0, 0, 4, 0};     // 0000:00:04.0, qemu_ivshmem()
inline const Bdf kVmPciTestdev{0, 0, 5, 0};  // 0000:00:05.0, qemu_pci_testdev()
inline const Bdf kVmNvme{0, 1, 0, 0};        // 0000:01:00.0, qemu_nvme()

// A tree with qemu_edu, qemu_ivshmem, qemu_pci_testdev and qemu_nvme at the addresses
// above; edu's BAR0 answers its identification register (0x00) with 0x010000ed.
Result<FakeSysfs> make_vm_tree();

// Device shapes modelled on the QEMU devices the test VM uses, for tests and demos.
FakeDevice qemu_edu(const Bdf& bdf);            // 1234:11e8, 1 MiB BAR0, MSI
FakeDevice qemu_ivshmem(const Bdf& bdf);        // 1af4:1110, BAR0 256 B, 64-bit prefetchable BAR2
FakeDevice qemu_pci_testdev(const Bdf& bdf);    // 1b36:0005, 4 KiB BAR0, 256 B I/O BAR1
FakeDevice qemu_nvme(const Bdf& bdf);           // 1b36:0010, PCIe with link and extended caps
// An SR-IOV network controller pair modelled on Intel's X710: the PF (8086:1572, PCIe
// 8 GT/s x8, MSI-X, SR-IOV with `total_vfs`/`num_vfs`) and one of its VFs (8086:154c).
FakeDevice sriov_pf(const Bdf& bdf, std::uint16_t total_vfs, std::uint16_t num_vfs);
// The VF of sriov_pf() at `bdf`, whose PF is at `pf` (add the PF first): IDs 0xffff in
// config space, 8086:154c in the sysfs files, a "physfn" link to the PF.
FakeDevice sriov_vf(const Bdf& bdf, const Bdf& pf);

}  // namespace pcie::testing
