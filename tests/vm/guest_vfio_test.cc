// Runs inside the test VM with the IOMMU (vm_vfio_test): devices owned through VFIO. The VM
// binds edu 00:06.0 and ivshmem 00:04.0 to vfio-pci, and puts two more edus behind a
// conventional PCI bridge (one IOMMU group), binding 02:01.0 to vfio-pci and 02:02.0 to
// uio_pci_generic so that their group is not viable. The nvme driver is loaded; pciectl is
// on PATH.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>

#include "pcie/binding.h"
#include "pcie/vfio.h"
#include "tests/cli_helpers.h"
#include "tests/vm/ivshmem_pattern.h"

namespace pcie {
namespace {

const Bdf kEdu{0, 0, 3, 0};         // no driver
const Bdf kIvshmem{0, 0, 4, 0};     // vfio-pci
const Bdf kVfioEdu{0, 0, 6, 0};     // vfio-pci
const Bdf kBridgedVfio{0, 2, 1, 0}; // vfio-pci, group shared with kBridgedUio
const Bdf kBridgedUio{0, 2, 2, 0};  // uio_pci_generic

constexpr std::uint64_t kEduId = 0x00;
constexpr std::uint64_t kEduLiveness = 0x04;
constexpr std::uint32_t kEduIdValue = 0x010000ed;

VfioContainer open_container() {
  auto container = VfioContainer::open();
  EXPECT_TRUE(container) << container.error().message();
  if (!container) std::abort();  // nothing below can run; the failure above says why
  return std::move(*container);
}

// Runs `body` in a child process and returns its exit status (or -1 on a signal).
template <class Body>
int in_child(Body body) {
  const pid_t child = fork();
  if (child == 0) _exit(body());
  int status = 0;
  if (child < 0 || waitpid(child, &status, 0) != child || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(GuestVfioDevice, OpensEduAndReachesBar0ThroughTheMapping) {
  VfioContainer container = open_container();
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  EXPECT_EQ(device->bdf(), kVfioEdu);
  EXPECT_GE(device->region_count(), 9u) << "6 BARs, ROM, config, VGA";
  EXPECT_GE(device->irq_count(), 5u) << "INTx, MSI, MSI-X, ERR, REQ";

  auto info = device->region_info(kVfioBar0Region);
  ASSERT_TRUE(info) << info.error().message();
  EXPECT_EQ(info->size, 1u << 20);
  EXPECT_TRUE(info->readable && info->writable && info->mappable);
  ASSERT_EQ(info->mmap_areas.size(), 1u);
  EXPECT_EQ(info->mmap_areas[0].size, 1u << 20);

  auto bar = device->open_region(kVfioBar0Region);
  ASSERT_TRUE(bar) << bar.error().message();
  ASSERT_TRUE(bar->mapped());
  auto regs = bar->mmio();
  ASSERT_TRUE(regs.has_value());
  EXPECT_EQ(regs->read<std::uint32_t>(kEduId), kEduIdValue);
  regs->write<std::uint32_t>(kEduLiveness, 0x12345678);
  EXPECT_EQ(regs->read<std::uint32_t>(kEduLiveness), 0xedcba987u);
}

TEST(GuestVfioDevice, PreadPathGivesTheSameAnswers) {
  VfioContainer container = open_container();
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto bar = device->open_region(kVfioBar0Region, {.map = false});
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_FALSE(bar->mapped());
  EXPECT_FALSE(bar->mmio().has_value());
  auto id = bar->read(Width::bits32, kEduId);
  ASSERT_TRUE(id) << id.error().message();
  EXPECT_EQ(*id, kEduIdValue);
  ASSERT_TRUE(bar->write(Width::bits32, kEduLiveness, 0x0000ffff));
  auto liveness = bar->read(Width::bits32, kEduLiveness);
  ASSERT_TRUE(liveness) << liveness.error().message();
  EXPECT_EQ(*liveness, 0xffff0000u);
}

TEST(GuestVfioDevice, ConfigSpaceRegion) {
  VfioContainer container = open_container();
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto config = device->open_region(kVfioConfigRegion);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_FALSE(config->mapped()) << "config space is never mmap'ed";
  auto ids = config->read(Width::bits32, 0x00);
  ASSERT_TRUE(ids) << ids.error().message();
  EXPECT_EQ(*ids, 0x11e81234u);
  auto class_code = config->read(Width::bits32, 0x08);
  ASSERT_TRUE(class_code);
  EXPECT_EQ(*class_code >> 8, 0x00ff00u);
}

TEST(GuestVfioDevice, BusMasterEnableReachesTheCommandRegister) {
  VfioContainer container = open_container();
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto config = device->open_region(kVfioConfigRegion);
  ASSERT_TRUE(config) << config.error().message();
  constexpr std::uint64_t kBusMaster = 1 << 2;
  ASSERT_TRUE(device->enable_bus_master(false));
  EXPECT_EQ(config->read(Width::bits16, 0x04).value_or(0xffff) & kBusMaster, 0u);
  ASSERT_TRUE(device->enable_bus_master());
  EXPECT_NE(config->read(Width::bits16, 0x04).value_or(0) & kBusMaster, 0u);
  // What the device really holds, read past VFIO's virtualised view: sysfs config.
  FILE* sysfs = std::fopen("/sys/bus/pci/devices/0000:00:06.0/config", "rb");
  ASSERT_NE(sysfs, nullptr);
  unsigned char header[6] = {};
  ASSERT_EQ(std::fread(header, 1, sizeof header, sysfs), sizeof header);
  std::fclose(sysfs);
  EXPECT_NE(header[4] & kBusMaster, 0u);
  ASSERT_TRUE(device->enable_bus_master(false));
}

TEST(GuestVfioDevice, UnimplementedBarAndMissingRegion) {
  VfioContainer container = open_container();
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  auto bar1 = device->open_region(kVfioBar0Region + 1);
  ASSERT_FALSE(bar1);
  EXPECT_EQ(bar1.error().code, Errc::not_found) << bar1.error().message();
  auto beyond = device->region_info(device->region_count());
  ASSERT_FALSE(beyond);
  EXPECT_EQ(beyond.error().code, Errc::not_found);
}

TEST(GuestVfioContainer, IovaRangesSkipTheMsiWindow) {
  VfioContainer container = open_container();
  EXPECT_TRUE(container.iova_ranges().empty()) << "known once a group is attached";
  auto device = container.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  // Intel IOMMU, 39-bit address width, MSI window 0xfee00000-0xfeefffff reserved (VM.md).
  const std::vector<IovaRange> expected{{0x0, 0xfedfffff}, {0xfef00000, 0x7fffffffff}};
  EXPECT_EQ(container.iova_ranges(), expected);
}

TEST(GuestVfioContainer, TwoGroupsInOneContainer) {
  VfioContainer container = open_container();
  auto edu = container.open_device(kVfioEdu);
  ASSERT_TRUE(edu) << edu.error().message();
  auto ivshmem = container.open_device(kIvshmem);
  ASSERT_TRUE(ivshmem) << ivshmem.error().message();
  EXPECT_NE(edu->iommu_group(), ivshmem->iommu_group());
  EXPECT_EQ(container.attached_groups().size(), 2u);

  // ivshmem's BAR2 through VFIO: the host checks the backing file afterwards.
  auto bar2 = ivshmem->open_region(kVfioBar0Region + 2);
  ASSERT_TRUE(bar2) << bar2.error().message();
  auto view = bar2->mmio();
  ASSERT_TRUE(view.has_value());
  for (const vm::PatternSpan& span : vm::ivshmem_pattern_spans(bar2->size())) {
    for (std::uint64_t offset = span.offset; offset < span.offset + span.length; offset += span.width_bytes) {
      ASSERT_TRUE(bar2->write(width_from_bits(8 * span.width_bytes).value(), offset,
                              vm::pattern_value(offset, span.width_bytes)));
    }
  }
}

TEST(GuestVfioErrors, SecondContainerOnTheSameGroupIsBusy) {
  VfioContainer first = open_container();
  auto device = first.open_device(kVfioEdu);
  ASSERT_TRUE(device) << device.error().message();
  VfioContainer second = open_container();
  auto again = second.open_device(kVfioEdu);
  ASSERT_FALSE(again);
  EXPECT_EQ(again.error().code, Errc::busy) << again.error().message();
  EXPECT_NE(again.error().reason.find("already open"), std::string::npos) << again.error().message();
  EXPECT_NE(again.error().hint.find("fuser /dev/vfio/"), std::string::npos) << again.error().message();
  std::printf("busy: %s\n", again.error().message().c_str());

  // Another process too.
  const int status = in_child([] {
    auto container = VfioContainer::open();
    if (!container) return 10;
    auto device = container->open_device(kVfioEdu);
    return device ? 11 : device.error().code == Errc::busy ? 0 : 12;
  });
  EXPECT_EQ(status, 0) << "10: no container, 11: opened anyway, 12: not busy";
}

TEST(GuestVfioErrors, DeviceWithoutVfioPciSaysHowToBindIt) {
  VfioContainer container = open_container();
  auto device = container.open_device(kEdu);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::not_found) << device.error().message();
  EXPECT_NE(device.error().reason.find("0000:00:03.0 is bound to no driver, not to vfio-pci"), std::string::npos)
      << device.error().message();
  EXPECT_NE(device.error().hint.find("driver_override"), std::string::npos) << device.error().message();
  std::printf("not bound: %s\n", device.error().message().c_str());
}

TEST(GuestVfioErrors, GroupNotViableNamesTheOtherDeviceAndItsDriver) {
  VfioContainer container = open_container();
  auto device = container.open_device(kBridgedVfio);
  ASSERT_FALSE(device);
  EXPECT_EQ(device.error().code, Errc::busy) << device.error().message();
  EXPECT_NE(device.error().reason.find("not viable: 0000:02:02.0 is bound to uio_pci_generic"), std::string::npos)
      << device.error().message();
  EXPECT_NE(device.error().hint.find("echo 0000:02:02.0 > /sys/bus/pci/drivers/uio_pci_generic/unbind"),
            std::string::npos)
      << device.error().message();
  std::printf("not viable: %s\n", device.error().message().c_str());
}

TEST(GuestVfioErrors, UnprivilegedUserGetsAPermissionHint) {
  const int status = in_child([] {
    if (setgid(65534) != 0 || setuid(65534) != 0) return 10;
    auto container = VfioContainer::open();  // /dev/vfio/vfio is world-accessible
    if (!container) return 11;
    auto device = container->open_device(kVfioEdu);
    if (device) return 12;
    if (device.error().code != Errc::permission_denied) return 13;
    if (device.error().hint.find("run as root") == std::string::npos) return 14;
    std::printf("unprivileged: %s\n", device.error().message().c_str());
    return 0;
  });
  EXPECT_EQ(status, 0) << "10: setuid, 11: no container, 12: opened, 13: wrong code, 14: no hint";
}

const Bdf kNvme{0, 1, 0, 0};

TEST(GuestBinding, BindVfioPciUseItAndRestore) {
  const SysfsPaths paths;
  ASSERT_FALSE(bound_driver(paths, kEdu).has_value());
  auto bound = bind_driver(paths, kEdu, "vfio-pci");
  ASSERT_TRUE(bound) << bound.error().message();
  EXPECT_EQ(bound_driver(paths, kEdu), "vfio-pci");
  {
    VfioContainer container = open_container();
    auto device = container.open_device(kEdu);
    ASSERT_TRUE(device) << device.error().message();
    auto bar = device->open_region(kVfioBar0Region);
    ASSERT_TRUE(bar) << bar.error().message();
    EXPECT_EQ(bar->read(Width::bits32, kEduId).value_or(0), kEduIdValue);
  }
  auto restored = restore_driver(paths, kEdu);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_FALSE(restored->has_value()) << "edu has no kernel driver of its own";
  EXPECT_FALSE(bound_driver(paths, kEdu).has_value());
  VfioContainer container = open_container();
  EXPECT_FALSE(container.open_device(kEdu)) << "no longer bound to vfio-pci";
}

TEST(GuestBinding, PciectlMovesNvmeToVfioPciAndBack) {
  const std::string scratch = [] {
    std::string pattern = "/tmp/binding.XXXXXX";
    return mkdtemp(pattern.data()) != nullptr ? pattern : std::string("/tmp");
  }();
  ASSERT_EQ(bound_driver(SysfsPaths{}, kNvme), "nvme");
  const cli::CommandResult to_vfio = cli::run_command("pciectl bind 0000:01:00.0 vfio-pci", scratch);
  EXPECT_EQ(to_vfio.exit_code, 0) << to_vfio.err;
  EXPECT_EQ(to_vfio.out, "0000:01:00.0: bound to vfio-pci (was: nvme)\n");
  EXPECT_EQ(bound_driver(SysfsPaths{}, kNvme), "vfio-pci");

  const cli::CommandResult unbind = cli::run_command("pciectl unbind 0000:01:00.0", scratch);
  EXPECT_EQ(unbind.exit_code, 0) << unbind.err;
  EXPECT_EQ(unbind.out, "0000:01:00.0: unbound (was: vfio-pci)\n");
  EXPECT_FALSE(bound_driver(SysfsPaths{}, kNvme).has_value());

  const cli::CommandResult restore = cli::run_command("pciectl bind 0000:01:00.0 --restore", scratch);
  EXPECT_EQ(restore.exit_code, 0) << restore.err;
  EXPECT_EQ(restore.out, "0000:01:00.0: restored to nvme (was: none)\n");
  EXPECT_EQ(bound_driver(SysfsPaths{}, kNvme), "nvme");
}

}  // namespace
}  // namespace pcie
