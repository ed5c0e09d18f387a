// Runs inside the test VM (tests/vm/pcie-vm), as root, against the real kernel's sysfs and
// QEMU's emulated devices: discovery checked against lspci, edu's registers through
// resource0, ivshmem's write-combined BAR, devices that drivers own (nvme; edu through
// vfio-pci or uio_pci_generic), an 8 GiB unbacked BAR.
// The host side (vm_sysfs_test.cc) boots the VM, collects these results and checks what
// the guest wrote into ivshmem's backing file.
//
// Flags (after GoogleTest's): --iommu=0|1, --bound-driver=DRIVER (the driver the VM bound
// to the second edu, 00:06.0), --ivshmem-size=BYTES, --membar=BYTES. The VM loads the nvme
// driver. GuestVfio.* needs the IOMMU (vfio-pci) and GuestVfioNoIommu.* its absence; the
// host filters out the one that does not apply.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "examples/edu/edu_driver.h"
#include "pcie/binding.h"
#include "pcie/config_space.h"
#include "pcie/discovery.h"
#include "pcie/memory_type.h"
#include "pcie/sysfs_bar.h"
#include "pcie/vfio.h"
#include "pcie/testing/fake_sysfs.h"
#include "tests/cli_helpers.h"
#include "tests/lspci_output.h"
#include "tests/vm/flags.h"
#include "tests/vm/ivshmem_pattern.h"

namespace pcie {
namespace {

struct GuestExpectations {
  bool iommu = true;
  std::string bound_driver;
  std::uint64_t ivshmem_size = 0;
  std::uint64_t membar = 0;
};
GuestExpectations g_expect;

// The devices pcie-vm puts in the VM, at the same addresses as the fake VM tree.
const Bdf kEdu = testing::kVmEdu;              // 00:03.0
const Bdf kIvshmem = testing::kVmIvshmem;      // 00:04.0
const Bdf kTestdev = testing::kVmPciTestdev;   // 00:05.0
const Bdf kBoundEdu{0, 0, 6, 0};               // 00:06.0, bound to a driver by pcie-vm
const Bdf kNvme = testing::kVmNvme;            // 01:00.0

// edu's registers: the reference driver's map (examples/edu/edu_driver.h).
constexpr std::uint64_t kEduId = examples::edu::kIdentification;
constexpr std::uint64_t kEduLiveness = examples::edu::kLiveness;
constexpr std::uint64_t kEduFactorial = examples::edu::kFactorial;
constexpr std::uint64_t kEduStatus = examples::edu::kStatus;
constexpr std::uint32_t kEduStatusComputing = examples::edu::kStatusComputing;
constexpr std::uint32_t kEduIdValue = 0x010000ed;

const DeviceInfo* find(const std::vector<DeviceInfo>& devices, const Bdf& bdf) {
  for (const DeviceInfo& device : devices) {
    if (device.bdf == bdf) return &device;
  }
  return nullptr;
}

std::vector<DeviceInfo> discover_all() {
  auto devices = discover();
  EXPECT_TRUE(devices) << devices.error().message();
  return devices ? *devices : std::vector<DeviceInfo>{};
}

void expect_bar(const DeviceInfo& device, unsigned index, BarInfo::Space space, std::uint64_t size,
                bool is_64bit, bool prefetchable) {
  SCOPED_TRACE(device.bdf.to_string() + " BAR" + std::to_string(index));
  const BarInfo* bar = device.find_bar(index);
  ASSERT_NE(bar, nullptr);
  EXPECT_EQ(bar->space, space);
  EXPECT_EQ(bar->size, size);
  EXPECT_EQ(bar->is_64bit, is_64bit);
  EXPECT_EQ(bar->prefetchable, prefetchable);
  EXPECT_NE(bar->bus_address, 0u) << "the firmware assigns every BAR an address";
}

std::string scratch_dir() {
  static const std::string dir = cli::make_scratch_dir("guest");
  return dir;
}

cli::CommandResult pciectl(const std::string& arguments) {
  return cli::run_command("pciectl " + arguments, scratch_dir());
}

// --- Discovery on a real kernel ---

TEST(GuestDiscovery, FindsTheEmulatedDevices) {
  const std::vector<DeviceInfo> devices = discover_all();

  const DeviceInfo* edu = find(devices, kEdu);
  ASSERT_NE(edu, nullptr);
  EXPECT_EQ(edu->vendor_id, 0x1234);
  EXPECT_EQ(edu->device_id, 0x11e8);
  EXPECT_EQ(edu->class_id(), 0x00ff);
  EXPECT_EQ(edu->bars.size(), 1u);
  expect_bar(*edu, 0, BarInfo::Space::memory, 1 << 20, false, false);

  const DeviceInfo* ivshmem = find(devices, kIvshmem);
  ASSERT_NE(ivshmem, nullptr);
  EXPECT_EQ(ivshmem->vendor_id, 0x1af4);
  EXPECT_EQ(ivshmem->device_id, 0x1110);
  EXPECT_EQ(ivshmem->class_id(), 0x0500);  // RAM memory
  EXPECT_EQ(ivshmem->bars.size(), 2u);
  expect_bar(*ivshmem, 0, BarInfo::Space::memory, 256, false, false);
  expect_bar(*ivshmem, 2, BarInfo::Space::memory, g_expect.ivshmem_size, true, true);

  const DeviceInfo* testdev = find(devices, kTestdev);
  ASSERT_NE(testdev, nullptr);
  EXPECT_EQ(testdev->vendor_id, 0x1b36);
  EXPECT_EQ(testdev->device_id, 0x0005);
  EXPECT_EQ(testdev->bars.size(), 3u);
  expect_bar(*testdev, 0, BarInfo::Space::memory, 4096, false, false);
  expect_bar(*testdev, 1, BarInfo::Space::io, 256, false, false);

  const DeviceInfo* nvme = find(devices, kNvme);
  ASSERT_NE(nvme, nullptr);
  EXPECT_EQ(nvme->class_id(), 0x0108);
  EXPECT_EQ(nvme->prog_if, 0x02);
  expect_bar(*nvme, 0, BarInfo::Space::memory, 16 << 10, true, false);
  ASSERT_TRUE(nvme->link.has_value()) << "nvme sits behind a PCIe root port";
  EXPECT_EQ(nvme->link->current_width, 1);
  EXPECT_EQ(nvme->config_bytes_readable, 4096u) << "root reads the whole extended config space";
  EXPECT_TRUE(nvme->warnings.empty());
}

TEST(GuestDiscovery, UnbackedMembarIsEightGiB) {
  const std::vector<DeviceInfo> devices = discover_all();
  const DeviceInfo* testdev = find(devices, kTestdev);
  ASSERT_NE(testdev, nullptr);
  expect_bar(*testdev, 2, BarInfo::Space::memory, g_expect.membar, true, true);
}

TEST(GuestDiscovery, IommuGroupsAndDrivers) {
  const std::vector<DeviceInfo> devices = discover_all();
  for (const Bdf& bdf : {kEdu, kIvshmem, kTestdev, kBoundEdu, kNvme}) {
    SCOPED_TRACE(bdf.to_string());
    const DeviceInfo* device = find(devices, bdf);
    ASSERT_NE(device, nullptr);
    const std::filesystem::path group_link = "/sys/bus/pci/devices/" + bdf.to_string() + "/iommu_group";
    if (g_expect.iommu) {
      ASSERT_TRUE(device->iommu_group.has_value());
      EXPECT_EQ(std::to_string(*device->iommu_group), std::filesystem::read_symlink(group_link).filename().string());
    } else {
      EXPECT_FALSE(device->iommu_group.has_value()) << "no IOMMU, no groups";
    }
    // The VM binds the second edu and loads the nvme driver; nothing drives the others.
    const std::string expected_driver = bdf == kBoundEdu ? g_expect.bound_driver : bdf == kNvme ? "nvme" : "";
    EXPECT_EQ(device->driver.value_or(""), expected_driver);
  }
  if (g_expect.iommu) {
    // Conventional PCI endpoints on q35's root bus each get their own group.
    EXPECT_NE(find(devices, kEdu)->iommu_group, find(devices, kIvshmem)->iommu_group);
  }
}

TEST(GuestDiscovery, MatchesLspci) {
  const std::vector<DeviceInfo> ours = discover_all();
  const auto theirs = lspci::run_lspci();
  ASSERT_GE(theirs.size(), 10u) << "lspci found too few devices";
  lspci::expect_same(ours, theirs);
}

// Every listing format of `pciectl ls` equals lspci's on the real kernel's devices: the root
// ports and the bridge tree QEMU builds, the prog-ifs, subsystems, IOMMU groups.
TEST(GuestDiscovery, PciectlLsEqualsLspciInEveryFormat) {
  const std::pair<const char*, const char*> formats[] = {
      {"ls", "-nn -D"}, {"ls -t", "-t"}, {"ls -t -v", "-tv -nn"}, {"ls -mm", "-mm -nn -D"}, {"ls -mm -v", "-vmm -nn -D"},
  };
  for (const auto& [ours, theirs] : formats) {
    SCOPED_TRACE(ours);
    const cli::CommandResult listed = pciectl(ours);
    ASSERT_EQ(listed.exit_code, 0) << listed.err;
    // The guest has no udev hwdb: names come from pci.ids, as lspci's do, without a warning.
    EXPECT_TRUE(listed.err.empty()) << listed.err;
    const cli::CommandResult reference = cli::run_command(std::string(lspci::kLspci) + " " + theirs, scratch_dir());
    ASSERT_EQ(reference.exit_code, 0) << reference.err;
    EXPECT_EQ(listed.out, reference.out);
    EXPECT_GE(cli::lines_of(listed.out).size(), 9u) << listed.out;  // 10 devices; the tree draws 9 lines
  }
  // QEMU's NVMe sits behind a PCIe root port: the tree shows the bridge's bus range.
  EXPECT_NE(pciectl("ls -t").out.find("-[01]----00.0"), std::string::npos) << pciectl("ls -t").out;
}

// --- edu through resource0 ---

Result<BarMapping> map_edu() { return BarMapping::map(SysfsPaths{}, kEdu, 0); }

TEST(GuestEdu, PciectlReadsTheIdentification) {
  const cli::CommandResult run = pciectl("read 0000:00:03.0 bar0 0x0");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x010000ed\n");
}

TEST(GuestEdu, PciectlLivenessReturnsTheInverse) {
  const cli::CommandResult write = pciectl("write 0000:00:03.0 bar0 0x4 0x12345678 -w 32");
  ASSERT_EQ(write.exit_code, 0) << write.err;
  const cli::CommandResult read = pciectl("read 0000:00:03.0 bar0 0x4");
  EXPECT_EQ(read.exit_code, 0) << read.err;
  EXPECT_EQ(read.out, "0xedcba987\n");
}

TEST(GuestEdu, MappedIdentificationAndLiveness) {
  auto bar = map_edu();
  ASSERT_TRUE(bar) << bar.error().message();
  const MmioView regs = bar->mmio();
  EXPECT_EQ(regs.read<std::uint32_t>(kEduId), kEduIdValue);
  for (const std::uint32_t value : {0x0u, 0xffffffffu, 0xa5a55a5au, 0x00000001u, 0x80000000u}) {
    regs.write<std::uint32_t>(kEduLiveness, value);
    EXPECT_EQ(regs.read<std::uint32_t>(kEduLiveness), ~value) << std::hex << value;
  }
  // Through the virtual Region interface too: the same device, the same answers.
  auto id = bar->read(Width::bits32, kEduId);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, kEduIdValue);
}

TEST(GuestEdu, NarrowAccessesRefusedBeforeTheDevice) {
  auto bar = map_edu();
  ASSERT_TRUE(bar) << bar.error().message();
  // edu ignores accesses below 0x80 that are not 4 bytes wide (reads give all ones): the
  // driver declares the register file 32/64-bit only and the accessors refuse the rest.
  bar->restrict_widths(WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64));
  const MmioView regs = bar->mmio();
  ASSERT_TRUE(regs.checked_write<std::uint32_t>(kEduLiveness, 0x0f0f0f0f));

  auto narrow_read = regs.checked_read<std::uint16_t>(kEduId);
  ASSERT_FALSE(narrow_read);
  EXPECT_EQ(narrow_read.error().code, Errc::width_not_allowed) << narrow_read.error().message();
  auto byte_write = regs.checked_write<std::uint8_t>(kEduLiveness, 0xff);
  ASSERT_FALSE(byte_write);
  EXPECT_EQ(byte_write.error().code, Errc::width_not_allowed) << byte_write.error().message();
  auto region_write = bar->write(Width::bits16, kEduLiveness, 0xffff);
  ASSERT_FALSE(region_write);
  EXPECT_EQ(region_write.error().code, Errc::width_not_allowed);

  // The liveness register still holds the inverse of the one write that was allowed.
  EXPECT_EQ(regs.read<std::uint32_t>(kEduLiveness), ~0x0f0f0f0fu);
}

TEST(GuestEdu, FactorialCompletesWithinABoundedPoll) {
  auto bar = map_edu();
  ASSERT_TRUE(bar) << bar.error().message();
  const MmioView regs = bar->mmio();
  regs.write<std::uint32_t>(kEduFactorial, 10);
  auto done = regs.poll<std::uint32_t>(kEduStatus, kEduStatusComputing, 0, std::chrono::seconds(5));
  ASSERT_TRUE(done) << done.error().message();
  ASSERT_TRUE(done->matched) << "edu still busy, status 0x" << std::hex << done->value;
  EXPECT_EQ(regs.read<std::uint32_t>(kEduFactorial), 3628800u);
}

TEST(GuestEdu, UnprivilegedMappingIsRefusedWithAHint) {
  // A child that drops to nobody: the kernel checks CAP_SYS_ADMIN on resourceN.
  const int status = cli::run_in_child([] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    auto bar = map_edu();
    if (bar) return 11;
    if (bar.error().code != Errc::permission_denied) return 12;
    if (bar.error().hint.find("root") == std::string::npos) return 13;
    return 0;
  });
  EXPECT_EQ(status, 0) << "10: could not drop privileges, 11: mapped anyway, "
                          "12: wrong error code, 13: no hint naming root";
}

TEST(GuestEdu, WriteCombiningRefusedOnANonPrefetchableBar) {
  auto bar = BarMapping::map(SysfsPaths{}, kEdu, 0, {.memory_type = MemoryType::write_combined});
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::not_supported) << bar.error().message();
}

// A device that does not decode memory (a hot-added device nobody enabled; here edu with
// Memory Space Enable cleared): the BAR is refused with device_disabled, and enabling goes
// through the kernel (<device>/enable, pci_enable_device), as libpciaccess does.
TEST(GuestEdu, DecodingOffIsRefusedAndTheKernelEnablesIt) {
  auto config = ConfigSpace::open(SysfsPaths{}, kEdu, ConfigSpace::Mode::read_write);
  ASSERT_TRUE(config) << config.error().message();
  const std::uint16_t command = config->read16(cfg::kCommand).value();
  ASSERT_NE(command & cfg::kCommandMemorySpace, 0) << "edu should start out decoding memory";
  ASSERT_TRUE(config->write16(cfg::kCommand, command & ~cfg::kCommandMemorySpace));

  auto refused = map_edu();
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::device_disabled) << refused.error().message();
  const cli::CommandResult pciectl_refused = pciectl("read 0000:00:03.0 bar0 0x0");
  EXPECT_EQ(pciectl_refused.exit_code, 1) << pciectl_refused.err;
  EXPECT_NE(pciectl_refused.err.find("Memory Space Enable is off"), std::string::npos) << pciectl_refused.err;

  const cli::CommandResult enabled = pciectl("read 0000:00:03.0 bar0 0x0 --enable");
  EXPECT_EQ(enabled.exit_code, 0) << enabled.err;
  EXPECT_EQ(enabled.out, "0x010000ed\n");
  EXPECT_NE(config->read16(cfg::kCommand).value() & cfg::kCommandMemorySpace, 0);
  // The kernel counts the device as enabled now: writing "1" set the bit, not our fallback.
  EXPECT_EQ(cli::slurp("/sys/bus/pci/devices/0000:00:03.0/enable"), "1\n");
  auto bar = map_edu();
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->read(Width::bits32, kEduId), kEduIdValue);
}

// --- Devices bound to drivers ---
// With CONFIG_IO_STRICT_DEVMEM (Debian's kernel) a sysfs mapping fails with EINVAL while a
// driver holds the BAR busy (request_mem_region; drivers/pci/pci-sysfs.c
// pci_mmap_resource -> iomem_is_exclusive). nvme claims its BAR when it probes;
// uio_pci_generic claims nothing; vfio-pci claims a BAR only once it is used through VFIO
// (vfio_pci_core_setup_barmap) and releases it when the device is closed.

TEST(GuestBoundDevice, DriverThatClaimsTheBarIsNamed) {
  auto bar = BarMapping::map(SysfsPaths{}, kNvme, 0);
  ASSERT_FALSE(bar) << "the nvme driver holds BAR0";
  EXPECT_EQ(bar.error().code, Errc::driver_owns_region) << bar.error().message();
  EXPECT_NE(bar.error().message().find("driver 'nvme' owns it"), std::string::npos) << bar.error().message();
  EXPECT_NE(bar.error().hint.find("/sys/bus/pci/drivers/nvme/unbind"), std::string::npos) << bar.error().hint;
  EXPECT_EQ(bar.error().sys_errno, EINVAL);
}

TEST(GuestBoundDevice, PciectlExplainsTheRefusal) {
  const cli::CommandResult run = pciectl("read 0000:01:00.0 bar0 0x8");
  EXPECT_EQ(run.exit_code, 5) << "5: busy, someone else owns the device";
  EXPECT_TRUE(run.out.empty());
  EXPECT_NE(run.err.find("driver 'nvme' owns it"), std::string::npos) << run.err;
}

TEST(GuestBoundDevice, BoundButUnusedDriverLeavesTheBarMappable) {
  ASSERT_FALSE(g_expect.bound_driver.empty()) << "run with --bound-driver=DRIVER";
  auto bar = BarMapping::map(SysfsPaths{}, kBoundEdu, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->mmio().read<std::uint32_t>(kEduId), kEduIdValue);
  const cli::CommandResult run = pciectl("read 0000:00:06.0 bar0 0x0");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x010000ed\n");
}

TEST(GuestVfio, InUseDeviceRefusesTheSysfsMappingNamingVfioPci) {
  ASSERT_EQ(g_expect.bound_driver, "vfio-pci");
  {
    // A user-space driver: the device open through VFIO and BAR0 touched through it.
    auto container = VfioContainer::open();
    ASSERT_TRUE(container) << container.error().message();
    auto device = container->open_device(kBoundEdu);
    ASSERT_TRUE(device) << device.error().message();
    auto vfio_bar = device->open_region(kVfioBar0Region, {.map = false});
    ASSERT_TRUE(vfio_bar) << vfio_bar.error().message();
    ASSERT_EQ(vfio_bar->read(Width::bits32, kEduId).value_or(0), kEduIdValue);

    auto bar = BarMapping::map(SysfsPaths{}, kBoundEdu, 0);
    ASSERT_FALSE(bar) << "vfio-pci now holds BAR0";
    EXPECT_EQ(bar.error().code, Errc::driver_owns_region) << bar.error().message();
    EXPECT_NE(bar.error().message().find("driver 'vfio-pci' owns it"), std::string::npos) << bar.error().message();
    EXPECT_EQ(bar.error().sys_errno, EINVAL);

    const cli::CommandResult run = pciectl("read 0000:00:06.0 bar0 0x0");
    EXPECT_EQ(run.exit_code, 5) << run.err;
    EXPECT_NE(run.err.find("driver 'vfio-pci' owns it"), std::string::npos) << run.err;
  }
  // Closed: vfio-pci released the BAR.
  auto bar = BarMapping::map(SysfsPaths{}, kBoundEdu, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->mmio().read<std::uint32_t>(kEduId), kEduIdValue);
}

TEST(GuestVfioNoIommu, OpenExplainsThatTheIommuIsOff) {
  auto container = VfioContainer::open();
  ASSERT_TRUE(container) << container.error().message() << " (the modules load without an IOMMU)";
  auto device = container->open_device(kBoundEdu);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::not_supported) << device.error().message();
  EXPECT_NE(device.error().reason.find("the IOMMU is off"), std::string::npos) << device.error().message();
  EXPECT_NE(device.error().hint.find("intel_iommu=on"), std::string::npos) << device.error().message();
  std::printf("IOMMU off: %s\n", device.error().message().c_str());
}

// --- SR-IOV (vm_sriov_test: QEMU's nvme with sriov_max_vfs=2 at 01:00.0) ---

TEST(GuestSriov, VirtualFunctionsAreLiveDevicesOnARealKernel) {
  const Bdf pf{0, 1, 0, 0}, vf0{0, 1, 0, 1}, vf1{0, 1, 0, 2};
  {
    // No driver for the VFs: nvme would probe them asynchronously and give up (QEMU's VFs
    // have no queues until the PF assigns some), changing what this test compares.
    std::ofstream("/sys/bus/pci/devices/0000:01:00.0/sriov_drivers_autoprobe") << 0;
    std::ofstream numvfs("/sys/bus/pci/devices/0000:01:00.0/sriov_numvfs");
    numvfs << 2;
  }
  for (int i = 0; i < 50 && !std::filesystem::exists("/sys/bus/pci/devices/0000:01:00.2"); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  ASSERT_TRUE(std::filesystem::exists("/sys/bus/pci/devices/0000:01:00.2")) << "the VFs did not appear";
  // What the spec says and the audit tripped on: a VF's config-space IDs read all ones.
  auto config = ConfigSpace::open(SysfsPaths{}, vf0);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->read32(0x00).value_or(0), 0xffffffffu);
  EXPECT_TRUE(config->check_present()) << "a VF is not a removed device";

  auto devices = discover();
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo* pf_info = find(*devices, pf);
  ASSERT_NE(pf_info, nullptr);
  EXPECT_EQ(pf_info->virtual_functions, (std::vector<Bdf>{vf0, vf1}));
  ASSERT_TRUE(pf_info->sriov);
  EXPECT_EQ(pf_info->sriov->total_vfs, 2u);
  EXPECT_EQ(pf_info->sriov->num_vfs, 2u);
  for (const Bdf& vf : {vf0, vf1}) {
    SCOPED_TRACE(vf.to_string());
    const DeviceInfo* info = find(*devices, vf);
    ASSERT_NE(info, nullptr);
    EXPECT_EQ(info->vendor_id, 0x1b36);
    EXPECT_EQ(info->device_id, 0x0010);
    ASSERT_TRUE(info->physical_function);
    EXPECT_EQ(*info->physical_function, pf);
    EXPECT_TRUE(info->warnings.empty()) << info->warnings.front();
    EXPECT_TRUE(find_capability(info->capabilities, Capability::Space::standard, cap::kMsiX));
    EXPECT_TRUE(find_capability(info->capabilities, Capability::Space::standard, cap::kPciExpress));
    EXPECT_TRUE(info->link.has_value());
    auto described = describe(vf);
    ASSERT_TRUE(described) << described.error().message();
    EXPECT_EQ(described->device_id, 0x0010);
    EXPECT_EQ(described->capabilities, info->capabilities);
  }
  lspci::expect_same(*devices, lspci::run_lspci());
  const cli::CommandResult json = pciectl("info 0000:01:00.2 --json");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_NE(json.out.find("\"physical_function\": \"0000:01:00.0\""), std::string::npos) << json.out;
  // The VF's BAR decodes by the PF's VF Memory Space Enable, which the kernel set.
  auto bar = BarMapping::map(SysfsPaths{}, vf0, 0, {.writable = false});
  EXPECT_TRUE(bar) << bar.error().message();
}

// pciectl sriov on the real kernel, after the test above left two driverless VFs: fewer,
// more and bound to vfio-pci in one step, removal refused while they are bound, then forced.
TEST(GuestSriov, PciectlCreatesBindsAndRemovesVirtualFunctions) {
  const Bdf vf1{0, 1, 0, 2};
  cli::CommandResult run = pciectl("sriov 0000:01:00.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out,
            "0000:01:00.0: SR-IOV, 2 of 2 VFs enabled (drivers autoprobe off)\n"
            "  VF0   0000:01:00.1  driver none\n"
            "  VF1   0000:01:00.2  driver none\n");
  std::printf("%s", run.out.c_str());

  run = pciectl("sriov 0000:01:00.0 --numvfs 1");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("1 of 2 VFs enabled"), std::string::npos) << run.out;
  EXPECT_FALSE(std::filesystem::exists("/sys/bus/pci/devices/" + vf1.to_string()));

  run = pciectl("sriov 0000:01:00.0 --numvfs 2 --bind vfio-pci");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("VF0   0000:01:00.1  driver vfio-pci"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("VF1   0000:01:00.2  driver vfio-pci"), std::string::npos) << run.out;
  EXPECT_EQ(bound_driver(SysfsPaths{}, vf1), "vfio-pci");
  std::printf("%s", run.out.c_str());

  run = pciectl("sriov 0000:01:00.0 --numvfs 0");
  EXPECT_EQ(run.exit_code, 5) << run.out;
  EXPECT_NE(run.err.find("0000:01:00.1 (bound to vfio-pci), 0000:01:00.2 (bound to vfio-pci)"), std::string::npos)
      << run.err;
  EXPECT_TRUE(std::filesystem::exists("/sys/bus/pci/devices/" + vf1.to_string())) << "refused means untouched";

  run = pciectl("--json sriov 0000:01:00.0 --numvfs 0 --force");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("\"num_vfs\": 0"), std::string::npos) << run.out;
  EXPECT_FALSE(std::filesystem::exists("/sys/bus/pci/devices/" + vf1.to_string()));
  EXPECT_EQ(pciectl("sriov 0000:01:00.0 --numvfs 3").exit_code, 2) << "more than TotalVFs";
}

// --- x86 PAT: the memory type a mapping really gets (pcie/memory_type.h) ---
// Run with debugfs mounted (the kernel's pat_memtype_list), and unmounted again after.

namespace {

struct Debugfs {
  Debugfs() { mounted = ::mount("debugfs", "/sys/kernel/debug", "debugfs", 0, nullptr) == 0; }
  ~Debugfs() {
    if (mounted) ::umount("/sys/kernel/debug");
  }
  bool mounted = false;
};

Result<BarMapping> map_ivshmem_bar(MemoryType type, MemoryTypeMismatch on_mismatch = MemoryTypeMismatch::fail) {
  return BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.memory_type = type, .on_mismatch = on_mismatch});
}

}  // namespace

TEST(GuestPat, EachMemoryTypeIsGrantedWhenAloneAndSecondMappingsAreCaught) {
  {
    auto unverified = map_ivshmem_bar(MemoryType::write_combined);
    ASSERT_TRUE(unverified) << unverified.error().message();
    EXPECT_FALSE(unverified->memory_type_report().verified()) << "no debugfs yet";
  }
  Debugfs debugfs;
  ASSERT_TRUE(debugfs.mounted) << std::strerror(errno);
  for (const MemoryType first : {MemoryType::uncached, MemoryType::write_combined}) {
    const MemoryType second = first == MemoryType::uncached ? MemoryType::write_combined : MemoryType::uncached;
    SCOPED_TRACE(std::string("first ") + to_string(first));
    auto alone = map_ivshmem_bar(first);
    ASSERT_TRUE(alone) << alone.error().message();
    ASSERT_TRUE(alone->memory_type_report().verified()) << alone->memory_type_report().note;
    EXPECT_EQ(alone->memory_type(), first) << alone->memory_type_report().granted_name;
    std::printf("%s alone: the kernel granted %s\n", to_string(first),
                alone->memory_type_report().granted_name.c_str());

    auto refused = map_ivshmem_bar(second);
    ASSERT_FALSE(refused) << "a second mapping got " << to_string(refused->memory_type());
    EXPECT_EQ(refused.error().code, Errc::busy) << refused.error().message();
    std::printf("second: %s\n", refused.error().message().c_str());
    auto taken = map_ivshmem_bar(second, MemoryTypeMismatch::use_granted);
    ASSERT_TRUE(taken) << taken.error().message();
    EXPECT_EQ(taken->memory_type(), first) << "what the kernel really gave the second mapping";

    // pciectl info sees the live mapping's type.
    const cli::CommandResult info = pciectl("info 0000:00:04.0");
    EXPECT_NE(info.out.find(std::string("[mapped now: ") + alone->memory_type_report().granted_name),
              std::string::npos)
        << info.out;
  }
}

TEST(GuestPat, BenchMeasuresOneVerifiedMemoryTypeAtATime) {
  Debugfs debugfs;
  ASSERT_TRUE(debugfs.mounted);
  const cli::CommandResult run =
      pciectl("bench 0000:00:04.0 bar2 --sizes 4K --widths 32,copy --repetitions 1 --min-time-ms 1 "
              "--latency-samples 10 --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  ASSERT_EQ(json["memory_types"].size(), 2u) << run.out;
  EXPECT_EQ(json["memory_types"][0]["requested"], "uncached");
  EXPECT_EQ(json["memory_types"][0]["verified"], true);
  EXPECT_EQ(json["memory_types"][0]["granted"], "uncached-minus");
  EXPECT_EQ(json["memory_types"][1]["requested"], "write-combined");
  EXPECT_EQ(json["memory_types"][1]["verified"], true);
  EXPECT_EQ(json["memory_types"][1]["granted"], "write-combining") << "the uncached mapping was gone by then";
  for (const auto& row : json["throughput"]) EXPECT_GT(row["median_gbs"].get<double>(), 0) << row;
}

// Booted with nopat (vm_sysfs_nopat_test), the kernel offers no resourceN_wc at all.
TEST(GuestNopat, WriteCombiningIsRefusedSayingPatIsOff) {
  auto wc = map_ivshmem_bar(MemoryType::write_combined);
  ASSERT_FALSE(wc);
  EXPECT_EQ(wc.error().code, Errc::not_supported) << wc.error().message();
  EXPECT_NE(wc.error().reason.find("booted with nopat"), std::string::npos) << wc.error().message();
  const cli::CommandResult named = pciectl("bench 0000:00:04.0 bar2 --mapping wc");
  EXPECT_EQ(named.exit_code, 2) << named.err;
  EXPECT_NE(named.err.find("PAT is off"), std::string::npos) << named.err;
  const cli::CommandResult all = pciectl("bench 0000:00:04.0 bar2 --sizes 4K --widths 32 --repetitions 1 "
                                         "--min-time-ms 1 --latency-samples 10 --json");
  EXPECT_EQ(all.exit_code, 0) << all.err;
  EXPECT_NE(all.err.find("write-combined: not measured"), std::string::npos) << all.err;
  auto uc = map_ivshmem_bar(MemoryType::uncached);
  EXPECT_TRUE(uc) << uc.error().message();
}

// --- ivshmem: a 64-bit prefetchable BAR, write-combined ---

TEST(GuestIvshmem, WriteCombinedPatternsReadBackExactly) {
  auto wc = BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_TRUE(wc) << wc.error().message();
  std::uint64_t ivshmem_size = wc->size();
  ASSERT_EQ(wc->size(), g_expect.ivshmem_size);
  ASSERT_EQ(wc->memory_type(), MemoryType::write_combined);
  const MmioView bar = wc->mmio();
  for (const vm::PatternSpan& span : vm::ivshmem_pattern_spans(wc->size())) {
    for (std::uint64_t offset = span.offset; offset < span.offset + span.length; offset += span.width_bytes) {
      const std::uint64_t value = vm::pattern_value(offset, span.width_bytes);
      Result<void> written;
      switch (span.width_bytes) {
        case 1: written = bar.checked_write<std::uint8_t>(offset, static_cast<std::uint8_t>(value)); break;
        case 2: written = bar.checked_write<std::uint16_t>(offset, static_cast<std::uint16_t>(value)); break;
        case 4: written = bar.checked_write<std::uint32_t>(offset, static_cast<std::uint32_t>(value)); break;
        default: written = bar.checked_write<std::uint64_t>(offset, value); break;
      }
      ASSERT_TRUE(written) << written.error().message();
    }
  }
  barrier_before_doorbell();  // drain the write-combining buffers
  ASSERT_EQ(ivshmem_size, g_expect.ivshmem_size);
  wc = std::unexpected(make_error(Errc::not_found, "", "", ""));  // unmapped: one memory type at a time

  // Read everything back through an uncached mapping of the same BAR, made after the
  // write-combined one is gone (x86 PAT would make it write-combined otherwise).
  auto uncached = BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.writable = false});
  ASSERT_TRUE(uncached) << uncached.error().message();
  const std::vector<std::uint8_t> expected = vm::expected_ivshmem_image(uncached->size());
  const MmioView readback = uncached->mmio();
  std::size_t mismatches = 0;
  for (std::uint64_t offset = 0; offset < expected.size(); ++offset) {
    const std::uint8_t actual = readback.read_relaxed<std::uint8_t>(offset);
    if (actual != expected[offset] && ++mismatches <= 5) {
      ADD_FAILURE() << "offset 0x" << std::hex << offset << ": read 0x" << int{actual} << ", expected 0x"
                    << int{expected[offset]};
    }
  }
  EXPECT_EQ(mismatches, 0u);
}

TEST(GuestIvshmem, WindowAtAnOffsetSeesTheSameBytes) {
  auto window = BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.offset = 0x10000, .length = 0x2000, .writable = false});
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_EQ(window->size(), 0x2000u);
  EXPECT_EQ(window->window_offset(), 0x10000u);
  // The 4095 single bytes written at 0x10001 (after WriteCombinedPatternsReadBackExactly,
  // or zeros if it did not run): compare against a whole-BAR mapping.
  auto whole = BarMapping::map(SysfsPaths{}, kIvshmem, 2, {.writable = false});
  ASSERT_TRUE(whole) << whole.error().message();
  for (std::uint64_t offset = 0; offset < 0x2000; offset += 8) {
    ASSERT_EQ(window->mmio().read<std::uint64_t>(offset), whole->mmio().read<std::uint64_t>(0x10000 + offset)) << offset;
  }
  auto past_end = window->mmio().checked_read<std::uint32_t>(0x2000);
  ASSERT_FALSE(past_end);
  EXPECT_EQ(past_end.error().code, Errc::out_of_range);
}

// --- pci-testdev's I/O BAR through pread/pwrite ---

TEST(GuestTestdev, IoPortBarOpensAndRefusesWideAccess) {
  auto io = open_sysfs_bar(SysfsPaths{}, kTestdev, 1);
  ASSERT_TRUE(io) << io.error().message();
  EXPECT_EQ((*io)->size(), 256u);
  auto value = (*io)->read(Width::bits32, 0);
  EXPECT_TRUE(value) << value.error().message();
  auto wide = (*io)->read(Width::bits64, 0);
  ASSERT_FALSE(wide);
  EXPECT_EQ(wide.error().code, Errc::width_not_allowed) << "x86 port I/O is at most 32 bits";
}

std::uint64_t flag_value(const vm::Flags& flags, const std::string& name) {
  const auto it = flags.find(name);
  return it == flags.end() ? 0 : std::stoull(it->second);
}

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  pcie::vm::Flags flags = pcie::vm::parse_flags(argc, argv);
  pcie::g_expect.iommu = flags["iommu"] != "0";
  pcie::g_expect.bound_driver = flags["bound-driver"];
  pcie::g_expect.ivshmem_size = pcie::flag_value(flags, "ivshmem-size");
  pcie::g_expect.membar = pcie::flag_value(flags, "membar");
  return RUN_ALL_TESTS();
}
