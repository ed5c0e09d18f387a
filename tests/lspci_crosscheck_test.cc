// Our discovery against pciutils' lspci on the same fake tree: device list, IDs, classes,
// BARs (address, size, type), capabilities, driver, IOMMU group and NUMA node.
#include <gtest/gtest.h>

#include <random>
#include <sstream>

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

// What the kernel says over what config space says: lspci shows the kernel's view (its
// sysfs attributes), and so must discovery at every level. Config here disagrees as it
// does on real machines: a class the kernel fixed up (quirk_amd_ide_mode makes an IDE
// controller in AHCI mode a SATA one), an SR-IOV VF's IDs (0xffff), a bridge whose 0x2c
// is its Prefetchable Limit Upper 32 Bits, not a subsystem ID.
TEST(LspciCrossCheck, TheKernelsViewWinsOverConfigSpace) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  FakeDevice sata = testing::qemu_edu({0, 0, 0x11, 0});
  sata.vendor_id = 0x1002;
  sata.device_id = 0x4390;
  sata.class_code = 0x010601;
  ASSERT_TRUE(tree->add_device(sata));
  const std::uint8_t ide_class[] = {0x8a, 0x01, 0x01};  // prog-if, subclass, base class
  ASSERT_TRUE(tree->write_device_bytes(sata.bdf, "config", 0x09, ide_class));
  FakeDevice bridge = testing::qemu_edu({0, 0, 0x1c, 0});
  bridge.vendor_id = 0x8086;
  bridge.device_id = 0xa110;
  bridge.class_code = 0x060400;
  bridge.header_type = 1;
  bridge.subsystem_vendor_id = 0x17aa;
  bridge.subsystem_id = 0x2233;
  ASSERT_TRUE(tree->add_device(bridge));
  const std::uint8_t limit_upper[] = {0xef, 0xbe, 0xad, 0xde};
  ASSERT_TRUE(tree->write_device_bytes(bridge.bdf, "config", 0x2c, limit_upper));
  const Bdf pf{0, 2, 0, 0};
  ASSERT_TRUE(tree->add_device(testing::sriov_pf(pf, 4, 1)));
  ASSERT_TRUE(tree->add_device(testing::sriov_vf({0, 2, 2, 0}, pf)));
  const auto theirs = run_lspci(tree->pci_root());
  for (const bool capabilities : {false, true}) {
    SCOPED_TRACE(capabilities ? "full" : "ids");
    DiscoveryOptions options;
    options.paths = tree->paths();
    options.read_capabilities = capabilities;
    auto ours = discover(options);
    ASSERT_TRUE(ours) << ours.error().message();
    ASSERT_EQ(ours->size(), 4u);
    EXPECT_EQ((*ours)[0].class_id(), 0x0106);
    EXPECT_EQ((*ours)[0].prog_if, 0x01);
    EXPECT_EQ((*ours)[1].subsystem_vendor_id, 0x17aa);
    EXPECT_EQ((*ours)[1].subsystem_id, 0x2233);
    EXPECT_EQ((*ours)[3].vendor_id, 0x8086);
    EXPECT_EQ((*ours)[3].device_id, 0x154c);
    if (capabilities) expect_same(*ours, theirs);
  }
}

// lspci -s/-d on a fake tree, one row per filter: the devices it lists, or that it
// refuses the filter, against discover()'s, which parses with libpci but matches
// by itself. The tree has two domains, functions 1-7, an SR-IOV PF with VFs (whose
// config-space IDs read 0xffff), several classes and prog-ifs.
class LspciFilters : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    const Bdf pf{0, 2, 0, 0};
    ASSERT_TRUE(tree_->add_device(testing::sriov_pf(pf, 4, 2)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf({0, 2, 0, 1}, pf)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf({0, 2, 0, 2}, pf)));
    FakeDevice xhci = testing::qemu_edu({1, 0x40, 0x1f, 7});
    xhci.vendor_id = 0x1b36;
    xhci.device_id = 0x000d;
    xhci.class_code = 0x0c0330;
    ASSERT_TRUE(tree_->add_device(xhci));
    FakeDevice ide = testing::qemu_edu({0, 0, 0x1f, 2});
    ide.vendor_id = 0x8086;
    ide.device_id = 0x7010;
    ide.class_code = 0x010180;
    ASSERT_TRUE(tree_->add_device(ide));
  }

  // "refused" for a filter lspci refuses (it dies with exit 1 and says why on stderr), else
  // the addresses it lists, one per line.
  std::string lspci_lists(const std::string& slot, const std::string& id) {
    std::string command = std::string(kLspci) + " -A linux-sysfs -O sysfs.path=" + tree_->pci_root() + " -D -n";
    if (!slot.empty()) command += " -s '" + slot + "'";
    if (!id.empty()) command += " -d '" + id + "'";
    const std::string output = run(command + " 2>&1; echo rc=$?");
    if (output.ends_with("rc=1\n") && output.starts_with("lspci: -")) return "refused";
    std::string listed;
    std::istringstream lines(output);
    for (std::string line; std::getline(lines, line);) {
      if (!line.starts_with("rc=") && !line.starts_with("lspci:")) listed += line.substr(0, line.find(' ')) + "\n";
    }
    return listed;
  }

  std::string we_list(const std::string& slot, const std::string& id) {
    DiscoveryOptions options;
    options.paths = tree_->paths();
    options.slot_filter = slot;
    options.id_filter = id;
    options.read_bindings = false;
    options.read_capabilities = false;
    auto devices = discover(options);
    if (!devices) return devices.error().code == Errc::invalid_argument ? "refused" : devices.error().message();
    std::string listed;
    for (const DeviceInfo& device : *devices) listed += device.bdf.to_string() + "\n";
    return listed;
  }

  std::optional<FakeSysfs> tree_;
};

TEST_F(LspciFilters, SlotAndIdFiltersSelectWhatLspciSelects) {
  const std::pair<const char*, const char*> filters[] = {
      {"01:", ""}, {"00:04.0", ""}, {"0000:02:00.1", ""}, {".1", ""}, {"2.", ""}, {"02:", ""},
      {"*:*.*", ""}, {"0001:", ""}, {"0001::", ""}, {"1:40:1f.7", ""}, {"00:1f", ""}, {"ff:", ""},
      {"0:0:3", ""}, {"3", ""}, {":3", ""}, {"*:1f.*", ""}, {".7", ""},
      {"", "1b36:"}, {"", ":0010"}, {"", "8086:154c"}, {"", "8086:"}, {"", "::0108"}, {"", "::01xx"},
      {"", "::0xxx"}, {"", "::xx80"}, {"", ":::02"}, {"", "::0c03:30"}, {"", "*:*"}, {"", "8086:*:0200"},
      {"", "1234:11e8"}, {"", "ffff:"}, {"", "::0101:80"},
      {"02:", "8086:154c"}, {"0:", "1b36:"}, {"0001:", "::0c03"},
      // Refused by both: a bad number, a field too many, an x where no mask is allowed.
      {"zz:", ""}, {"1:2:3:4", ""}, {"00:20", ""}, {".8", ""}, {"", "12345:"}, {"", "1b3x:"}, {"", "1"},
      {"", "1:2:3:4:5"}, {"", "::10000"},
  };
  for (const auto& [slot, id] : filters) {
    SCOPED_TRACE(std::string("-s '") + slot + "' -d '" + id + "'");
    const std::string theirs = lspci_lists(slot, id);
    EXPECT_EQ(we_list(slot, id), theirs);
  }
}

}  // namespace
}  // namespace pcie
