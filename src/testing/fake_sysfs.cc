#include "pcie/testing/fake_sysfs.h"

#include <fmt/format.h>
#include <stdlib.h>

#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "pcie/byte_order.h"
#include "pcie/capabilities.h"
#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/link.h"

namespace pcie::testing {
namespace fs = std::filesystem;
namespace {

// Kernel resource flags (include/linux/ioport.h) plus the BAR's low bits, as they appear
// in <device>/resource.
constexpr std::uint64_t kResourceIo = 0x100;
constexpr std::uint64_t kResourceMem = 0x200;
constexpr std::uint64_t kResourcePrefetch = 0x2000;
constexpr std::uint64_t kResourceReadonly = 0x4000;
constexpr std::uint64_t kResourceSizeAlign = 0x40000;
constexpr std::uint64_t kResourceMem64 = 0x100000;
constexpr std::uint64_t kRomBusAddress = 0xfe000000;
constexpr std::uint32_t kBarSpaceIo = 0x1;  // BAR bit 0: I/O space (PCI 3.0, 6.2.5.1)
constexpr std::size_t kResourceLines = 13;  // 6 BARs, ROM, 6 SR-IOV BARs
constexpr std::size_t kPciExpressCapabilityBody = 0x3c - 2;

Error fake_error(std::string operation, std::string object, std::string reason) {
  return make_error(Errc::invalid_argument, std::move(operation), std::move(object), std::move(reason));
}

void store16(std::span<std::uint8_t> bytes, std::size_t offset, std::uint16_t value) { store_le(bytes, offset, 2, value); }
void store32(std::span<std::uint8_t> bytes, std::size_t offset, std::uint32_t value) { store_le(bytes, offset, 4, value); }

Result<void> write_file(const fs::path& path, std::string_view contents) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(contents.data(), static_cast<std::streamsize>(contents.size()));
  out.close();
  if (!out) return std::unexpected(make_error(Errc::io_error, "write", path.string(), "cannot write file"));
  return {};
}

Result<void> check_fs(const std::error_code& ec, std::string operation, const fs::path& path) {
  if (ec) return std::unexpected(make_error(Errc::io_error, std::move(operation), path.string(), ec.message()));
  return {};
}

std::uint64_t resource_flags(const FakeBar& bar) {
  switch (bar.kind) {
    case FakeBar::Kind::io: return kResourceIo | kResourceSizeAlign | kBarSpaceIo;
    case FakeBar::Kind::memory32:
      return kResourceMem | kResourceSizeAlign | (bar.prefetchable ? kResourcePrefetch | 0x8 : 0);
    case FakeBar::Kind::memory64:
      return kResourceMem | kResourceSizeAlign | kResourceMem64 | 0x4 |
             (bar.prefetchable ? kResourcePrefetch | 0x8 : 0);
  }
  return 0;
}

std::string link_speed_text(std::uint8_t encoding) {
  const auto speed = link_speed_gts(encoding);
  return speed ? fmt::format("{:.1f} GT/s PCIe\n", *speed) : "Unknown\n";
}

Result<void> lay_out_bars(const FakeDevice& device, std::vector<std::uint8_t>& config) {
  unsigned used = 0;
  for (const FakeBar& bar : device.bars) {
    const std::string object = fmt::format("{} BAR{}", device.bdf.to_string(), bar.index);
    const unsigned slots = bar.kind == FakeBar::Kind::memory64 ? 2 : 1;
    if (bar.index + slots > kBarCount) return std::unexpected(fake_error("lay out", object, "BAR index out of range"));
    const unsigned mask = ((1u << slots) - 1) << bar.index;
    if (used & mask) return std::unexpected(fake_error("lay out", object, "BAR slots overlap"));
    used |= mask;
    if (!std::has_single_bit(bar.size)) return std::unexpected(fake_error("lay out", object, "size is not a power of two"));
    if (bar.bus_address % bar.size != 0) return std::unexpected(fake_error("lay out", object, "address not aligned to size"));
    const std::size_t reg = cfg::kBar0 + 4 * bar.index;
    switch (bar.kind) {
      case FakeBar::Kind::io:
        store32(config, reg, static_cast<std::uint32_t>(bar.bus_address) | kBarSpaceIo);
        break;
      case FakeBar::Kind::memory32:
        store32(config, reg, static_cast<std::uint32_t>(bar.bus_address) | (bar.prefetchable ? 0x8u : 0u));
        break;
      case FakeBar::Kind::memory64:
        store32(config, reg, static_cast<std::uint32_t>(bar.bus_address) | 0x4u | (bar.prefetchable ? 0x8u : 0u));
        store32(config, reg + 4, static_cast<std::uint32_t>(bar.bus_address >> 32));
        break;
    }
  }
  return {};
}

std::vector<FakeCapability> standard_capabilities_of(const FakeDevice& device) {
  std::vector<FakeCapability> capabilities = device.capabilities;
  if (device.link) {
    FakeCapability express{cap::kPciExpress, std::vector<std::uint8_t>(kPciExpressCapabilityBody)};
    const FakeLink& link = *device.link;
    // Register offsets count from the capability header, the body from just after it.
    auto put16 = [&](std::size_t reg, std::uint16_t v) { store16(express.body, reg - 2, v); };
    put16(pcie_cap::kCapabilities, 0x0002);  // version 2, endpoint
    put16(pcie_cap::kLinkCapabilities, static_cast<std::uint16_t>(link.max_speed | link.max_width << 4));
    put16(pcie_cap::kLinkStatus, static_cast<std::uint16_t>(link.current_speed | link.current_width << 4));
    // Link Capabilities 2 (+0x2c): supported speeds vector, bits 7:1, up to the max speed.
    put16(0x2c, static_cast<std::uint16_t>(((1u << link.max_speed) - 1) << 1));
    capabilities.push_back(std::move(express));
  }
  return capabilities;
}

// The SR-IOV capability body (after the 4-byte header; PCIe Base Spec 6.0, 9.3.3): control
// at +0x08, TotalVFs at +0x0e, NumVFs at +0x10, First VF Offset +0x14, VF Stride +0x16.
std::vector<FakeExtendedCapability> extended_capabilities_of(const FakeDevice& device) {
  std::vector<FakeExtendedCapability> capabilities = device.extended_capabilities;
  if (device.sriov) {
    FakeExtendedCapability sriov{ext_cap::kSingleRootIov, 1, std::vector<std::uint8_t>(0x40 - 4)};
    auto put16 = [&](std::size_t reg, std::uint16_t v) { store16(sriov.body, reg - 4, v); };
    put16(0x08, static_cast<std::uint16_t>(0x1 | (device.sriov->vf_memory_space_enable ? 0x8 : 0)));  // VF Enable, VF MSE
    put16(0x0e, device.sriov->total_vfs);
    put16(0x10, device.sriov->num_vfs);
    put16(0x14, 0x10);
    put16(0x16, 0x1);
    capabilities.push_back(std::move(sriov));
  }
  return capabilities;
}

Result<void> lay_out_capabilities(const FakeDevice& device, std::vector<std::uint8_t>& config) {
  const auto capabilities = standard_capabilities_of(device);
  std::size_t offset = 0x40;
  std::size_t previous_next = cfg::kCapabilityPointer;
  for (const FakeCapability& capability : capabilities) {
    const std::size_t length = 2 + capability.body.size();
    if (offset + length > cfg::kConventionalSize) {
      return std::unexpected(fake_error("lay out capabilities", device.bdf.to_string(), "capabilities overflow 256 bytes"));
    }
    config[previous_next] = static_cast<std::uint8_t>(offset);
    config[offset] = capability.id;
    std::copy(capability.body.begin(), capability.body.end(), config.begin() + static_cast<long>(offset + 2));
    previous_next = offset + 1;
    offset = (offset + length + 3) & ~std::size_t{3};
  }
  if (!capabilities.empty()) store16(config, cfg::kStatus, cfg::kStatusCapabilityList);

  const auto extended = extended_capabilities_of(device);
  offset = 0x100;
  for (std::size_t i = 0; i < extended.size(); ++i) {
    const FakeExtendedCapability& capability = extended[i];
    const std::size_t length = 4 + capability.body.size();
    const std::size_t next = (offset + length + 3) & ~std::size_t{3};
    if (offset + length > config.size() || (i + 1 < extended.size() && next >= config.size())) {
      return std::unexpected(fake_error("lay out capabilities", device.bdf.to_string(), "extended capabilities overflow config space"));
    }
    const std::uint32_t next_field = i + 1 < extended.size() ? static_cast<std::uint32_t>(next) : 0;
    store32(config, offset, capability.id | static_cast<std::uint32_t>(capability.version & 0xf) << 16 | next_field << 20);
    std::copy(capability.body.begin(), capability.body.end(), config.begin() + static_cast<long>(offset + 4));
    offset = next;
  }
  return {};
}

Result<std::size_t> config_size_of(const FakeDevice& device) {
  std::size_t size = device.config_size;
  if (size == 0) {
    size = (device.link || !device.extended_capabilities.empty() || device.sriov) ? cfg::kExtendedSize
                                                                                  : cfg::kConventionalSize;
  }
  if (size != cfg::kConventionalSize && size != cfg::kExtendedSize) {
    return std::unexpected(fake_error("build config", device.bdf.to_string(), "config_size must be 256 or 4096"));
  }
  return size;
}

std::uint16_t command_of(const FakeDevice& device) {
  if (device.physical_function) return 0;
  std::uint16_t command = 0;
  for (const FakeBar& bar : device.bars) {
    command |= bar.kind == FakeBar::Kind::io ? cfg::kCommandIoSpace : cfg::kCommandMemorySpace;
  }
  return command;
}

// A VF's IDs read all ones, its Memory Space Enable and its BARs are read-only zero:
// the PF's SR-IOV capability decides and holds the VF BARs (SR-IOV 1.1, 3.4.1).
void store_header(const FakeDevice& device, std::vector<std::uint8_t>& config) {
  const bool virtual_function = device.physical_function.has_value();
  store16(config, cfg::kVendorId, virtual_function ? 0xffff : device.vendor_id);
  store16(config, cfg::kDeviceId, virtual_function ? 0xffff : device.device_id);
  store16(config, cfg::kCommand, command_of(device));
  config[cfg::kRevisionId] = device.revision;
  config[cfg::kClassCode] = static_cast<std::uint8_t>(device.class_code);
  config[cfg::kClassCode + 1] = static_cast<std::uint8_t>(device.class_code >> 8);
  config[cfg::kClassCode + 2] = static_cast<std::uint8_t>(device.class_code >> 16);
  config[cfg::kHeaderType] = device.header_type;
  if (device.bridge_buses) {
    config[cfg::kPrimaryBus] = device.bridge_buses->primary;
    config[cfg::kSecondaryBus] = device.bridge_buses->secondary;
    config[cfg::kSubordinateBus] = device.bridge_buses->subordinate;
  }
}

std::string resource_table(const FakeDevice& device) {
  std::vector<std::string> lines(kResourceLines, fmt::format("0x{:016x} 0x{:016x} 0x{:016x}\n", 0, 0, 0));
  for (const FakeBar& bar : device.bars) {
    lines[bar.index] = fmt::format("0x{:016x} 0x{:016x} 0x{:016x}\n", bar.bus_address,
                                   bar.bus_address + bar.size - 1, resource_flags(bar));
  }
  if (device.rom_size) {
    lines[6] = fmt::format("0x{:016x} 0x{:016x} 0x{:016x}\n", kRomBusAddress, kRomBusAddress + *device.rom_size - 1,
                           kResourceMem | kResourceReadonly | kResourceSizeAlign);
  }
  std::string text;
  for (const std::string& line : lines) text += line;
  return text;
}

}  // namespace

Result<FakeSysfs> FakeSysfs::create() {
  const char* base = std::getenv("TEST_TMPDIR");
  if (base == nullptr) base = std::getenv("TMPDIR");
  if (base == nullptr) base = "/tmp";
  std::string pattern = std::string(base) + "/pcie-fake-sysfs-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) {
    return std::unexpected(make_errno_error(errno, "create fake sysfs in", base));
  }
  FakeSysfs tree(pattern);
  std::error_code ec;
  fs::create_directories(tree.pci_root() + "/devices", ec);
  if (auto ok = check_fs(ec, "create", tree.pci_root()); !ok) return std::unexpected(ok.error());
  fs::create_directories(tree.pci_root() + "/drivers", ec);
  fs::create_directories(tree.directory_ + "/sys/kernel/iommu_groups", ec);
  fs::create_directories(tree.directory_ + "/sys/kernel/security", ec);
  if (auto ok = check_fs(ec, "create", tree.directory_); !ok) return std::unexpected(ok.error());
  if (auto ok = tree.set_lockdown("[none] integrity confidentiality\n"); !ok) return std::unexpected(ok.error());
  for (const char* dir : {"/sys/class/block", "/sys/class/net", "/sys/devices/virtual/block", "/proc/self"}) {
    fs::create_directories(tree.directory_ + dir, ec);
  }
  if (auto ok = check_fs(ec, "create", tree.directory_); !ok) return std::unexpected(ok.error());
  if (auto ok = tree.set_mountinfo("22 1 252:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw\n"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = tree.set_kernel_cmdline("BOOT_IMAGE=/vmlinuz root=/dev/vda1 ro quiet\n"); !ok) {
    return std::unexpected(ok.error());
  }
  if (auto ok = tree.set_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"); !ok) {
    return std::unexpected(ok.error());
  }
  // Written by binding code; in a fake tree it only records the last write.
  if (auto ok = write_file(tree.pci_root() + "/drivers_probe", ""); !ok) return std::unexpected(ok.error());
  return tree;
}

FakeSysfs::FakeSysfs(FakeSysfs&& other) noexcept : directory_(std::exchange(other.directory_, {})) {}

FakeSysfs& FakeSysfs::operator=(FakeSysfs&& other) noexcept {
  if (this != &other) {
    std::error_code ec;
    if (!directory_.empty()) fs::remove_all(directory_, ec);
    directory_ = std::exchange(other.directory_, {});
  }
  return *this;
}

FakeSysfs::~FakeSysfs() {
  std::error_code ec;
  if (!directory_.empty()) fs::remove_all(directory_, ec);
}

std::string FakeSysfs::pci_root() const { return directory_ + "/sys/bus/pci"; }

SysfsPaths FakeSysfs::paths() const { return SysfsPaths::under(directory_ + "/sys", directory_ + "/proc"); }

Result<void> FakeSysfs::set_pat_memtypes(const std::string& contents) {
  std::error_code ec;
  fs::create_directories(directory_ + "/sys/kernel/debug/x86", ec);
  if (auto ok = check_fs(ec, "create", directory_ + "/sys/kernel/debug/x86"); !ok) return ok;
  return write_file(directory_ + "/sys/kernel/debug/x86/pat_memtype_list", contents);
}

Result<void> FakeSysfs::set_kernel_cmdline(const std::string& contents) {
  return write_file(directory_ + "/proc/cmdline", contents);
}

Result<void> FakeSysfs::add_block_device(const FakeBlockDevice& device) {
  const fs::path base = device.owner ? fs::path(device_dir(*device.owner)) : fs::path(directory_) / "sys/devices/virtual/block";
  const fs::path dir = base / device.path / device.name;
  const fs::path link = fs::path(directory_) / "sys/class/block" / device.name;
  std::error_code ec;
  if (fs::exists(link, ec)) return std::unexpected(fake_error("add block device", device.name, "already exists"));
  fs::create_directories(dir / "holders", ec);
  if (auto ok = check_fs(ec, "create", dir); !ok) return std::unexpected(ok.error());
  if (auto ok = write_file(dir / "dev", device.dev + "\n"); !ok) return std::unexpected(ok.error());
  if (auto ok = write_file(dir / "size", "2048\n"); !ok) return std::unexpected(ok.error());
  if (!device.dm_name.empty()) {
    fs::create_directories(dir / "dm", ec);
    if (auto ok = write_file(dir / "dm/name", device.dm_name + "\n"); !ok) return std::unexpected(ok.error());
  }
  fs::create_directory_symlink(fs::relative(dir, link.parent_path(), ec), link, ec);
  return check_fs(ec, "link block device", link);
}

Result<void> FakeSysfs::add_holder(const std::string& held, const std::string& holder) {
  std::error_code ec;
  const fs::path class_block = fs::path(directory_) / "sys/class/block";
  const fs::path held_dir = fs::canonical(class_block / held, ec);
  if (auto ok = check_fs(ec, "find block device", class_block / held); !ok) return std::unexpected(ok.error());
  const fs::path holder_dir = fs::canonical(class_block / holder, ec);
  if (auto ok = check_fs(ec, "find block device", class_block / holder); !ok) return std::unexpected(ok.error());
  fs::create_directory_symlink(fs::relative(holder_dir, held_dir / "holders", ec), held_dir / "holders" / holder, ec);
  return check_fs(ec, "link holder", held_dir / "holders" / holder);
}

Result<void> FakeSysfs::add_network_interface(const Bdf& owner, const std::string& path, const std::string& name,
                                              const std::string& flags) {
  const fs::path dir = fs::path(device_dir(owner)) / path / "net" / name;
  const fs::path link = fs::path(directory_) / "sys/class/net" / name;
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (auto ok = check_fs(ec, "create", dir); !ok) return std::unexpected(ok.error());
  if (!flags.empty()) {
    if (auto ok = write_file(dir / "flags", flags + "\n"); !ok) return std::unexpected(ok.error());
  }
  fs::create_directory_symlink(fs::relative(dir, link.parent_path(), ec), link, ec);
  return check_fs(ec, "link network interface", link);
}

Result<void> FakeSysfs::set_mountinfo(const std::string& contents) {
  return write_file(directory_ + "/proc/self/mountinfo", contents);
}

Result<void> FakeSysfs::set_iomem(const std::string& contents) { return write_file(directory_ + "/proc/iomem", contents); }

Result<void> FakeSysfs::set_swaps(const std::string& contents) { return write_file(directory_ + "/proc/swaps", contents); }

std::string FakeSysfs::device_dir(const Bdf& bdf) const { return paths().device_dir(bdf); }

namespace {

using FileContents = std::vector<std::pair<std::string, std::string>>;

Result<void> write_files(const fs::path& dir, const FileContents& files) {
  for (const auto& [name, contents] : files) {
    if (auto ok = write_file(dir / name, contents); !ok) return ok;
  }
  return {};
}

FileContents attribute_files(const FakeDevice& device, const std::vector<std::uint8_t>& config) {
  return {
      {"config", std::string(config.begin(), config.end())},
      {"resource", resource_table(device)},
      {"vendor", fmt::format("0x{:04x}\n", device.vendor_id)},
      {"device", fmt::format("0x{:04x}\n", device.device_id)},
      {"subsystem_vendor", fmt::format("0x{:04x}\n", device.subsystem_vendor_id)},
      {"subsystem_device", fmt::format("0x{:04x}\n", device.subsystem_id)},
      {"class", fmt::format("0x{:06x}\n", device.class_code)},
      {"revision", fmt::format("0x{:02x}\n", device.revision)},
      {"irq", device.interrupt_pin != 0 ? "11\n" : "0\n"},
      {"numa_node", fmt::format("{}\n", device.numa_node)},
      {"enable", "1\n"},
      {"driver_override", "(null)\n"},
      {"modalias", fmt::format("pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}\n", device.vendor_id,
                               device.device_id, device.subsystem_vendor_id, device.subsystem_id,
                               device.class_code >> 16, (device.class_code >> 8) & 0xff, device.class_code & 0xff)},
  };
}

Result<void> add_bar_files(const fs::path& dir, const FakeDevice& device) {
  std::error_code ec;
  for (const FakeBar& bar : device.bars) {
    std::vector<std::string> names = {fmt::format("resource{}", bar.index)};
    if (bar.prefetchable && bar.kind != FakeBar::Kind::io) names.push_back(fmt::format("resource{}_wc", bar.index));
    for (const std::string& name : names) {
      if (auto ok = write_file(dir / name, ""); !ok) return ok;
      fs::resize_file(dir / name, bar.size, ec);  // sparse: an 8 GiB BAR costs nothing
      if (auto ok = check_fs(ec, "size", dir / name); !ok) return ok;
    }
  }
  return {};
}

FileContents link_files(const FakeLink& link) {
  return {
      {"current_link_speed", link_speed_text(link.current_speed)},
      {"current_link_width", fmt::format("{}\n", link.current_width)},
      {"max_link_speed", link_speed_text(link.max_speed)},
      {"max_link_width", fmt::format("{}\n", link.max_width)},
  };
}

FileContents sriov_files(const FakeSriov& sriov) {
  return {{"sriov_totalvfs", fmt::format("{}\n", sriov.total_vfs)},
          {"sriov_numvfs", fmt::format("{}\n", sriov.num_vfs)}};
}

Result<void> add_driver_link(const FakeSysfs& tree, const fs::path& dir, const std::string& driver) {
  const fs::path driver_dir = fs::path(tree.pci_root()) / "drivers" / driver;
  std::error_code ec;
  fs::create_directories(driver_dir, ec);
  for (const char* attribute : {"bind", "unbind"}) {
    if (auto ok = write_file(driver_dir / attribute, ""); !ok) return ok;
  }
  // Relative links, as the kernel makes them: libpci resolves them against the device
  // directory.
  fs::create_directory_symlink(fs::relative(driver_dir, dir, ec), dir / "driver", ec);
  return check_fs(ec, "link driver of", dir);
}

// The kernel's pci_slot: <name>/address holds "domain:bus:device" (drivers/pci/slot.c).
Result<void> add_physical_slot(const FakeSysfs& tree, const Bdf& bdf, const std::string& slot) {
  const fs::path slot_dir = fs::path(tree.pci_root()) / "slots" / slot;
  std::error_code ec;
  fs::create_directories(slot_dir, ec);
  if (auto ok = check_fs(ec, "create", slot_dir.string()); !ok) return ok;
  const std::string address = fmt::format("{:04x}:{:02x}:{:02x}\n", bdf.domain, bdf.bus, bdf.device);
  return write_file(slot_dir / "address", address);
}

Result<void> link_physical_function(const FakeSysfs& tree, const fs::path& dir, const FakeDevice& device) {
  const fs::path pf_dir = tree.device_dir(*device.physical_function);
  std::error_code ec;
  if (!fs::is_directory(pf_dir, ec)) {
    return std::unexpected(fake_error("add device", device.bdf.to_string(), "its physical function does not exist"));
  }
  unsigned index = 0;
  while (fs::exists(pf_dir / fmt::format("virtfn{}", index), ec)) ++index;
  fs::create_directory_symlink(fs::relative(dir, pf_dir, ec), pf_dir / fmt::format("virtfn{}", index), ec);
  fs::create_directory_symlink(fs::relative(pf_dir, dir, ec), dir / "physfn", ec);
  return check_fs(ec, "link physical function of", dir);
}

Result<void> link_iommu_group(const FakeSysfs& tree, const fs::path& dir, const Bdf& bdf, int group) {
  const fs::path group_dir = fs::path(tree.directory()) / "sys/kernel/iommu_groups" / std::to_string(group);
  std::error_code ec;
  fs::create_directories(group_dir / "devices", ec);
  fs::create_directory_symlink(fs::relative(dir, group_dir / "devices", ec), group_dir / "devices" / bdf.to_string(), ec);
  fs::create_directory_symlink(fs::relative(group_dir, dir, ec), dir / "iommu_group", ec);
  return check_fs(ec, "link IOMMU group of", dir);
}

}  // namespace

Result<std::vector<std::uint8_t>> FakeSysfs::build_config(const FakeDevice& device) {
  auto size = config_size_of(device);
  if (!size) return std::unexpected(size.error());
  std::vector<std::uint8_t> config(*size, 0);
  store_header(device, config);
  if (auto ok = lay_out_bars(device, config); !ok) return std::unexpected(ok.error());
  if (device.physical_function) {
    for (std::size_t reg = cfg::kBar0; reg < cfg::kBar0 + 4 * kBarCount; reg += 4) store32(config, reg, 0);
  }
  store16(config, cfg::kSubsystemVendorId, device.subsystem_vendor_id);
  store16(config, cfg::kSubsystemId, device.subsystem_id);
  if (device.rom_size) store32(config, cfg::kExpansionRom, static_cast<std::uint32_t>(kRomBusAddress));
  config[cfg::kInterruptPin] = device.interrupt_pin;
  if (auto ok = lay_out_capabilities(device, config); !ok) return std::unexpected(ok.error());
  return config;
}

Result<void> FakeSysfs::add_device(const FakeDevice& device) {
  const fs::path dir = device_dir(device.bdf);
  std::error_code ec;
  if (fs::exists(dir, ec)) return std::unexpected(fake_error("add device", device.bdf.to_string(), "already exists"));
  auto config = build_config(device);
  if (!config) return std::unexpected(config.error());
  fs::create_directories(dir, ec);
  if (auto ok = check_fs(ec, "create", dir); !ok) return ok;
  if (auto ok = write_files(dir, attribute_files(device, *config)); !ok) return ok;
  if (auto ok = add_bar_files(dir, device); !ok) return ok;
  if (device.rom_size) {
    if (auto ok = write_file(dir / "rom", ""); !ok) return ok;
  }
  if (device.link) {
    if (auto ok = write_files(dir, link_files(*device.link)); !ok) return ok;
  }
  if (device.driver) {
    if (auto ok = add_driver_link(*this, dir, *device.driver); !ok) return ok;
  }
  if (device.physical_slot) {
    if (auto ok = add_physical_slot(*this, device.bdf, *device.physical_slot); !ok) return ok;
  }
  if (device.sriov) {
    if (auto ok = write_files(dir, sriov_files(*device.sriov)); !ok) return ok;
  }
  if (device.physical_function) {
    if (auto ok = link_physical_function(*this, dir, device); !ok) return ok;
  }
  if (device.iommu_group) return link_iommu_group(*this, dir, device.bdf, *device.iommu_group);
  return {};
}

Result<void> FakeSysfs::write_config(const Bdf& bdf, std::span<const std::uint8_t> bytes) {
  return write_file(fs::path(device_dir(bdf)) / "config",
                    std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
}

Result<void> FakeSysfs::write_device_file(const Bdf& bdf, const std::string& name, const std::string& contents) {
  return write_file(fs::path(device_dir(bdf)) / name, contents);
}

Result<void> FakeSysfs::write_device_bytes(const Bdf& bdf, const std::string& name, std::uint64_t offset,
                                           std::span<const std::uint8_t> bytes) {
  const fs::path path = fs::path(device_dir(bdf)) / name;
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(offset));
  file.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  file.close();
  if (!file) return std::unexpected(make_error(Errc::io_error, "write", path.string(), "cannot write file"));
  return {};
}

Result<std::vector<std::uint8_t>> FakeSysfs::read_device_bytes(const Bdf& bdf, const std::string& name,
                                                               std::uint64_t offset, std::size_t count) const {
  const fs::path path = fs::path(device_dir(bdf)) / name;
  std::ifstream file(path, std::ios::binary);
  file.seekg(static_cast<std::streamoff>(offset));
  std::vector<std::uint8_t> bytes(count);
  file.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(count));
  if (!file) return std::unexpected(make_error(Errc::io_error, "read", path.string(), "cannot read that range"));
  return bytes;
}

Result<void> FakeSysfs::set_lockdown(const std::string& contents) {
  return write_file(directory_ + "/sys/kernel/security/lockdown", contents);
}

Result<FakeSysfs> make_vm_tree() {
  auto tree = FakeSysfs::create();
  if (!tree) return std::unexpected(tree.error());
  for (const FakeDevice& device : {qemu_edu(kVmEdu), qemu_ivshmem(kVmIvshmem), qemu_pci_testdev(kVmPciTestdev),
                                   qemu_nvme(kVmNvme)}) {
    if (auto added = tree->add_device(device); !added) return std::unexpected(added.error());
  }
  // edu's identification register (QEMU hw/misc/edu.c), little-endian.
  const std::uint8_t edu_id[] = {0xed, 0x00, 0x00, 0x01};
  if (auto written = tree->write_device_bytes(kVmEdu, "resource0", 0, edu_id); !written) {
    return std::unexpected(written.error());
  }
  return tree;
}

FakeDevice qemu_edu(const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x1234;
  device.device_id = 0x11e8;
  device.subsystem_vendor_id = 0x1af4;
  device.subsystem_id = 0x1100;
  device.revision = 0x10;
  device.class_code = 0x00ff00;
  device.interrupt_pin = 1;
  device.bars = {{0, FakeBar::Kind::memory32, 1u << 20, 0xfea00000, false}};
  device.capabilities = {{cap::kMsi, std::vector<std::uint8_t>(12)}};
  device.iommu_group = 5;
  return device;
}

FakeDevice qemu_ivshmem(const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x1af4;
  device.device_id = 0x1110;
  device.subsystem_vendor_id = 0x1af4;
  device.subsystem_id = 0x1100;
  device.revision = 0x01;
  device.class_code = 0x050000;
  device.bars = {{0, FakeBar::Kind::memory32, 256, 0xfeb00000, false},
                 {2, FakeBar::Kind::memory64, 4u << 20, 0x800000000, true}};
  device.iommu_group = 6;
  return device;
}

FakeDevice qemu_pci_testdev(const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x1b36;
  device.device_id = 0x0005;
  device.subsystem_vendor_id = 0x1af4;
  device.subsystem_id = 0x1100;
  device.class_code = 0x00ff00;
  device.bars = {{0, FakeBar::Kind::memory32, 4096, 0xfebf0000, false},
                 {1, FakeBar::Kind::io, 256, 0xc000, false}};
  device.iommu_group = 7;
  return device;
}

FakeDevice qemu_nvme(const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x1b36;
  device.device_id = 0x0010;
  device.subsystem_vendor_id = 0x1af4;
  device.subsystem_id = 0x1100;
  device.revision = 0x02;
  device.class_code = 0x010802;
  device.interrupt_pin = 1;
  device.bars = {{0, FakeBar::Kind::memory64, 16u << 10, 0xfebd0000, false}};
  device.capabilities = {{cap::kPowerManagement, std::vector<std::uint8_t>(6)},
                         {cap::kMsiX, std::vector<std::uint8_t>(10)}};
  device.link = FakeLink{.current_speed = 3, .current_width = 2, .max_speed = 3, .max_width = 4};
  device.extended_capabilities = {{ext_cap::kAdvancedErrorReporting, 2, std::vector<std::uint8_t>(0x44)},
                                  {ext_cap::kDeviceSerialNumber, 1, std::vector<std::uint8_t>(8)}};
  device.driver = "nvme";
  device.iommu_group = 8;
  device.numa_node = 0;
  return device;
}

FakeDevice sriov_pf(const Bdf& bdf, std::uint16_t total_vfs, std::uint16_t num_vfs) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x8086;
  device.device_id = 0x1572;
  device.subsystem_vendor_id = 0x8086;
  device.subsystem_id = 0x0000;
  device.revision = 0x02;
  device.class_code = 0x020000;
  device.interrupt_pin = 1;
  device.bars = {{0, FakeBar::Kind::memory64, 8u << 20, 0x38000000000, true},
                 {3, FakeBar::Kind::memory64, 32u << 10, 0x38001000000, true}};
  device.capabilities = {{cap::kPowerManagement, std::vector<std::uint8_t>(6)},
                         {cap::kMsiX, std::vector<std::uint8_t>(10)}};
  device.link = FakeLink{.current_speed = 3, .current_width = 8, .max_speed = 3, .max_width = 8};
  device.extended_capabilities = {{ext_cap::kAdvancedErrorReporting, 2, std::vector<std::uint8_t>(0x44)}};
  device.sriov = FakeSriov{total_vfs, num_vfs, true};
  device.driver = "i40e";
  device.iommu_group = 20;
  return device;
}

FakeDevice sriov_vf(const Bdf& bdf, const Bdf& pf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = 0x8086;
  device.device_id = 0x154c;
  device.subsystem_vendor_id = 0x8086;
  device.subsystem_id = 0x0000;
  device.revision = 0x02;
  device.class_code = 0x020000;
  device.bars = {{0, FakeBar::Kind::memory64, 64u << 10, 0x38002000000 + 0x100000ull * bdf.function, true},
                 {3, FakeBar::Kind::memory64, 16u << 10, 0x38003000000 + 0x100000ull * bdf.function, true}};
  device.capabilities = {{cap::kMsiX, std::vector<std::uint8_t>(10)}};
  // A VF's Link registers are reserved (read 0): its link is its PF's.
  device.link = FakeLink{};
  device.extended_capabilities = {{ext_cap::kAdvancedErrorReporting, 2, std::vector<std::uint8_t>(0x44)}};
  device.physical_function = pf;
  device.iommu_group = 21 + bdf.function;
  return device;
}

}  // namespace pcie::testing
