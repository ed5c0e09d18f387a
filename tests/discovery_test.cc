// Discovery over fake sysfs trees: every field compared with what the tree encodes.
#include "pcie/discovery.h"

#include <gtest/gtest.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <tuple>
#include <utility>

#include "pcie/config_space.h"
#include "pcie/testing/fake_sysfs.h"

namespace pcie {
namespace {

using testing::FakeDevice;
using testing::FakeSysfs;

const Bdf kEdu = testing::kVmEdu;
const Bdf kIvshmem = testing::kVmIvshmem;
const Bdf kTestdev = testing::kVmPciTestdev;
const Bdf kNvme = testing::kVmNvme;

class DiscoveryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    options_.paths = tree_->paths();
  }

  const DeviceInfo& find(const std::vector<DeviceInfo>& devices, const Bdf& bdf) {
    for (const DeviceInfo& device : devices) {
      if (device.bdf == bdf) return device;
    }
    ADD_FAILURE() << "device " << bdf.to_string() << " not discovered";
    static const DeviceInfo empty;
    return empty;
  }

  std::optional<FakeSysfs> tree_;
  DiscoveryOptions options_;
};

TEST_F(DiscoveryTest, FindsEveryDeviceSortedByBdf) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 4u);
  EXPECT_EQ((*devices)[0].bdf, kEdu);
  EXPECT_EQ((*devices)[1].bdf, kIvshmem);
  EXPECT_EQ((*devices)[2].bdf, kTestdev);
  EXPECT_EQ((*devices)[3].bdf, kNvme);
}

TEST_F(DiscoveryTest, PlainEndpointMatchesTree) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& edu = find(*devices, kEdu);
  EXPECT_EQ(edu.vendor_id, 0x1234);
  EXPECT_EQ(edu.device_id, 0x11e8);
  EXPECT_EQ(edu.subsystem_vendor_id, 0x1af4);
  EXPECT_EQ(edu.subsystem_id, 0x1100);
  EXPECT_EQ(edu.revision, 0x10);
  EXPECT_EQ(edu.base_class, 0x00);
  EXPECT_EQ(edu.subclass, 0xff);
  EXPECT_EQ(edu.prog_if, 0x00);
  EXPECT_EQ(edu.header_type, 0);
  ASSERT_EQ(edu.bars.size(), 1u);
  EXPECT_EQ(edu.bars[0], (BarInfo{0, 0xfea00000, 1u << 20, BarInfo::Space::memory, false, false}));
  EXPECT_FALSE(edu.rom);
  EXPECT_FALSE(edu.driver);
  EXPECT_EQ(edu.iommu_group, 5);
  EXPECT_FALSE(edu.numa_node);
  EXPECT_FALSE(edu.link);
  ASSERT_EQ(edu.capabilities.size(), 1u);
  EXPECT_EQ(edu.capabilities[0].id, cap::kMsi);
  EXPECT_EQ(edu.capabilities[0].offset, 0x40);
  EXPECT_EQ(edu.capabilities[0].name(), "MSI");
  EXPECT_EQ(edu.config_bytes_readable, 256u);
  EXPECT_TRUE(edu.warnings.empty());
}

TEST_F(DiscoveryTest, SixtyFourBitPrefetchableBar) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& ivshmem = find(*devices, kIvshmem);
  EXPECT_EQ(ivshmem.vendor_id, 0x1af4);
  EXPECT_EQ(ivshmem.device_id, 0x1110);
  EXPECT_EQ(ivshmem.class_id(), 0x0500);
  ASSERT_EQ(ivshmem.bars.size(), 2u);
  EXPECT_EQ(ivshmem.bars[0], (BarInfo{0, 0xfeb00000, 256, BarInfo::Space::memory, false, false}));
  EXPECT_EQ(ivshmem.bars[1], (BarInfo{2, 0x800000000, 4u << 20, BarInfo::Space::memory, true, true}));
  EXPECT_EQ(ivshmem.find_bar(2), &ivshmem.bars[1]);
  EXPECT_EQ(ivshmem.find_bar(3), nullptr);
  EXPECT_TRUE(ivshmem.capabilities.empty());
}

TEST_F(DiscoveryTest, IoPortBar) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& testdev = find(*devices, kTestdev);
  ASSERT_EQ(testdev.bars.size(), 2u);
  EXPECT_EQ(testdev.bars[0], (BarInfo{0, 0xfebf0000, 4096, BarInfo::Space::memory, false, false}));
  EXPECT_EQ(testdev.bars[1], (BarInfo{1, 0xc000, 256, BarInfo::Space::io, false, false}));
}

TEST_F(DiscoveryTest, PciExpressDeviceWithLinkAndExtendedCapabilities) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& nvme = find(*devices, kNvme);
  EXPECT_EQ(nvme.base_class, 0x01);
  EXPECT_EQ(nvme.subclass, 0x08);
  EXPECT_EQ(nvme.prog_if, 0x02);
  EXPECT_EQ(nvme.revision, 0x02);
  EXPECT_EQ(nvme.driver, "nvme");
  EXPECT_EQ(nvme.iommu_group, 8);
  EXPECT_EQ(nvme.numa_node, 0);
  ASSERT_EQ(nvme.bars.size(), 1u);
  EXPECT_EQ(nvme.bars[0], (BarInfo{0, 0xfebd0000, 16u << 10, BarInfo::Space::memory, true, false}));
  ASSERT_TRUE(nvme.link);
  EXPECT_EQ(nvme.link->current_speed_gts, 8.0);
  EXPECT_EQ(nvme.link->current_width, 2u);
  EXPECT_EQ(nvme.link->max_speed_gts, 8.0);
  EXPECT_EQ(nvme.link->max_width, 4u);
  EXPECT_EQ(nvme.link->source, LinkInfo::Source::config_space);
  EXPECT_EQ(nvme.config_bytes_readable, 4096u);
  const std::vector<Capability> expected = {
      {Capability::Space::standard, cap::kPowerManagement, 0, 0x40},
      {Capability::Space::standard, cap::kMsiX, 0, 0x48},
      {Capability::Space::standard, cap::kPciExpress, 0, 0x54},
      {Capability::Space::extended, ext_cap::kAdvancedErrorReporting, 2, 0x100},
      {Capability::Space::extended, ext_cap::kDeviceSerialNumber, 1, 0x148},
  };
  EXPECT_EQ(nvme.capabilities, expected);
  EXPECT_EQ(nvme.capabilities[3].name(), "Advanced Error Reporting");
  EXPECT_TRUE(nvme.warnings.empty());
}

TEST_F(DiscoveryTest, ResolvesNamesFromPciIds) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& nvme = find(*devices, kNvme);
  EXPECT_EQ(nvme.vendor_name, "Red Hat, Inc.");
  EXPECT_EQ(nvme.device_name, "QEMU NVM Express Controller");
  EXPECT_EQ(nvme.class_name, "Non-Volatile memory controller");
  const DeviceInfo& ivshmem = find(*devices, kIvshmem);
  EXPECT_EQ(ivshmem.device_name, "Inter-VM shared memory");
}

TEST_F(DiscoveryTest, NamesCanBeSkipped) {
  options_.resolve_names = false;
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  EXPECT_TRUE(find(*devices, kNvme).vendor_name.empty());
}

TEST_F(DiscoveryTest, SlotFilter) {
  options_.slot_filter = "01:";
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].bdf, kNvme);
  options_.slot_filter = "0000:00:04.0";
  devices = discover(options_);
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].bdf, kIvshmem);
}

TEST_F(DiscoveryTest, VendorDeviceFilter) {
  options_.id_filter = "1b36:";
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 2u);
  EXPECT_EQ((*devices)[0].bdf, kTestdev);
  EXPECT_EQ((*devices)[1].bdf, kNvme);
  options_.id_filter = "1234:11e8";
  devices = discover(options_);
  ASSERT_TRUE(devices);
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].bdf, kEdu);
}

TEST_F(DiscoveryTest, ClassFilter) {
  options_.id_filter = "::0108";
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].bdf, kNvme);
}

TEST_F(DiscoveryTest, DriverFilter) {
  options_.driver_filter = "nvme";
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 1u);
  EXPECT_EQ((*devices)[0].bdf, kNvme);
  options_.driver_filter = "vfio-pci";
  devices = discover(options_);
  ASSERT_TRUE(devices);
  EXPECT_TRUE(devices->empty());
}

TEST_F(DiscoveryTest, BindingsCanBeSkipped) {
  options_.read_bindings = false;
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  const DeviceInfo& nvme = find(*devices, kNvme);
  EXPECT_FALSE(nvme.driver);
  EXPECT_FALSE(nvme.iommu_group);
  EXPECT_FALSE(nvme.numa_node);
  EXPECT_EQ(nvme.vendor_id, 0x1b36);
  options_.driver_filter = "nvme";
  devices = discover(options_);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::invalid_argument);
}

TEST_F(DiscoveryTest, BadFiltersAreInvalidArguments) {
  options_.slot_filter = "zz:";
  auto devices = discover(options_);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::invalid_argument);
  options_.slot_filter.clear();
  options_.id_filter = "12345:";
  devices = discover(options_);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::invalid_argument);
}

TEST_F(DiscoveryTest, DescribeOneDevice) {
  auto nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  EXPECT_EQ(nvme->vendor_id, 0x1b36);
  EXPECT_EQ(nvme->driver, "nvme");
  ASSERT_TRUE(nvme->link);
  EXPECT_EQ(nvme->link->max_width, 4u);
}

// The physical slot, from <pci_root>/slots/<name>/address: describe() finds it as a full
// listing does, over slot directories of every shape: another device's slot, a slot with
// no device ("domain:bus"), a malformed address, one with no address file, another
// domain, and two slots naming one device (the smaller name wins, where libpci took
// whichever readdir gave first).
TEST_F(DiscoveryTest, DescribeFindsThePhysicalSlotAsTheListingDoes) {
  const std::string slots = tree_->pci_root() + "/slots";
  const auto add_slot = [&](const std::string& name, const std::optional<std::string>& address) {
    std::filesystem::create_directories(slots + "/" + name);
    if (address) std::ofstream(slots + "/" + name + "/address") << *address;
  };
  auto before = describe(kNvme, options_);
  ASSERT_TRUE(before) << before.error().message();
  EXPECT_FALSE(before->physical_slot) << "no slots directory: no slot, no warning";
  EXPECT_TRUE(before->warnings.empty());
  add_slot("9", "0000:01\n");             // a slot with no device in it
  add_slot("8", "0000:01:zz\n");          // malformed
  add_slot("7", std::nullopt);            // no address
  add_slot("6", "0000:00:03\n");          // edu's
  add_slot("5", "0001:01:00\n");          // another domain
  add_slot("4-2", "0000:01:00\n");        // the NVMe controller's
  auto nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  EXPECT_EQ(nvme->physical_slot, "4-2");
  auto listed = discover(options_);
  ASSERT_TRUE(listed) << listed.error().message();
  EXPECT_EQ(find(*listed, kNvme).physical_slot, "4-2") << "what the listing says";
  add_slot("4-1", "0000:01:00");          // the same device, no newline: the smaller name wins
  nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  EXPECT_EQ(nvme->physical_slot, "4-1");
  auto edu = describe(testing::kVmEdu, options_);
  ASSERT_TRUE(edu);
  EXPECT_EQ(edu->physical_slot, "6");
  auto ivshmem = describe(Bdf{0, 0, 4, 0}, options_);
  ASSERT_TRUE(ivshmem);
  EXPECT_FALSE(ivshmem->physical_slot);
}

// discover() reads the slots once per scan and describe() for its one device, with the
// same rules: the smallest name where two slots name one device; a slots directory that
// cannot be read is a warning on every device, since each one's slot is then unknown.
TEST_F(DiscoveryTest, ListingAndDescribeAgreeOnSlots) {
  const std::string slots = tree_->pci_root() + "/slots";
  for (const char* name : {"4-2", "4-1"}) {
    std::filesystem::create_directories(slots + "/" + name);
    std::ofstream(slots + "/" + name + "/address") << "0000:01:00\n";
  }
  auto listed = discover(options_);
  ASSERT_TRUE(listed) << listed.error().message();
  EXPECT_EQ(find(*listed, kNvme).physical_slot, "4-1");
  EXPECT_FALSE(find(*listed, kEdu).physical_slot);
  std::filesystem::remove_all(slots);
  std::ofstream(slots) << "not a directory\n";
  listed = discover(options_);
  ASSERT_TRUE(listed) << listed.error().message();
  auto described = describe(kNvme, options_);
  ASSERT_TRUE(described) << described.error().message();
  const std::vector<const DeviceInfo*> devices = {&find(*listed, kNvme), &find(*listed, kEdu), &*described};
  for (const DeviceInfo* device : devices) {
    SCOPED_TRACE(device->bdf.to_string());
    EXPECT_FALSE(device->physical_slot);
    ASSERT_EQ(device->warnings.size(), 1u);
    EXPECT_NE(device->warnings[0].find("Not a directory"), std::string::npos) << device->warnings[0];
  }
}

// describe() reads a device as discover() does: every field the same, at every level.
TEST_F(DiscoveryTest, DescribeSaysWhatTheListingSays) {
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(Bdf{0, 2, 0, 0}, 4, 1)));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(Bdf{0, 2, 0, 1}, Bdf{0, 2, 0, 0})));
  const std::pair<bool, bool> levels[] = {{false, false}, {true, false}, {true, true}};  // bindings, capabilities
  for (const auto& [bindings, capabilities] : levels) {
    options_.read_bindings = bindings;
    options_.read_capabilities = capabilities;
    auto listed = discover(options_);
    ASSERT_TRUE(listed) << listed.error().message();
    ASSERT_EQ(listed->size(), 6u);
    for (const DeviceInfo& device : *listed) {
      SCOPED_TRACE(device.bdf.to_string() + (capabilities ? " full" : bindings ? " bindings" : " ids"));
      auto described = describe(device.bdf, options_);
      ASSERT_TRUE(described) << described.error().message();
      EXPECT_EQ(std::tie(described->vendor_id, described->device_id, described->subsystem_vendor_id,
                         described->subsystem_id, described->revision, described->base_class, described->subclass,
                         described->prog_if, described->header_type),
                std::tie(device.vendor_id, device.device_id, device.subsystem_vendor_id, device.subsystem_id,
                         device.revision, device.base_class, device.subclass, device.prog_if, device.header_type));
      EXPECT_EQ(std::tie(described->vendor_name, described->device_name, described->class_name,
                         described->subsystem_name, described->physical_slot, described->bars, described->driver,
                         described->iommu_group, described->numa_node, described->physical_function,
                         described->virtual_functions, described->bridge_buses, described->capabilities,
                         described->config_bytes_readable, described->config_file_bytes, described->warnings),
                std::tie(device.vendor_name, device.device_name, device.class_name, device.subsystem_name,
                         device.physical_slot, device.bars, device.driver, device.iommu_group, device.numa_node,
                         device.physical_function, device.virtual_functions, device.bridge_buses,
                         device.capabilities, device.config_bytes_readable, device.config_file_bytes,
                         device.warnings));
      EXPECT_EQ(described->link.has_value(), device.link.has_value());
      EXPECT_EQ(described->sriov.has_value(), device.sriov.has_value());
    }
  }
}

// Where the IDs come from when the file the kernel always writes for them, modalias, is
// missing or does not parse: the vendor, device, class and subsystem attributes, with
// nothing lost. Subsystem attributes that are absent leave 0; one that holds no number
// is said.
TEST_F(DiscoveryTest, IdsFromTheAttributesWhereModaliasCannotSay) {
  for (const char* modalias : std::vector<const char*>{"", "pci:v00001234d000011E8sv00001AF4sd00001100bc00scFFi0\n",
                               "pci:v00001234d000011E8sv00001AF4sd00001100bc00scFFi00\x1b[2J\n", nullptr}) {
    SCOPED_TRACE(modalias != nullptr ? printable(modalias) : "no modalias");
    const std::string path = tree_->device_dir(kEdu) + "/modalias";
    if (modalias == nullptr) {
      std::filesystem::remove(path);
    } else {
      ASSERT_TRUE(tree_->write_device_file(kEdu, "modalias", modalias));
    }
    auto edu = describe(kEdu, options_);
    ASSERT_TRUE(edu) << edu.error().message();
    EXPECT_EQ(std::tie(edu->vendor_id, edu->device_id, edu->subsystem_vendor_id, edu->subsystem_id),
              std::make_tuple(0x1234, 0x11e8, 0x1af4, 0x1100));
    EXPECT_EQ(edu->class_id(), 0x00ff);
    if (modalias == nullptr) {
      EXPECT_TRUE(edu->warnings.empty()) << "no modalias is not worth a word: " << ::testing::PrintToString(edu->warnings);
    } else {
      // One that is there and unusable is said, its bytes printable.
      ASSERT_EQ(edu->warnings.size(), 1u) << ::testing::PrintToString(edu->warnings);
      EXPECT_NE(edu->warnings[0].find("/modalias is not the kernel's pci:v"), std::string::npos) << edu->warnings[0];
      EXPECT_NE(edu->warnings[0].find("the IDs come from the vendor, device and class attributes"), std::string::npos);
      EXPECT_EQ(edu->warnings[0].find('\x1b'), std::string::npos) << edu->warnings[0];
    }
  }
  // Attributes that fail too: the error names both.
  ASSERT_TRUE(tree_->write_device_file(kEdu, "modalias", "pci:garbage\n"));
  std::filesystem::remove(tree_->device_dir(kEdu) + "/vendor");
  auto broken = describe(kEdu, options_);
  ASSERT_FALSE(broken);
  EXPECT_NE(broken.error().message().find("/vendor"), std::string::npos) << broken.error().message();
  EXPECT_NE(broken.error().message().find("(and "), std::string::npos) << broken.error().message();
  EXPECT_NE(broken.error().message().find("/modalias is not the kernel's"), std::string::npos)
      << broken.error().message();
  ASSERT_TRUE(tree_->write_device_file(kEdu, "vendor", "0x1234\n"));
  std::filesystem::remove(tree_->device_dir(kEdu) + "/modalias");
  std::filesystem::remove(tree_->device_dir(kEdu) + "/subsystem_vendor");
  ASSERT_TRUE(tree_->write_device_file(kEdu, "subsystem_device", "0x11\x1b[2J\n"));
  auto edu = describe(kEdu, options_);
  ASSERT_TRUE(edu) << edu.error().message();
  EXPECT_EQ(edu->subsystem_vendor_id, 0);
  EXPECT_EQ(edu->subsystem_id, 0);
  ASSERT_EQ(edu->warnings.size(), 1u);
  EXPECT_TRUE(edu->warnings[0].starts_with("subsystem IDs: ")) << edu->warnings[0];
  EXPECT_NE(edu->warnings[0].find("holds no number: '0x11\\x1b[2J"), std::string::npos) << edu->warnings[0];
  ASSERT_TRUE(tree_->write_device_file(kEdu, "subsystem_vendor", "0x10000\n"));  // not 16 bits
  edu = describe(kEdu, options_);
  ASSERT_TRUE(edu) << edu.error().message();
  EXPECT_EQ(edu->subsystem_vendor_id, 0);
  ASSERT_EQ(edu->warnings.size(), 2u);
  EXPECT_NE(edu->warnings[0].find("subsystem_vendor holds no number from 0 to 0xffff"), std::string::npos)
      << edu->warnings[0];
  // An ID attribute that holds no ID fails the device, as a missing one does.
  ASSERT_TRUE(tree_->write_device_file(kEdu, "class", "0x1000000\n"));
  edu = describe(kEdu, options_);
  ASSERT_FALSE(edu);
  EXPECT_EQ(edu.error().code, Errc::malformed);
  EXPECT_NE(edu.error().message().find("/class holds no number from 0 to 0xffffff"), std::string::npos)
      << edu.error().message();
}

// The revision: from config where the full level reads it anyway and it answers, else
// the kernel's revision attribute; a removed device's config reads all ones, a short one
// has no header, a missing one none at all. The IDs stay the kernel's through all of it.
TEST_F(DiscoveryTest, RevisionFromConfigOrTheKernel) {
  auto config = FakeSysfs::build_config(testing::qemu_edu(kEdu));
  ASSERT_TRUE(config);
  (*config)[cfg::kRevisionId] = 0x10;
  const std::vector<std::uint8_t> removed(256, 0xff);
  const std::vector<std::uint8_t> short_header(config->begin(), config->begin() + 32);
  for (const std::vector<std::uint8_t>* bytes : {&std::as_const(*config), &removed, &short_header}) {
    ASSERT_TRUE(tree_->write_config(kEdu, *bytes));
    // The kernel's attribute says 0x20 where config says 0x10, to tell which was read.
    ASSERT_TRUE(tree_->write_device_file(kEdu, "revision", "0x20\n"));
    for (const bool capabilities : {false, true}) {
      SCOPED_TRACE(fmt::format("{} config bytes, {}", bytes->size(), capabilities ? "full" : "ids"));
      options_.read_capabilities = capabilities;
      auto edu = describe(kEdu, options_);
      ASSERT_TRUE(edu) << edu.error().message();
      // Config where the full level read a header that answers; else the attribute.
      EXPECT_EQ(edu->revision, capabilities && bytes == &*config ? 0x10 : 0x20);
      EXPECT_EQ(edu->vendor_id, 0x1234);
      EXPECT_EQ(edu->class_id(), 0x00ff);
      EXPECT_EQ(edu->warnings.empty(), !capabilities || bytes == &*config) << ::testing::PrintToString(edu->warnings);
    }
  }
  // No revision attribute and no config to answer: 0xff, as an unreadable register reads.
  std::filesystem::remove(tree_->device_dir(kEdu) + "/config");
  std::filesystem::remove(tree_->device_dir(kEdu) + "/revision");
  options_.read_capabilities = false;
  auto edu = describe(kEdu, options_);
  ASSERT_TRUE(edu) << edu.error().message();
  EXPECT_EQ(edu->revision, 0xff);
  EXPECT_TRUE(edu->warnings.empty()) << ::testing::PrintToString(edu->warnings);
  ASSERT_TRUE(tree_->write_device_file(kEdu, "revision", "rev 10\n"));
  edu = describe(kEdu, options_);
  ASSERT_TRUE(edu) << edu.error().message();
  EXPECT_EQ(edu->revision, 0xff);
  ASSERT_EQ(edu->warnings.size(), 1u);
  EXPECT_NE(edu->warnings[0].find("revision holds no number"), std::string::npos) << edu->warnings[0];
}

// A resource file a kernel would not write fails the device, whatever libpci would have
// made of it, and one the device does not have is an error with its errno.
TEST_F(DiscoveryTest, ResourceFileIsReadStrictly) {
  const std::string six_lines = [] {
    std::string text;
    for (int line = 0; line < 6; ++line) text += "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
    return text;
  }();
  for (const std::string& resource : {std::string("0x1000 0x1fff 0x200 0x5\n"), std::string("0X1000 0x1fff 0x200\n"),
                                     std::string("0x1000 0x1fff 0x200\r\n"), std::string(), six_lines}) {
    SCOPED_TRACE(printable(resource));
    ASSERT_TRUE(tree_->write_device_file(kEdu, "resource", resource));
    auto edu = describe(kEdu, options_);
    ASSERT_FALSE(edu);
    EXPECT_EQ(edu.error().code, Errc::malformed);
  }
  std::filesystem::remove(tree_->device_dir(kEdu) + "/resource");
  auto devices = discover(options_);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::malformed);
  EXPECT_EQ(devices.error().sys_errno, ENOENT);
  EXPECT_NE(devices.error().message().find("/resource: No such file or directory"), std::string::npos)
      << devices.error().message();
  // A filter that leaves the device out never reads it.
  options_.slot_filter = "01:";
  devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  EXPECT_EQ(devices->size(), 1u);
}

TEST_F(DiscoveryTest, DescribeMissingDeviceIsNotFound) {
  auto missing = describe(Bdf{0, 9, 9, 1}, options_);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
  EXPECT_NE(missing.error().message().find("0000:09:09.1"), std::string::npos);
}

// A config file of 64 bytes (what unprivileged users see of a real one): the link then
// comes from sysfs' link files. Here the file itself is short, so the capability list
// that points past it is a warning; for an unprivileged reader of a full file it is not
// (real_machine_test).
TEST_F(DiscoveryTest, TruncatedConfigFallsBackToSysfsLinkFiles) {
  auto config = FakeSysfs::build_config(testing::qemu_nvme(kNvme));
  ASSERT_TRUE(config);
  config->resize(64);
  ASSERT_TRUE(tree_->write_config(kNvme, *config));
  auto nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  EXPECT_EQ(nvme->config_bytes_readable, 64u);
  EXPECT_EQ(nvme->config_file_bytes, 64u);
  EXPECT_TRUE(nvme->capabilities.empty());
  ASSERT_EQ(nvme->warnings.size(), 1u);
  EXPECT_NE(nvme->warnings[0].find("beyond the 64 readable bytes"), std::string::npos) << nvme->warnings[0];
  ASSERT_TRUE(nvme->link);
  EXPECT_EQ(nvme->link->source, LinkInfo::Source::sysfs);
  EXPECT_EQ(nvme->link->current_speed_gts, 8.0);
  EXPECT_EQ(nvme->link->current_width, 2u);
  EXPECT_EQ(nvme->link->max_width, 4u);
}

TEST_F(DiscoveryTest, LoopingCapabilityListIsAWarningNotAFailure) {
  auto config = FakeSysfs::build_config(testing::qemu_nvme(kNvme));
  ASSERT_TRUE(config);
  (*config)[0x49] = 0x40;  // MSI-X's next pointer back to the first capability
  ASSERT_TRUE(tree_->write_config(kNvme, *config));
  auto nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  ASSERT_EQ(nvme->warnings.size(), 1u);
  EXPECT_NE(nvme->warnings[0].find("loops back to 0x40"), std::string::npos) << nvme->warnings[0];
  EXPECT_GE(nvme->capabilities.size(), 2u);
}

TEST_F(DiscoveryTest, RemovedDeviceIsReportedInWarnings) {
  std::vector<std::uint8_t> all_ones(4096, 0xff);
  ASSERT_TRUE(tree_->write_config(kNvme, all_ones));
  auto nvme = describe(kNvme, options_);
  ASSERT_TRUE(nvme) << nvme.error().message();
  ASSERT_FALSE(nvme->warnings.empty());
  EXPECT_NE(nvme->warnings[0].find("all ones"), std::string::npos) << nvme->warnings[0];
}

TEST(DiscoveryRom, ExpansionRomIsReported) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  FakeDevice device = testing::qemu_edu(Bdf{0, 0, 3, 0});
  device.rom_size = 64u << 10;
  ASSERT_TRUE(tree->add_device(device));
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto edu = describe(device.bdf, options);
  ASSERT_TRUE(edu) << edu.error().message();
  ASSERT_TRUE(edu->rom);
  EXPECT_EQ(edu->rom->size, 64u << 10);
  EXPECT_EQ(edu->rom->bus_address, 0xfe000000u);
  EXPECT_EQ(edu->bars.size(), 1u);  // the ROM is not a BAR
}

TEST(DiscoveryErrors, MissingTreeNamesThePath) {
  DiscoveryOptions options;
  options.paths.pci_root = "/nonexistent/sys/bus/pci";
  auto devices = discover(options);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::not_found);
  EXPECT_NE(devices.error().message().find("/nonexistent/sys/bus/pci/devices"), std::string::npos);
}

TEST(DiscoveryErrors, UnparsableEntryIsMalformedNotAnExit) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  std::filesystem::create_directories(tree->pci_root() + "/devices/not-a-device");
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto devices = discover(options);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::malformed);
  EXPECT_NE(devices.error().message().find("not-a-device"), std::string::npos);
}

std::size_t open_descriptors() {
  std::size_t count = 0;
  for ([[maybe_unused]] const auto& entry : std::filesystem::directory_iterator("/proc/self/fd")) ++count;
  return count;
}

// A resource file libpci cannot parse: libpci reports it through its error callback while
// it holds the file open (fopen, then longjmp out of the parse). Every failing discover and
// describe once leaked that file; 1,000 of each must leave the descriptor count as it was.
TEST(DiscoveryErrors, FailuresLeakNoDescriptors) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  const Bdf bdf{0, 0, 3, 0};
  ASSERT_TRUE(tree->add_device(testing::qemu_edu(bdf)));
  for (const std::string resource : {"0x1000 0x1fff\n", "garbage\n", "0x0 0x0 0x0\n\n\x01\n"}) {
    SCOPED_TRACE(resource);
    ASSERT_TRUE(tree->write_device_file(bdf, "resource", resource));
    DiscoveryOptions options;
    options.paths = tree->paths();
    const std::size_t before = open_descriptors();
    for (int i = 0; i < 1000; ++i) {
      auto devices = discover(options);
      ASSERT_FALSE(devices);
      EXPECT_EQ(devices.error().code, Errc::malformed) << devices.error().message();
      auto device = describe(bdf, options);
      ASSERT_FALSE(device);
      EXPECT_EQ(device.error().code, Errc::malformed) << device.error().message();
      EXPECT_NE(device.error().message().find("resource"), std::string::npos) << device.error().message();
    }
    EXPECT_EQ(open_descriptors(), before);
  }
}

// A tree without the modalias a kernel writes: the IDs come from the vendor, device and
// class attributes, as libpci reads them, and a missing one is an Error that keeps its
// errno (libpci's error callback once exited the process here).
TEST(DiscoveryErrors, MissingAttributeIsMalformedNotAnExit) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  const Bdf bdf{0, 0, 3, 0};
  ASSERT_TRUE(tree->add_device(testing::qemu_edu(bdf)));
  std::filesystem::remove(tree->device_dir(bdf) + "/modalias");
  std::filesystem::remove(tree->device_dir(bdf) + "/vendor");
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto devices = discover(options);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::malformed);
  EXPECT_NE(devices.error().message().find("/vendor"), std::string::npos) << devices.error().message();
  EXPECT_EQ(devices.error().sys_errno, ENOENT) << devices.error().message();
  EXPECT_NE(devices.error().message().find("No such file or directory"), std::string::npos);
}

// A class filter needs the class; a device whose class cannot be read (no modalias, no
// class attribute, no config) fails the discovery with an Error, not an abort.
TEST(DiscoveryErrors, FilterOnBrokenDeviceIsMalformedNotAnAbort) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  const Bdf bdf{0, 0, 3, 0};
  ASSERT_TRUE(tree->add_device(testing::qemu_nvme(bdf)));
  for (const char* file : {"/config", "/class", "/modalias"}) std::filesystem::remove(tree->device_dir(bdf) + file);
  DiscoveryOptions options;
  options.paths = tree->paths();
  options.id_filter = "::0108:02";
  auto devices = discover(options);
  ASSERT_FALSE(devices);
  EXPECT_EQ(devices.error().code, Errc::malformed);
  EXPECT_NE(devices.error().message().find("/class"), std::string::npos) << devices.error().message();
}

TEST(DiscoveryErrors, EmptyTreeHasNoDevices) {
  auto tree = FakeSysfs::create();
  ASSERT_TRUE(tree);
  DiscoveryOptions options;
  options.paths = tree->paths();
  auto devices = discover(options);
  ASSERT_TRUE(devices) << devices.error().message();
  EXPECT_TRUE(devices->empty());
}

// SR-IOV: a VF's config space Vendor and Device IDs read 0xffff by specification. It is a
// live device with capabilities, IDs from sysfs, and its PF's link; the PF lists its VFs.
class SriovDiscovery : public ::testing::Test {
 protected:
  static constexpr Bdf kPf{0, 2, 0, 0};
  static constexpr Bdf kVf0{0, 2, 2, 0};
  static constexpr Bdf kVf1{0, 2, 2, 1};
  void SetUp() override {
    auto tree = FakeSysfs::create();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    ASSERT_TRUE(tree_->add_device(testing::sriov_pf(kPf, 4, 2)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf(kVf0, kPf)));
    ASSERT_TRUE(tree_->add_device(testing::sriov_vf(kVf1, kPf)));
    options_.paths = tree_->paths();
  }
  void expect_virtual_function(const DeviceInfo& vf) {
    SCOPED_TRACE(vf.bdf.to_string());
    EXPECT_EQ(vf.vendor_id, 0x8086);
    EXPECT_EQ(vf.device_id, 0x154c);
    EXPECT_TRUE(vf.warnings.empty()) << vf.warnings.front();
    ASSERT_TRUE(vf.physical_function);
    EXPECT_EQ(*vf.physical_function, kPf);
    EXPECT_TRUE(vf.virtual_functions.empty());
    EXPECT_TRUE(find_capability(vf.capabilities, Capability::Space::standard, cap::kMsiX));
    EXPECT_TRUE(find_capability(vf.capabilities, Capability::Space::standard, cap::kPciExpress));
    EXPECT_TRUE(find_capability(vf.capabilities, Capability::Space::extended, ext_cap::kAdvancedErrorReporting));
    ASSERT_TRUE(vf.link) << "a VF's link is its PF's";
    EXPECT_EQ(vf.link->source, LinkInfo::Source::physical_function);
    EXPECT_EQ(vf.link->current_speed_gts, 8.0);
    EXPECT_EQ(vf.link->current_width, 8u);
    ASSERT_EQ(vf.bars.size(), 2u);
    EXPECT_EQ(vf.bars[0].size, 64u << 10);
  }
  std::optional<FakeSysfs> tree_;
  DiscoveryOptions options_;
};

TEST_F(SriovDiscovery, VirtualFunctionsAreLiveDevicesWithTheirPfsLink) {
  auto devices = discover(options_);
  ASSERT_TRUE(devices) << devices.error().message();
  ASSERT_EQ(devices->size(), 3u);
  const DeviceInfo& pf = (*devices)[0];
  EXPECT_EQ(pf.device_id, 0x1572);
  EXPECT_FALSE(pf.physical_function);
  EXPECT_EQ(pf.virtual_functions, (std::vector<Bdf>{kVf0, kVf1}));
  ASSERT_TRUE(pf.sriov);
  EXPECT_EQ(pf.sriov->total_vfs, 4u);
  EXPECT_EQ(pf.sriov->num_vfs, 2u);
  EXPECT_TRUE(find_capability(pf.capabilities, Capability::Space::extended, ext_cap::kSingleRootIov));
  expect_virtual_function((*devices)[1]);
  expect_virtual_function((*devices)[2]);
}

TEST_F(SriovDiscovery, DescribeAVirtualFunction) {
  auto vf = describe(kVf1, options_);
  ASSERT_TRUE(vf) << vf.error().message();
  EXPECT_EQ(vf->bdf, kVf1);
  expect_virtual_function(*vf);
}

TEST_F(SriovDiscovery, FiltersMatchVirtualFunctionsByTheirRealIds) {
  options_.id_filter = "8086:154c";
  auto vfs = discover(options_);
  ASSERT_TRUE(vfs) << vfs.error().message();
  EXPECT_EQ(vfs->size(), 2u);
}

// A removed device reads all ones in every register, a VF only in its IDs.
TEST_F(SriovDiscovery, RemovedVirtualFunctionIsStillRemoved) {
  ASSERT_TRUE(tree_->write_config(kVf0, std::vector<std::uint8_t>(4096, 0xff)));
  auto vf = describe(kVf0, options_);
  ASSERT_TRUE(vf) << vf.error().message();
  EXPECT_TRUE(vf->capabilities.empty());
  ASSERT_FALSE(vf->warnings.empty());
  EXPECT_NE(vf->warnings[0].find("all ones"), std::string::npos) << vf->warnings[0];
}

}  // namespace
}  // namespace pcie
