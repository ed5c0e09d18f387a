// Our discovery against pciutils' lspci on the same fake tree: device list, IDs, classes,
// BARs (address, size, type), capabilities, driver, IOMMU group and NUMA node.
#include <gtest/gtest.h>

#include <random>

#include "pcie/discovery.h"
#include "pcie/testing/fake_sysfs.h"
#include "tests/lspci_output.h"

namespace pcie {
namespace {

using testing::FakeBar;
using testing::FakeDevice;
using testing::FakeSysfs;
using lspci::expect_same;
using lspci::kLspci;
using lspci::run;

// lspci on a fake tree: libpci's sysfs back end pointed at it.
std::vector<lspci::LspciDevice> run_lspci(const std::string& pci_root) {
  return lspci::run_lspci("-A linux-sysfs -O sysfs.path=" + pci_root);
}

// Random devices: BAR kinds, sizes and addresses, optional links and capabilities.
FakeDevice random_device(std::mt19937_64& rng, const Bdf& bdf) {
  FakeDevice device;
  device.bdf = bdf;
  device.vendor_id = static_cast<std::uint16_t>(rng() % 0xfffe);
  device.device_id = static_cast<std::uint16_t>(rng());
  device.class_code = static_cast<std::uint32_t>(rng() % 0x120000);
  device.revision = static_cast<std::uint8_t>(rng());
  unsigned index = 0;
  while (index < kBarCount) {
    const unsigned choice = rng() % 4;
    if (choice == 0) { ++index; continue; }
    FakeBar bar;
    bar.index = index;
    if (choice == 1 || index == kBarCount - 1) {
      bar.kind = (rng() % 3 == 0) ? FakeBar::Kind::io : FakeBar::Kind::memory32;
    } else {
      bar.kind = FakeBar::Kind::memory64;
    }
    if (bar.kind == FakeBar::Kind::io) {
      bar.size = 4ull << (rng() % 7);
      bar.bus_address = 0x1000 + bar.size * (rng() % 64);
    } else if (bar.kind == FakeBar::Kind::memory32) {
      bar.size = 4096ull << (rng() % 16);
      bar.bus_address = 0x80000000ull + bar.size * (rng() % 4);
      bar.prefetchable = rng() % 2;
    } else {
      bar.size = 1ull << (12 + rng() % 24);
      bar.bus_address = (1ull << 36) + bar.size * (rng() % 1024);
      bar.prefetchable = rng() % 2;
    }
    index += bar.kind == FakeBar::Kind::memory64 ? 2 : 1;
    device.bars.push_back(bar);
  }
  if (rng() % 2) device.link = testing::FakeLink{static_cast<std::uint8_t>(1 + rng() % 5), 1, 5, 16};
  if (rng() % 2) device.driver = "drv" + std::to_string(rng() % 3);
  if (rng() % 2) device.iommu_group = static_cast<int>(rng() % 50);
  if (rng() % 2) device.numa_node = static_cast<int>(rng() % 2);
  return device;
}

TEST(LspciCrossCheck, LspciIsInstalled) {
  ASSERT_FALSE(run(std::string(kLspci) + " --version").empty())
      << kLspci << " is missing: run scripts/setup (it installs pciutils)";
}

TEST(LspciCrossCheck, QemuShapesMatch) {
  auto tree = testing::make_vm_tree();
  ASSERT_TRUE(tree) << tree.error().message();
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  expect_same(*ours, run_lspci(tree->pci_root()));
}

TEST(LspciCrossCheck, RandomDevicesMatch) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  std::mt19937_64 rng(20261121);
  for (std::uint8_t bus = 0; bus < 4; ++bus) {
    for (std::uint8_t slot = 0; slot < 16; ++slot) {
      auto added = tree->add_device(random_device(rng, Bdf{0, bus, slot, 0}));
      ASSERT_TRUE(added) << added.error().message();
    }
  }
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  const auto theirs = run_lspci(tree->pci_root());
  ASSERT_EQ(theirs.size(), 64u);
  expect_same(*ours, theirs);
}

// An SR-IOV PF with two VFs, whose config-space IDs read 0xffff: lspci takes their IDs
// from sysfs, as discovery must; capabilities, BARs and the rest as for any device.
TEST(LspciCrossCheck, SriovVirtualFunctionsMatch) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  const Bdf pf{0, 2, 0, 0};
  ASSERT_TRUE(tree->add_device(testing::sriov_pf(pf, 4, 2)));
  ASSERT_TRUE(tree->add_device(testing::sriov_vf({0, 2, 2, 0}, pf)));
  ASSERT_TRUE(tree->add_device(testing::sriov_vf({0, 2, 2, 1}, pf)));
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  ASSERT_EQ(ours->size(), 3u);
  EXPECT_EQ((*ours)[2].device_id, 0x154c);
  expect_same(*ours, run_lspci(tree->pci_root()));
}

TEST(LspciCrossCheck, HugeUnbackedBarSize) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  FakeDevice testdev = testing::qemu_pci_testdev({0, 0, 5, 0});
  testdev.bars.push_back({2, FakeBar::Kind::memory64, 8ull << 30, 8ull << 30, true});
  ASSERT_TRUE(tree->add_device(testdev));
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto ours = discover(options);
  ASSERT_TRUE(ours) << ours.error().message();
  ASSERT_EQ(ours->size(), 1u);
  ASSERT_NE((*ours)[0].find_bar(2), nullptr);
  EXPECT_EQ((*ours)[0].find_bar(2)->size, 8ull << 30);
  expect_same(*ours, run_lspci(tree->pci_root()));
}

}  // namespace
}  // namespace pcie
