// Runs the built pciectl against a fake sysfs tree and checks its output and exit codes.
#include <fmt/format.h>
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>

#include "pcie/capabilities.h"
#include "pcie/testing/fake_sysfs.h"
#include "tests/cli_helpers.h"

namespace pcie {
namespace {

using cli::CommandResult;
using cli::g_pciectl;
using cli::lines_of;


const Bdf kEdu = testing::kVmEdu;
const Bdf kTestdev = testing::kVmPciTestdev;

class PciectlTest : public ::testing::Test {
 protected:
  void SetUp() override {
    ASSERT_FALSE(g_pciectl.empty()) << "run with --pciectl=PATH";
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
  }

  CommandResult pciectl(const std::string& arguments, const std::string& environment = "") {
    // --dev-vfio: never this machine's VFIO nodes, whatever a fake device's group number.
    return cli::run_command(environment + " " + g_pciectl + " --sysfs " + tree_->directory() + "/sys --proc " +
                                tree_->directory() + "/proc --dev-vfio " + tree_->directory() + "/dev/vfio " + arguments,
                            tree_->directory());
  }

  std::vector<std::uint8_t> file_bytes(const Bdf& bdf, const std::string& name, std::size_t offset, std::size_t count) {
    return tree_->read_device_bytes(bdf, name, offset, count).value_or(std::vector<std::uint8_t>{});
  }

  void expect_error(const CommandResult& run, int code, const std::string& fragment) {
    EXPECT_EQ(run.exit_code, code) << run.err;
    EXPECT_TRUE(run.out.empty()) << run.out;
    EXPECT_EQ(lines_of(run.err).size(), 1u) << run.err;  // one line
    EXPECT_TRUE(run.err.starts_with("pciectl: error: ")) << run.err;
    EXPECT_NE(run.err.find(fragment), std::string::npos) << run.err;
  }

  std::optional<testing::FakeSysfs> tree_;
};

constexpr const char* kVmIomem =
    "00000000-00000fff : Reserved\n"
    "00001000-0009fbff : System RAM\n"
    "c0000000-febfffff : PCI Bus 0000:00\n"
    "  fe600000-fe7fffff : PCI Bus 0000:01\n"
    "    fe600000-fe603fff : 0000:01:00.0\n"
    "      fe600000-fe603fff : nvme\n"
    "  fe800000-fe8fffff : 0000:00:03.0\n";

TEST_F(PciectlTest, IomemShowsTheTreeWithOwners) {
  ASSERT_TRUE(tree_->set_iomem(kVmIomem));
  const CommandResult run = pciectl("iomem");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("    fe600000-fe603fff : 0000:01:00.0  [device, claimed by nvme]\n"), std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("  fe800000-fe8fffff : 0000:00:03.0  [device, not claimed]\n"), std::string::npos) << run.out;
  const CommandResult one = pciectl("iomem 0xfe600010");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out,
            "c0000000-febfffff : PCI Bus 0000:00\n"
            "  fe600000-fe7fffff : PCI Bus 0000:01\n"
            "    fe600000-fe603fff : 0000:01:00.0\n"
            "      fe600000-fe603fff : nvme\n"
            "owner: 0000:01:00.0 (claimed by nvme)\n");
  EXPECT_EQ(pciectl("iomem 0x1000").out, "00001000-0009fbff : System RAM\nowner: System RAM\n");
}

TEST_F(PciectlTest, IomemAsNonRootSaysAddressesAreHidden) {
  ASSERT_TRUE(tree_->set_iomem("00000000-00000000 : System RAM\n00000000-00000000 : PCI Bus 0000:00\n"));
  const CommandResult run = pciectl("iomem");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.err.find("run as root to see them"), std::string::npos) << run.err;
  expect_error(pciectl("iomem 0xfe000000"), 4, "hides addresses");
  ASSERT_TRUE(tree_->set_iomem("fe000000-fdffffff : backwards\n"));
  expect_error(pciectl("iomem"), 1, "ends before it starts");
}

TEST_F(PciectlTest, MemReadsWritesAndDumpsPhysicalAddresses) {
  const std::string dev_mem = tree_->directory() + "/mem";
  {
    std::ofstream out(dev_mem, std::ios::binary);
    for (int i = 0; i < 3 * 4096; ++i) out.put(static_cast<char>(i & 0xff));
  }
  const std::string mem = "mem --dev-mem " + dev_mem + " ";
  CommandResult run = pciectl(mem + "read 0x1004");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x07060504\n");
  EXPECT_EQ(nlohmann::json::parse(pciectl(mem + "read 0x1004 --json").out)["value"].get<std::uint64_t>(), 0x07060504u);
  ASSERT_EQ(pciectl(mem + "write 0x1ffc 0xdeadbeef -w 32").exit_code, 0);
  EXPECT_EQ(pciectl(mem + "read 0x1ffc -w 16").out, "0xbeef\n");
  run = pciectl(mem + "dump 0x1ff8 --length 16 -w 32");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "00001ff8: fbfaf9f8 deadbeef 03020100 07060504\n") << "labelled with physical addresses";
  expect_error(pciectl(mem + "read 0x1002"), 2, "not aligned");
  expect_error(pciectl(mem + "read 0xffffffffffffffff -w 8"), 2, "");
  expect_error(pciectl(mem + "dump 0x1000 --length 0"), 2, "length is zero");
  EXPECT_EQ(pciectl(mem + "write 0x1000").exit_code, 2) << "write needs a value";
  EXPECT_EQ(pciectl(mem + "read 0x1000 5").exit_code, 2) << "read takes none";
  expect_error(pciectl("mem --dev-mem " + tree_->directory() + "/none read 0x0"), 3, "CONFIG_DEVMEM");
}

TEST_F(PciectlTest, LsListsEveryDeviceLikeLspci) {
  const CommandResult run = pciectl("ls");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto lines = lines_of(run.out);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0], "0000:00:03.0 Unclassified device [00ff]: Device [1234:11e8] (rev 10)");
  EXPECT_EQ(lines[1], "0000:00:04.0 RAM memory [0500]: Red Hat, Inc. Inter-VM shared memory [1af4:1110] (rev 01)");
  EXPECT_EQ(lines[2], "0000:00:05.0 Unclassified device [00ff]: Red Hat, Inc. QEMU PCI Test Device [1b36:0005]");
  EXPECT_EQ(lines[3],
            "0000:01:00.0 Non-Volatile memory controller [0108]: Red Hat, Inc. QEMU NVM Express Controller "
            "[1b36:0010] (rev 02)");
}

// `pciectl ls` prints what `lspci -nn -D` prints, line for line, on several trees: the VM's
// devices (one with a prog-if, which lspci shows only with -v), an SR-IOV PF with VFs,
// devices unknown to pci.ids and a bridge.
TEST_F(PciectlTest, LsEqualsLspciNnDLineForLine) {
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(Bdf{0, 2, 0, 0}, 4, 2)));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(Bdf{0, 2, 0, 1}, Bdf{0, 2, 0, 0})));
  testing::FakeDevice unknown;
  unknown.bdf = Bdf{1, 0x40, 0x1f, 7};
  unknown.vendor_id = 0x1d0f;  // a vendor with names for few devices
  unknown.device_id = 0xeeee;
  unknown.class_code = 0x120000;  // processing accelerator
  unknown.revision = 0;
  ASSERT_TRUE(tree_->add_device(unknown));
  testing::FakeDevice bridge;
  bridge.bdf = Bdf{0, 0, 0x1c, 0};
  bridge.vendor_id = 0x8086;
  bridge.device_id = 0xa110;
  bridge.class_code = 0x060400;
  bridge.header_type = 1;
  bridge.revision = 0xf1;
  ASSERT_TRUE(tree_->add_device(bridge));
  const CommandResult ours = pciectl("ls");
  ASSERT_EQ(ours.exit_code, 0) << ours.err;
  const CommandResult theirs = cli::run_command(
      "lspci -nn -D -A linux-sysfs -O sysfs.path=" + tree_->pci_root(), tree_->directory());
  ASSERT_EQ(theirs.exit_code, 0) << theirs.err;
  const auto our_lines = lines_of(ours.out);
  const auto their_lines = lines_of(theirs.out);
  ASSERT_EQ(our_lines.size(), their_lines.size()) << ours.out << "---\n" << theirs.out;
  EXPECT_EQ(our_lines.size(), 8u);
  for (std::size_t i = 0; i < our_lines.size(); ++i) EXPECT_EQ(our_lines[i], their_lines[i]);
  // -x, -xxx, -xxxx: the same dumps as lspci's.
  for (const char* level : {"-x", "-xxx", "-xxxx"}) {
    SCOPED_TRACE(level);
    const CommandResult dump = pciectl(std::string("ls ") + level);
    const CommandResult reference = cli::run_command(
        std::string("lspci -nn -D ") + level + " -A linux-sysfs -O sysfs.path=" + tree_->pci_root(), tree_->directory());
    ASSERT_EQ(dump.exit_code, 0) << dump.err;
    EXPECT_EQ(dump.out, reference.out);
    EXPECT_GT(lines_of(dump.out).size(), our_lines.size() * 4);
  }
  // -v adds the details, with the prog-if on the first line as lspci -v has it.
  const CommandResult verbose = pciectl("ls -v -s 01:00.0");
  ASSERT_EQ(verbose.exit_code, 0) << verbose.err;
  EXPECT_TRUE(verbose.out.starts_with("0000:01:00.0 Non-Volatile memory controller [0108]")) << verbose.out;
  EXPECT_NE(verbose.out.find("(rev 02) (prog-if 02)\n"), std::string::npos) << verbose.out;
  EXPECT_NE(verbose.out.find("[100 v2] Advanced Error Reporting"), std::string::npos) << verbose.out;
}

// Devices for the tree and machine-readable tests.
testing::FakeDevice tree_endpoint(const Bdf& bdf, std::uint16_t vendor, std::uint16_t device, std::uint32_t class_code) {
  testing::FakeDevice fake;
  fake.bdf = bdf;
  fake.vendor_id = vendor;
  fake.device_id = device;
  fake.class_code = class_code;
  return fake;
}

testing::FakeDevice tree_bridge(const Bdf& bdf, std::uint8_t primary, std::uint8_t secondary, std::uint8_t subordinate,
                                std::uint32_t class_code = 0x060400, std::uint8_t header_type = 1) {
  testing::FakeDevice fake = tree_endpoint(bdf, 0x1b36, 0x000c, class_code);  // QEMU's PCIe root port
  fake.header_type = header_type;
  fake.bridge_buses = BridgeBuses{primary, secondary, subordinate};
  return fake;
}

struct TreeShape {
  const char* name;
  bool start_from_the_vm_tree;
  std::vector<testing::FakeDevice> devices;
};

std::vector<TreeShape> tree_shapes() {
  std::vector<TreeShape> shapes;
  shapes.push_back({"the VM's devices with an SR-IOV PF and VF",
                    true,
                    {testing::sriov_pf(Bdf{0, 2, 0, 0}, 4, 2), testing::sriov_vf(Bdf{0, 2, 0, 1}, Bdf{0, 2, 0, 0})}});
  shapes.push_back({"root ports, a switch, multi-function devices, three root buses",
                    false,
                    {tree_endpoint(Bdf{0, 0, 0, 0}, 0x8086, 0x29c0, 0x060000),
                     tree_bridge(Bdf{0, 0, 1, 0}, 0, 1, 1),
                     tree_bridge(Bdf{0, 0, 1, 1}, 0, 2, 4),
                     tree_endpoint(Bdf{0, 0, 2, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{0, 1, 0, 0}, 0x1b36, 0x0010, 0x010802),
                     tree_bridge(Bdf{0, 2, 0, 0}, 2, 3, 4),
                     tree_endpoint(Bdf{0, 3, 0, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{0, 3, 0, 1}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{0, 0x80, 0, 0}, 0x8086, 0x29c0, 0x060000),
                     tree_endpoint(Bdf{1, 0, 0, 0}, 0x8086, 0x29c0, 0x060000)}});
  shapes.push_back({"odd bus numbers: one domain, stray buses, CardBus, secondary above subordinate, a type 1 "
                    "header that is no bridge",
                    false,
                    {tree_endpoint(Bdf{1, 0, 0, 0}, 0x8086, 0x29c0, 0x060000),
                     tree_bridge(Bdf{1, 0, 1, 0}, 0, 2, 6),
                     tree_bridge(Bdf{1, 0, 2, 0}, 0, 7, 7, 0x060700, 2),
                     tree_bridge(Bdf{1, 0, 3, 0}, 0, 9, 8),
                     tree_bridge(Bdf{1, 0, 4, 0}, 0, 10, 10, 0x010000),
                     tree_endpoint(Bdf{1, 2, 0, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{1, 4, 0, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{1, 5, 0, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{1, 10, 0, 0}, 0x1234, 0x11e8, 0x00ff00),
                     tree_endpoint(Bdf{1, 0x30, 0, 0}, 0x1234, 0x11e8, 0x00ff00)}});
  shapes.push_back({"overlapping bridge ranges",
                    false,
                    {tree_bridge(Bdf{0, 0, 1, 0}, 0, 1, 5), tree_bridge(Bdf{0, 0, 2, 0}, 0, 3, 3),
                     tree_bridge(Bdf{0, 1, 0, 0}, 1, 2, 3), tree_endpoint(Bdf{0, 3, 0, 0}, 0x1234, 0x11e8, 0x00ff00)}});
  TreeShape chain{"a chain of 24 bridges", false, {}};
  for (std::uint8_t bus = 0; bus < 24; ++bus) {
    chain.devices.push_back(tree_bridge(Bdf{0, bus, 0, 0}, bus, static_cast<std::uint8_t>(bus + 1), 24));
  }
  chain.devices.push_back(tree_endpoint(Bdf{0, 24, 0, 0}, 0x1b36, 0x0010, 0x010802));
  shapes.push_back(std::move(chain));
  shapes.push_back({"no devices at all", false, {}});
  return shapes;
}

// `pciectl ls -t` draws what `lspci -t` draws and `ls -t -v` what `lspci -tv -nn` draws,
// byte for byte, on every shape: lspci's placement of devices by bus numbers, malformed
// ones included.
TEST_F(PciectlTest, LsTreeEqualsLspciTOnEveryShape) {
  for (const TreeShape& shape : tree_shapes()) {
    SCOPED_TRACE(shape.name);
    if (!shape.start_from_the_vm_tree) {
      auto empty = testing::FakeSysfs::create();
      ASSERT_TRUE(empty) << empty.error().message();
      tree_.emplace(std::move(*empty));
    }
    for (const testing::FakeDevice& device : shape.devices) {
      auto added = tree_->add_device(device);
      ASSERT_TRUE(added) << added.error().message();
    }
    for (const auto& [ours, theirs] : {std::pair{"ls -t", "-t"}, std::pair{"ls -t -v", "-tv -nn"}}) {
      SCOPED_TRACE(ours);
      const CommandResult drawn = pciectl(ours);
      ASSERT_EQ(drawn.exit_code, 0) << drawn.err;
      const CommandResult reference = cli::run_command(
          std::string("lspci ") + theirs + " -A linux-sysfs -O sysfs.path=" + tree_->pci_root(), tree_->directory());
      ASSERT_EQ(reference.exit_code, 0) << reference.err;
      EXPECT_EQ(drawn.out, reference.out) << "ours:\n" << drawn.out << "lspci:\n" << reference.out;
      EXPECT_FALSE(drawn.out.empty());
    }
  }
}

// With a selection the tree keeps the selected devices and the bridges above them; --json
// gives the same tree nested.
TEST_F(PciectlTest, LsTreeWithASelectionKeepsThePathsToIt) {
  auto empty = testing::FakeSysfs::create();
  ASSERT_TRUE(empty) << empty.error().message();
  tree_.emplace(std::move(*empty));
  const std::vector<TreeShape> shapes = tree_shapes();
  for (const testing::FakeDevice& device : shapes[1].devices) ASSERT_TRUE(tree_->add_device(device));
  const CommandResult edu_like = pciectl("ls -t -d 1234:");
  ASSERT_EQ(edu_like.exit_code, 0) << edu_like.err;
  EXPECT_EQ(edu_like.out,
            "-[0000:00]-+-01.1-[02-04]----00.0-[03-04]--+-00.0\n"
            "           |                               \\-00.1\n"
            "           \\-02.0\n");
  const CommandResult one = pciectl("ls -t -v -s 01:00.0");
  ASSERT_EQ(one.exit_code, 0) << one.err;
  EXPECT_EQ(one.out, "-[0000:00]---01.0-[01]----00.0  Red Hat, Inc. QEMU NVM Express Controller [1b36:0010]\n");
  const CommandResult bridge_only = pciectl("ls -t -s 00:01.1");
  ASSERT_EQ(bridge_only.exit_code, 0) << bridge_only.err;
  EXPECT_EQ(bridge_only.out, "-[0000:00]---01.1-[02-04]--\n");
  const CommandResult other_domain = pciectl("ls -t -s 0001:00:00.0");
  ASSERT_EQ(other_domain.exit_code, 0) << other_domain.err;
  EXPECT_EQ(other_domain.out, "-[0001:00]---00.0\n");
  const CommandResult none = pciectl("ls -t -s 05:");
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_TRUE(none.out.empty()) << none.out;

  const CommandResult json = pciectl("--json ls -t");
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto roots = nlohmann::json::parse(json.out);
  ASSERT_EQ(roots.size(), 3u) << json.out;
  EXPECT_EQ(roots[0]["domain"], 0);
  EXPECT_EQ(roots[1]["bus"], 0x80);
  EXPECT_EQ(roots[2]["domain"], 1);
  const auto& switch_port = roots[0]["devices"][2];
  EXPECT_EQ(switch_port["bdf"], "0000:00:01.1");
  EXPECT_EQ(switch_port["secondary_bus"], 2);
  EXPECT_EQ(switch_port["subordinate_bus"], 4);
  const auto& below = switch_port["buses"][0]["devices"][0]["buses"][0]["devices"];
  ASSERT_EQ(below.size(), 2u) << json.out;
  EXPECT_EQ(below[1]["bdf"], "0000:03:00.1");
  EXPECT_EQ(below[1]["name"], "Device [1234:11e8]");
}

// Bus numbers can place a bridge below itself; lspci then loses the devices there. pciectl
// draws the same tree and names them on stderr.
TEST_F(PciectlTest, LsTreeNamesDevicesItsBusNumbersLeaveOut) {
  auto empty = testing::FakeSysfs::create();
  ASSERT_TRUE(empty) << empty.error().message();
  tree_.emplace(std::move(*empty));
  ASSERT_TRUE(tree_->add_device(tree_bridge(Bdf{0, 0, 1, 0}, 0, 1, 2)));
  ASSERT_TRUE(tree_->add_device(tree_bridge(Bdf{0, 1, 0, 0}, 1, 1, 1)));  // forwards its own bus
  ASSERT_TRUE(tree_->add_device(tree_endpoint(Bdf{0, 2, 0, 0}, 0x1234, 0x11e8, 0x00ff00)));
  const CommandResult drawn = pciectl("ls -t");
  ASSERT_EQ(drawn.exit_code, 0) << drawn.err;
  const CommandResult reference =
      cli::run_command("lspci -t -A linux-sysfs -O sysfs.path=" + tree_->pci_root(), tree_->directory());
  EXPECT_EQ(drawn.out, reference.out);
  EXPECT_EQ(drawn.out.find("01:00.0"), std::string::npos);
  EXPECT_NE(drawn.err.find("warning: 0000:01:00.0"), std::string::npos) << drawn.err;
  EXPECT_NE(drawn.err.find("not in the tree"), std::string::npos) << drawn.err;
}

// `pciectl ls -mm` prints what `lspci -mm -nn -D` prints, and `-mm -v` (with -k) what
// `lspci -vmm -nn -D` (`-vmmk`) prints: known and unknown names, names with quotes,
// subsystems known, unknown and absent, revisions, NUMA nodes, drivers, physical slots.
TEST_F(PciectlTest, LsMachineReadableEqualsLspciMm) {
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(Bdf{0, 2, 0, 0}, 4, 2)));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(Bdf{0, 2, 0, 1}, Bdf{0, 2, 0, 0})));
  testing::FakeDevice quoted = tree_endpoint(Bdf{0, 0, 7, 0}, 0x1092, 0x9999, 0x040100);  // "Monster sound"
  quoted.subsystem_vendor_id = 0xffff;
  quoted.numa_node = 1;
  ASSERT_TRUE(tree_->add_device(quoted));
  testing::FakeDevice radeon = tree_endpoint(Bdf{0, 0, 8, 0}, 0x1002, 0x4966, 0x030000);
  radeon.subsystem_vendor_id = 0x148c;  // RV250 If [Radeon 9000 Pro "Evil Commando"]
  radeon.subsystem_id = 0x2039;
  radeon.revision = 0x01;
  radeon.physical_slot = "3-1";
  radeon.driver = "radeon";
  ASSERT_TRUE(tree_->add_device(radeon));
  testing::FakeDevice unknown = tree_endpoint(Bdf{0, 0, 9, 0}, 0xabcd, 0x0001, 0x123456);
  unknown.subsystem_vendor_id = 0x5a5a;  // no such vendor
  unknown.subsystem_id = 0x9999;
  ASSERT_TRUE(tree_->add_device(unknown));
  testing::FakeDevice nameless = tree_endpoint(Bdf{0, 0, 0xa, 0}, 0x1234, 0x11e8, 0xff0000);
  nameless.subsystem_vendor_id = 0x1af4;
  nameless.subsystem_id = 0x1100;
  ASSERT_TRUE(tree_->add_device(nameless));
  for (const auto& [ours, theirs] : {std::pair{"ls -mm", "-mm -nn -D"}, std::pair{"ls -mm -v", "-vmm -nn -D"},
                                     std::pair{"ls -mm -v -k", "-vmmk -nn -D"}, std::pair{"ls -mm -d 1002:", "-mm -nn -D -d 1002:"}}) {
    SCOPED_TRACE(ours);
    const CommandResult printed = pciectl(ours);
    ASSERT_EQ(printed.exit_code, 0) << printed.err;
    const CommandResult reference = cli::run_command(
        std::string("lspci ") + theirs + " -A linux-sysfs -O sysfs.path=" + tree_->pci_root(), tree_->directory());
    ASSERT_EQ(reference.exit_code, 0) << reference.err;
    EXPECT_EQ(printed.out, reference.out);
  }
  const CommandResult line = pciectl("ls -mm -s 00:08.0");
  EXPECT_EQ(line.out,
            "0000:00:08.0 \"VGA compatible controller [0300]\" \"Advanced Micro Devices, Inc. [AMD/ATI] [1002]\" "
            "\"RV250 [Radeon 9000 Series] [4966]\" -r01 -p00 \"Tul Corporation / PowerColor [148c]\" "
            "\"RV250 If [Radeon 9000 Pro \\\"Evil Commando\\\"] [2039]\"\n");
  // lspci's obsolete single -m, and combinations that mean nothing, are usage errors.
  expect_error(pciectl("ls -m"), 2, "-mm");
  expect_error(pciectl("ls -t -mm"), 2, "-t");
  expect_error(pciectl("ls -t -x"), 2, "-t");
  expect_error(pciectl("ls -mm -x"), 2, "-x");
}

TEST_F(PciectlTest, LsFilters) {
  EXPECT_EQ(lines_of(pciectl("ls -d 1b36:").out).size(), 2u);
  EXPECT_EQ(lines_of(pciectl("ls -d ::0500").out).size(), 1u);
  EXPECT_EQ(lines_of(pciectl("ls -s 01:").out).size(), 1u);
  EXPECT_EQ(lines_of(pciectl("ls -s 00:05").out).size(), 1u);
  const CommandResult by_driver = pciectl("ls --driver nvme");
  ASSERT_EQ(lines_of(by_driver.out).size(), 1u);
  EXPECT_TRUE(by_driver.out.starts_with("0000:01:00.0"));
  const CommandResult none = pciectl("ls -d 8086:");
  EXPECT_EQ(none.exit_code, 0) << none.err;
  EXPECT_TRUE(none.out.empty()) << none.out;
  EXPECT_TRUE(none.err.empty()) << none.err;
}

TEST_F(PciectlTest, LsShowsDrivers) {
  const auto lines = lines_of(pciectl("ls -k").out);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_TRUE(lines[3].ends_with("driver=nvme iommu_group=8")) << lines[3];
  EXPECT_TRUE(lines[0].ends_with("driver=none iommu_group=5")) << lines[0];
}

TEST_F(PciectlTest, LsJson) {
  const CommandResult run = pciectl("ls --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  ASSERT_EQ(json.size(), 4u);
  EXPECT_EQ(json[3]["bdf"], "0000:01:00.0");
  EXPECT_EQ(json[3]["class"], "010802");
  EXPECT_EQ(json[3]["link"]["max_width"], 4);
  EXPECT_EQ(json[3]["capabilities"].size(), 5u);
  EXPECT_EQ(json[1]["bars"][1]["index"], 2);
  EXPECT_EQ(json[1]["bars"][1]["is_64bit"], true);
  EXPECT_EQ(json[1]["bars"][1]["prefetchable"], true);
  EXPECT_EQ(json[1]["bars"][1]["assigned"], true);
  EXPECT_EQ(json[1]["bars"][1]["size"], 4u << 20);
}

// ---- bench (the fake tree's resource files stand in for BARs) ----

// The device's sysfs node goes away while bench measures (as a hot unplug takes it): the
// bench stops at the next row, prints no table, and exits 6 (device removed). The uevent
// watcher hears nothing from a fake tree, so this is the sysfs look between rows. The node
// goes once bench has said it is measuring (its stderr), however slow the start (ASan).
TEST_F(PciectlTest, BenchStopsWithDeviceRemovedWhenTheDeviceGoes) {
  for (const bool json : {false, true}) {
    SCOPED_TRACE(json ? "--json" : "text");
    auto fresh = testing::make_vm_tree();
    ASSERT_TRUE(fresh) << fresh.error().message();
    tree_.emplace(std::move(*fresh));
    const std::string node = tree_->directory() + "/sys/bus/pci/devices/" + testing::kVmIvshmem.to_string();
    const std::string err = tree_->directory() + "/err.txt";  // where pciectl()'s stderr goes
    ASSERT_TRUE(std::filesystem::exists(node));
    const std::string removed_at = tree_->directory() + "/removed-at";
    // 2 mappings x 2 directions x 2 sizes, each row 10 repetitions of at least 100 ms: about
    // 8 s of rows. --allow-write: bench says on stderr what it overwrites just before it
    // measures; the node goes 0.3 s later, and the time it went is kept.
    const CommandResult run = pciectl(
        "bench 0000:00:04.0 bar2 --sizes 64,4K --widths 32 --min-time-ms 100 --repetitions 10 --latency-samples 10 "
        "--allow-write --no-progress" + std::string(json ? " --json" : ""),
        "(for i in $(seq 1200); do grep -q 'will overwrite' " + err + " 2>/dev/null && break; sleep 0.05; done; "
        "sleep 0.3; rm -rf " + node + "; cat /proc/uptime > " + removed_at + ") & ");
    double uptime_now = 0, uptime_removed = 0;
    std::ifstream("/proc/uptime") >> uptime_now;
    std::ifstream(removed_at) >> uptime_removed;
    const std::string& stderr_text = run.err;
    EXPECT_EQ(run.exit_code, 6) << run.out << stderr_text;
    EXPECT_FALSE(std::filesystem::exists(node));
    // Stopped at the next row (a row is about 1 s), not after the rest of the run.
    ASSERT_GT(uptime_removed, 0) << "the node was never removed";
    EXPECT_LT(uptime_now - uptime_removed, 4.0) << "bench did not stop at the next row";
    if (json) {
      EXPECT_NE(run.out.find("\"device_removed\""), std::string::npos) << run.out;
      EXPECT_EQ(run.out.find("throughput"), std::string::npos) << run.out;
    } else {
      EXPECT_TRUE(run.out.empty()) << "a table for a removed device:\n" << run.out;
      EXPECT_NE(stderr_text.find("pciectl: error: "), std::string::npos) << stderr_text;
      EXPECT_NE(stderr_text.find("the device was removed while the command ran"), std::string::npos) << stderr_text;
    }
  }
}

TEST_F(PciectlTest, BenchReadsOnlyUnlessAllowedToWrite) {
  const std::vector<std::uint8_t> before = file_bytes(testing::kVmIvshmem, "resource2", 0, 4096);
  const CommandResult run =
      pciectl("bench 0000:00:04.0 bar2 --sizes 64,4K --min-time-ms 1 --repetitions 2 --latency-samples 50");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("reads only; pass --allow-write"), std::string::npos) << run.err;
  EXPECT_NE(run.out.find("write-combined   read   copy ("), std::string::npos) << run.out;
  EXPECT_EQ(run.out.find(" write "), std::string::npos) << "a write row without --allow-write:\n" << run.out;
  EXPECT_NE(run.out.find("32-bit read"), std::string::npos) << "no latency row:\n" << run.out;
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2", 0, 4096), before);
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2_wc", 0, 4096), before);
}

TEST_F(PciectlTest, BenchWritesSaysWhatItOverwritesAndReportsJson) {
  const CommandResult run = pciectl(
      "bench 0000:00:04.0 bar2 --offset 0x1000 --length 8K --sizes 64,8K --widths 32,copy --min-time-ms 1 "
      "--repetitions 3 --latency-samples 20 --allow-write --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("will overwrite 0000:00:04.0 BAR2 [0x1000, 0x3000) (8 KiB)"), std::string::npos) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  // 2 mappings x 2 directions x 2 access kinds x 2 sizes.
  ASSERT_EQ(json["throughput"].size(), 16u) << run.out;
  for (const auto& row : json["throughput"]) {
    EXPECT_GT(row["median_gbs"].get<double>(), 0) << row;
    EXPECT_EQ(row["samples_gbs"].size(), 3u);
  }
  ASSERT_EQ(json["latency"].size(), 4u);
  EXPECT_EQ(json["latency"][1]["access"], "posted 32-bit write + read-back");
  // The window (and only the window) was written.
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2", 0, 16), std::vector<std::uint8_t>(16, 0));
  EXPECT_NE(file_bytes(testing::kVmIvshmem, "resource2", 0x1000, 16), std::vector<std::uint8_t>(16, 0));
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2", 0x3000, 16), std::vector<std::uint8_t>(16, 0));
}

TEST_F(PciectlTest, BenchPrintsTheLinksWriteCeiling) {
  // The fake nvme's link is 8 GT/s x2: 2 lanes x 8 GT/s x 128/130 / 8 x 0.657 = 1.29 GB/s.
  const CommandResult run = pciectl(
      "bench 0000:01:00.0 bar0 --sizes 64 --widths 32 --min-time-ms 1 --repetitions 1 --latency-samples 10");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("link: 8 GT/s x2; CPU writes (64-byte TLPs at most) cannot beat about 1.3 GB/s"),
            std::string::npos)
      << run.out;
}

TEST_F(PciectlTest, BenchRefusals) {
  expect_error(pciectl("bench 0000:00:05.0 bar1"), 2, "I/O-port BAR");
  expect_error(pciectl("bench 0000:00:03.0 bar0 --mapping wc"), 2, "not prefetchable");
  expect_error(pciectl("bench 0000:00:03.0 bar4"), 3, "no such BAR");
  expect_error(pciectl("bench 0000:00:03.0 bar0 --sizes 2M"), 2, "does not fit");
  expect_error(pciectl("bench 0000:00:03.0 bar0 --widths 128"), 2, "expected 8, 16, 32, 64 or copy");
  expect_error(pciectl("bench 0000:00:03.0 bar0 --kernel avx1024"), 2, "unknown kernel");
  expect_error(pciectl("bench 0000:00:03.0 bar0 --sizes 6 --widths 32"), 2, "not a whole number of 32-bit accesses");
}

// Hostile and degenerate options: each is a one-line usage error before anything is
// mapped or written, or the announced window is honoured to the byte. None may loop,
// crash or run undefined behaviour.
TEST_F(PciectlTest, BenchHostileOptionsAreUsageErrors) {
  const std::vector<std::uint8_t> before = file_bytes(testing::kVmIvshmem, "resource2", 0, 8192);
  const std::string bench = "bench 0000:00:04.0 bar2 ";  // every case fails before measuring
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--length 0x4000000000000000", "past the end"},
      {"--length 0xffffffffffffffff", "past the end"},
      {"--length 0x400001", "past the end"},
      {"--offset 0x3ff000 --length 0x2000", "past the end"},
      {"--offset 0xfffffffffffff000", "past the end"},
      {"--length 0", "--length must be at least 4 bytes"},
      {"--length 1 --allow-write", "--length must be at least 4 bytes"},
      {"--length 3", "--length must be at least 4 bytes"},
      {"--repetitions 0", "--repetitions must be 1 to 10000"},
      {"--repetitions 10001", "--repetitions must be 1 to 10000"},
      {"--warmup 4000000000", "--warmup must be 0 to 10000"},
      {"--latency-samples 0", "--latency-samples must be 1 to 10000000"},
      {"--latency-samples 4000000000", "--latency-samples must be 1 to 10000000"},
      {"--min-time-ms nan", "--min-time-ms"},
      {"--min-time-ms inf", "--min-time-ms"},
      {"--min-time-ms -inf", "--min-time-ms"},
      {"--min-time-ms -1", "--min-time-ms"},
      {"--min-time-ms 0", "--min-time-ms"},
      {"--min-time-ms 1e300", "--min-time-ms"},
      {"--sizes 0", "size 0"},
      {"--sizes 0x10000000000000000", "not a number"},
      {"--sizes 17179869184G", "too large"},
      {"--offset 12abc", "not a number"},
      {"--length=-4", "not a number"},
  };
  for (const auto& [options, message] : cases) {
    SCOPED_TRACE(options);
    expect_error(pciectl(bench + options), 2, message);
  }
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2", 0, 8192), before);
  EXPECT_EQ(file_bytes(testing::kVmIvshmem, "resource2_wc", 0, 8192), before);
}

TEST_F(PciectlTest, BenchHonoursASmallWindowExactly) {
  // A 4-byte window at 0x1000: every write, latency included, stays inside it.
  const CommandResult run = pciectl(
      "bench 0000:00:04.0 bar2 --offset 0x1000 --length 4 --widths 8,16,32,copy --min-time-ms 1 --repetitions 1 "
      "--latency-samples 5 --allow-write --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  EXPECT_FALSE(json["throughput"].empty());
  for (const auto& row : json["throughput"]) EXPECT_EQ(row["bytes"], 4) << row;
  for (const char* file : {"resource2", "resource2_wc"}) {
    EXPECT_EQ(file_bytes(testing::kVmIvshmem, file, 0, 0x1000), std::vector<std::uint8_t>(0x1000, 0)) << file;
    EXPECT_NE(file_bytes(testing::kVmIvshmem, file, 0x1000, 4), std::vector<std::uint8_t>(4, 0)) << file;
    EXPECT_EQ(file_bytes(testing::kVmIvshmem, file, 0x1004, 0x1000), std::vector<std::uint8_t>(0x1000, 0)) << file;
  }
}

// Whatever the user types, an error is one line: newlines, escapes and bytes that are not
// UTF-8 in any argument come out as \xNN.
TEST_F(PciectlTest, HostileTextInArgumentsGivesOneLineErrors) {
  const std::vector<std::pair<std::string, int>> cases = {
      {"read $'00:03.0\\nX' bar0 0", 2},
      {"read 00:03.0 $'bar0\\n' 0", 2},
      {"read 00:03.0 bar0 $'0x4\\n\\n'", 2},
      {"info $'\\x1b[2J00:03.0'", 2},
      {"info $'00:0\\xc3\\xa9.0'", 2},
      {"info $'\\xff\\xfe'", 2},
      {"ls -d $'12\\n34:'", 2},
      {"ls -s $'0\\r0:'", 2},
      {"bench 00:04.0 bar2 --widths $'3\\n2'", 2},
      {"bench 00:04.0 bar2 --kernel $'avx\\n2'", 2},
      {"bench 00:04.0 bar2 --sizes $'4K\\n'", 2},
      {"config 00:03.0 $'0\\n'", 2},
      {"--sysfs $'/nonexistent\\ndir' ls", 3},
      {"$'--bogus\\noption'", 2},
  };
  for (const auto& [arguments, code] : cases) {
    SCOPED_TRACE(arguments);
    const CommandResult run = cli::run_command(
        "PCIE_SYSFS=" + tree_->directory() + "/sys bash -c \"" + g_pciectl + " " + arguments + "\"", tree_->directory());
    EXPECT_EQ(run.exit_code, code) << run.err;
    EXPECT_EQ(lines_of(run.err).size(), 1u) << run.err;
    EXPECT_TRUE(run.err.starts_with("pciectl: error: ")) << run.err;
    for (char c : run.err.substr(0, run.err.size() - 1)) {
      EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << run.err;
    }
  }
}

// A config file shorter than 256 bytes that root can read whole (a fake tree, a device
// that exposes little) is not a privilege problem: no "run as root" when it would not help.
TEST_F(PciectlTest, InfoHintsRootOnlyWhenItWouldHelp) {
  auto config = testing::FakeSysfs::build_config(testing::qemu_edu(kEdu));
  ASSERT_TRUE(config);
  config->resize(64);
  ASSERT_TRUE(tree_->write_config(kEdu, *config));
  const CommandResult run = pciectl("info 00:03.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out.find("run as root"), std::string::npos) << run.out;
  EXPECT_EQ(run.out.find("non-root"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("64 bytes readable (the config file holds only 64)"), std::string::npos) << run.out;
  expect_error(pciectl("config 00:03.0 0x40"), 2, "past the 64 accessible bytes");
  EXPECT_EQ(pciectl("config 00:03.0 0x40").err.find("root"), std::string::npos);
}

TEST_F(PciectlTest, DecodingOffIsAnErrorAndEnableFixesIt) {
  ASSERT_EQ(pciectl("config 00:03.0 0x4 0 -w 16").exit_code, 0);
  expect_error(pciectl("read 00:03.0 bar0 0"), 1, "Memory Space Enable");
  EXPECT_NE(pciectl("read 00:03.0 bar0 0").err.find("--enable"), std::string::npos);
  expect_error(pciectl("dump 00:03.0 bar0"), 1, "Memory Space Enable");
  expect_error(pciectl("bench 00:03.0 bar0 --min-time-ms 1 --repetitions 1"), 1, "Memory Space Enable");
  const CommandResult enabled = pciectl("read 00:03.0 bar0 0 --enable");
  EXPECT_EQ(enabled.exit_code, 0) << enabled.err;
  EXPECT_EQ(enabled.out, "0x010000ed\n");
  EXPECT_EQ(pciectl("read 00:03.0 bar0 0").out, "0x010000ed\n");
}

TEST_F(PciectlTest, ShortResourceFileIsAnErrorNotACrash) {
  ASSERT_EQ(::truncate((tree_->device_dir(kEdu) + "/resource0").c_str(), 100), 0);
  expect_error(pciectl("read 00:03.0 bar0 0x1000"), 1, "holds 100 bytes");
  expect_error(pciectl("dump 00:03.0 bar0"), 1, "holds 100 bytes");
}

TEST_F(PciectlTest, InfoShowsSriovRelations) {
  const Bdf pf{0, 2, 0, 0}, vf0{0, 2, 2, 0}, vf1{0, 2, 2, 1};
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(pf, 4, 2)));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(vf0, pf)));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(vf1, pf)));
  const CommandResult pf_info = pciectl("info 02:00.0");
  ASSERT_EQ(pf_info.exit_code, 0) << pf_info.err;
  EXPECT_NE(pf_info.out.find("SR-IOV:       2 of 4 VFs enabled: 0000:02:02.0, 0000:02:02.1"), std::string::npos)
      << pf_info.out;
  const CommandResult vf_info = pciectl("info 02:02.1");
  ASSERT_EQ(vf_info.exit_code, 0) << vf_info.err;
  EXPECT_NE(vf_info.out.find("[8086:154c]"), std::string::npos) << vf_info.out;
  EXPECT_NE(vf_info.out.find("SR-IOV:       virtual function of 0000:02:00.0"), std::string::npos) << vf_info.out;
  EXPECT_NE(vf_info.out.find("Link:         8 GT/s x8 (max 8 GT/s x8) [of its PF]"), std::string::npos) << vf_info.out;
  EXPECT_NE(vf_info.out.find("MSI-X"), std::string::npos) << vf_info.out;
  EXPECT_EQ(vf_info.out.find("Warning"), std::string::npos) << vf_info.out;
  const auto vf_json = nlohmann::json::parse(pciectl("info 02:02.1 --json").out);
  EXPECT_EQ(vf_json["physical_function"], "0000:02:00.0");
  EXPECT_EQ(vf_json["virtual_functions"].size(), 0u);
  EXPECT_EQ(vf_json["link"]["source"], "physical_function");
  const auto pf_json = nlohmann::json::parse(pciectl("info 02:00.0 --json").out);
  EXPECT_TRUE(pf_json["physical_function"].is_null());
  EXPECT_EQ(pf_json["virtual_functions"], (nlohmann::json{"0000:02:02.0", "0000:02:02.1"}));
  EXPECT_EQ(pf_json["sriov"]["total_vfs"], 4);
  EXPECT_EQ(pf_json["sriov"]["num_vfs"], 2);
  // The VF's BAR decodes by its PF's SR-IOV control (VF Memory Space Enable), not its own
  // command register.
  const CommandResult read = pciectl("read 02:02.1 bar0 0");
  EXPECT_EQ(read.exit_code, 0) << read.err;
}

// The unbind guard through pciectl: a mounted disk (exit 5, nothing written), and a
// driver link that cannot be read (an error, never "unbound" without unbinding).
TEST_F(PciectlTest, UnbindGuardRefusesAndNeverClaimsSuccessItDidNotHave) {
  ASSERT_TRUE(tree_->add_block_device({"nvme0n1", "259:0", testing::kVmNvme, "nvme/nvme0", ""}));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 259:0 / / rw - ext4 /dev/nvme0n1 rw\n"));
  expect_error(pciectl("unbind 0000:01:00.0"), 5, "nvme0n1 is mounted on /");
  expect_error(pciectl("bind 0000:01:00.0 vfio-pci"), 5, "nvme0n1 is mounted on /");
  EXPECT_EQ(cli::slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "");

  const std::string link = tree_->device_dir(testing::kVmNvme) + "/driver";
  ASSERT_EQ(::unlink(link.c_str()), 0);
  ASSERT_TRUE(tree_->write_device_file(testing::kVmNvme, "driver", "not a link"));
  const CommandResult run = pciectl("unbind 0000:01:00.0 --force");
  EXPECT_NE(run.exit_code, 0);
  EXPECT_EQ(run.out.find("unbound"), std::string::npos) << run.out;
  EXPECT_NE(run.err.find("driver link"), std::string::npos) << run.err;
  EXPECT_EQ(cli::slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "");
}

// The memory types the kernel granted (x86 PAT), in info and bench: verified where the
// table can be read, "unverified" otherwise, and a bench mapping whose type the kernel
// did not grant is refused (exit 5), never measured under the wrong name.
TEST_F(PciectlTest, MemoryTypesAreVerifiedOrSaidToBeUnverified) {
  const CommandResult unverified = pciectl("info 00:04.0");
  ASSERT_EQ(unverified.exit_code, 0) << unverified.err;
  EXPECT_NE(unverified.out.find("Memory types: unverified"), std::string::npos) << unverified.out;
  ASSERT_TRUE(tree_->set_pat_memtypes("PAT: [mem 0x0000000800000000-0x0000000800400000] uncached-minus\n"));
  const CommandResult verified = pciectl("info 00:04.0");
  EXPECT_NE(verified.out.find("size 4 MiB [mapped now: uncached-minus]"), std::string::npos) << verified.out;
  EXPECT_NE(verified.out.find("Memory types: verified"), std::string::npos) << verified.out;
  const auto json = nlohmann::json::parse(pciectl("info 00:04.0 --json").out);
  EXPECT_EQ(json["memory_types_verified"], true);
  EXPECT_EQ(json["bars"][1]["mapped_memory_types"], (nlohmann::json{"uncached-minus"}));

  // Something holds the BAR uncached: bench's write-combined mapping would be uncached too.
  expect_error(pciectl("bench 00:04.0 bar2 --mapping wc --sizes 64 --min-time-ms 1 --repetitions 1"), 5,
               "the kernel granted uncached-minus");
  const CommandResult uc = pciectl("bench 00:04.0 bar2 --mapping uc --sizes 64 --widths 32 --min-time-ms 1 "
                                   "--repetitions 1 --latency-samples 3 --json");
  ASSERT_EQ(uc.exit_code, 0) << uc.err;
  const auto bench = nlohmann::json::parse(uc.out);
  EXPECT_EQ(bench["memory_types"][0]["verified"], true);
  EXPECT_EQ(bench["memory_types"][0]["granted"], "uncached-minus");
}

TEST_F(PciectlTest, LsBadFilterIsUsageError) { expect_error(pciectl("ls -d 12345:"), 2, "parse ID filter"); }

TEST_F(PciectlTest, InfoHuman) {
  const CommandResult run = pciectl("info 01:00.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("Driver:       nvme"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("IOMMU group:  8"), std::string::npos);
  EXPECT_NE(run.out.find("NUMA node:    0"), std::string::npos);
  EXPECT_NE(run.out.find("Link:         8 GT/s x2 (max 8 GT/s x4), downgraded"), std::string::npos);
  EXPECT_NE(run.out.find("BAR0:         memory 64-bit non-prefetchable at 0xfebd0000, size 16 KiB"), std::string::npos);
  EXPECT_NE(run.out.find("[100 v2] Advanced Error Reporting (0001)"), std::string::npos);
  EXPECT_NE(run.out.find("[54] PCI Express (10)"), std::string::npos);
  const CommandResult ivshmem = pciectl("info 0000:00:04.0");
  EXPECT_NE(ivshmem.out.find("BAR2:         memory 64-bit prefetchable at 0x800000000, size 4 MiB"), std::string::npos)
      << ivshmem.out;
  const CommandResult testdev = pciectl("info 00:05.0");
  EXPECT_NE(testdev.out.find("BAR1:         I/O ports at 0xc000, size 256 B"), std::string::npos) << testdev.out;
}

TEST_F(PciectlTest, InfoJson) {
  const CommandResult run = pciectl("info 00:03.0 --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  EXPECT_EQ(json["vendor_id"], "1234");
  EXPECT_EQ(json["device_id"], "11e8");
  EXPECT_EQ(json["iommu_group"], 5);
  EXPECT_TRUE(json["driver"].is_null());
  EXPECT_EQ(json["bars"][0]["size"], 1u << 20);
  EXPECT_EQ(json["capabilities"][0]["name"], "MSI");
  // The record's fields, in order, pinned: scripts read them, and the Python module's
  // dicts are the same record (a change here is a change of both outputs).
  const auto keys = [](const nlohmann::json& object) {
    std::vector<std::string> names;
    for (const auto& [key, value] : object.items()) names.push_back(key);
    return names;
  };
  const auto ordered = nlohmann::ordered_json::parse(run.out);
  std::vector<std::string> top;
  for (const auto& [key, value] : ordered.items()) top.push_back(key);
  EXPECT_EQ(top, (std::vector<std::string>{
                     "bdf", "vendor_id", "device_id", "subsystem_vendor_id", "subsystem_id", "revision", "class",
                     "class_id", "prog_if", "vendor_name", "device_name", "class_name", "subsystem_name",
                     "subsystem_vendor_name", "driver", "iommu_group", "numa_node", "physical_slot", "bridge_buses",
                     "bars", "rom", "link", "physical_function", "virtual_functions", "sriov", "capabilities",
                     "config_bytes_readable", "config_file_bytes", "warnings", "vfio", "memory_types_verified",
                     "memory_types_note"}));
  std::vector<std::string> bar;
  for (const auto& [key, value] : ordered["bars"][0].items()) bar.push_back(key);
  EXPECT_EQ(bar, (std::vector<std::string>{"index", "type", "bus_address", "size", "is_64bit", "prefetchable",
                                           "assigned", "mapped_memory_types"}));
  EXPECT_EQ(keys(json["capabilities"][0]), (std::vector<std::string>{"id", "name", "offset", "space"}));
  EXPECT_EQ(json["class"], "00ff00");
  EXPECT_EQ(json["class_id"], "00ff");
  EXPECT_EQ(json["prog_if"], "00");
  EXPECT_TRUE(json["bridge_buses"].is_null()) << "not a bridge: null, never missing";
}

// Strings from sysfs are untrusted: a driver or slot name that is not UTF-8, or that holds a
// terminal escape, is written as \xNN in every output (JSON stays valid JSON, a terminal
// gets no control sequence), and no command fails on it.
TEST_F(PciectlTest, HostileSysfsNamesAreEscapedInEveryOutput) {
  testing::FakeDevice hostile = testing::qemu_edu(Bdf{0, 0, 6, 0});
  hostile.driver = "bad\xff\xfe";
  hostile.physical_slot = "\x1b[2Jslot\xc3";
  ASSERT_TRUE(tree_->add_device(hostile));
  // A VF on a hostile driver, for `sriov`'s listing.
  const Bdf pf{0, 2, 0, 0}, vf{0, 2, 2, 0};
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(pf, 4, 1)));
  testing::FakeDevice hostile_vf = testing::sriov_vf(vf, pf);
  hostile_vf.driver = "bad\xff\xfe";
  ASSERT_TRUE(tree_->add_device(hostile_vf));
  // (command, whether its output names the driver)
  for (const auto& [command, names_driver] : std::vector<std::pair<std::string, bool>>{
           {"info 00:06.0 --json", true}, {"ls --json", true}, {"ls -t --json", false}, {"doctor 00:06.0 --json", true},
           {"--json sriov 02:00.0", true}}) {
    const CommandResult run = pciectl(command);
    ASSERT_TRUE(run.exit_code == 0 || command.starts_with("doctor")) << command << ": " << run.err;
    nlohmann::json json;
    ASSERT_NO_THROW(json = nlohmann::json::parse(run.out)) << command << ": not JSON:\n" << run.out;
    if (names_driver) {
      EXPECT_NE(run.out.find(R"(bad\\xff\\xfe)"), std::string::npos) << command << ":\n" << run.out;
    }
  }
  const auto info = nlohmann::json::parse(pciectl("info 00:06.0 --json").out);
  EXPECT_EQ(info["driver"], "bad\\xff\\xfe");
  EXPECT_EQ(info["physical_slot"], "\\x1b[2Jslot\\xc3");
  for (const std::string command : {"info 00:06.0", "ls -k", "ls -v", "ls -vmm -k", "doctor 00:06.0", "sriov 02:00.0"}) {
    const CommandResult run = pciectl(command);
    EXPECT_EQ(run.out.find('\x1b'), std::string::npos) << command << ": a raw escape reached the terminal";
    EXPECT_EQ(run.out.find('\xff'), std::string::npos) << command << ": a byte that is not UTF-8 was printed";
    EXPECT_EQ(run.err.find('\x1b'), std::string::npos) << command << ": " << run.err;
  }
}

// `pciectl peer`: whether one device can reach another's BAR by DMA, and by which path,
// in every situation the fake tree can stage: behind an IOMMU or not (<device>/iommu), with
// /dev/iommu on a kernel before and after 6.19, one device behind an IOMMU and the other
// not, BARs that can hold no window, the MSI-X table to keep off, drivers still to bind,
// the backend a default container takes; no path is exit 1, bad arguments 2 and 3.
TEST_F(PciectlTest, PeerTellsEveryPathAndWhyNot) {
  const std::string dir = tree_->directory();
  testing::FakeDevice msix_card = testing::qemu_ivshmem(Bdf{0, 0, 7, 0});
  // MSI-X: 4 entries, table at BAR2 + 0x1000, pending bits at BAR2 + 0x2000.
  msix_card.capabilities = {{cap::kMsiX, {0x03, 0x00, 0x02, 0x10, 0x00, 0x00, 0x02, 0x20, 0x00, 0x00}}};
  msix_card.driver = "vfio-pci";
  ASSERT_TRUE(tree_->add_device(msix_card));
  const auto json_of = [&](const std::string& arguments, int exit_code) {
    const CommandResult run = pciectl("peer " + arguments + " --json");
    EXPECT_EQ(run.exit_code, exit_code) << arguments << ": " << run.err;
    return run.out.empty() ? nlohmann::json() : nlohmann::json::parse(run.out);
  };
  const auto path = [](const nlohmann::json& out, std::size_t index) {
    return std::pair{out["paths"][index]["possible"].get<bool>(), out["paths"][index]["reason"].get<std::string>()};
  };
  // No IOMMU, and no host bridge the fake tree's plain directories could name: no path.
  nlohmann::json out = json_of("00:03.0 00:07.0 2", 1);
  EXPECT_FALSE(out["reachable"]);
  EXPECT_EQ(out["target"], "0000:00:07.0 BAR2 (4194304 bytes, 64-bit prefetchable memory)");
  EXPECT_EQ(out["paths"][0]["path"], "type1 (the BAR's mapping)");
  EXPECT_NE(path(out, 0).second.find("no IOMMU translates for 0000:00:03.0"), std::string::npos) << out;
  EXPECT_NE(path(out, 2).second.find("host bridge cannot be told"), std::string::npos) << out;
  const std::string notes = out["notes"].dump();
  EXPECT_NE(notes.find("bind 0000:00:03.0 to vfio-pci"), std::string::npos) << notes;
  EXPECT_EQ(notes.find("bind 0000:00:07.0"), std::string::npos) << "already on vfio-pci: " << notes;
  EXPECT_NE(notes.find("MSI-X table"), std::string::npos) << notes;
  // Only the initiator behind an IOMMU: no container holds both.
  std::filesystem::create_directory_symlink(dir + "/sys", tree_->device_dir(kEdu) + "/iommu");
  out = json_of("00:03.0 00:07.0 2", 1);
  for (std::size_t i = 0; i < 3; ++i) {
    EXPECT_NE(path(out, i).second.find("no container holds both"), std::string::npos) << out;
  }
  // Both behind one: type1; iommufd once /dev/iommu is there on 6.19 or later.
  std::filesystem::create_directory_symlink(dir + "/sys", tree_->device_dir(Bdf{0, 0, 7, 0}) + "/iommu");
  out = json_of("00:03.0 00:07.0 2", 0);
  EXPECT_NE(out["notes"].dump().find("a container opened with the defaults takes type1"), std::string::npos) << out;
  EXPECT_TRUE(out["reachable"]);
  EXPECT_TRUE(path(out, 0).first) << out;
  EXPECT_FALSE(path(out, 1).first);
  EXPECT_NE(path(out, 1).second.find("/dev/iommu"), std::string::npos) << out;
  EXPECT_NE(path(out, 2).second.find("behind an IOMMU"), std::string::npos) << out;
  std::filesystem::create_directories(dir + "/dev");
  std::ofstream(dir + "/dev/iommu") << "";
  std::filesystem::create_directories(dir + "/proc/sys/kernel");
  for (const auto& [release, possible] : {std::pair{"6.12.38+deb13-amd64\n", false}, std::pair{"6.19.0\n", true},
                                          std::pair{"7.3.4\n", true}, std::pair{"garbage\n", false}}) {
    std::ofstream(dir + "/proc/sys/kernel/osrelease") << release;
    out = json_of("00:03.0 00:07.0 2", 0);
    EXPECT_EQ(path(out, 1).first, possible) << release << out;
  }
  // BARs that hold no window, whatever the IOMMU.
  for (const auto& [arguments, reason] :
       {std::pair{"00:03.0 00:04.0 1", "BAR1 is not implemented"}, std::pair{"00:03.0 00:05.0 1", "I/O space"},
        std::pair{"00:03.0 00:04.0 0", "256 bytes, less than the page"}}) {
    out = json_of(arguments, 1);
    for (std::size_t i = 0; i < 3; ++i) {
      EXPECT_FALSE(path(out, i).first) << arguments;
      EXPECT_NE(path(out, i).second.find(reason), std::string::npos) << arguments << out;
    }
  }
  // Text: one line a path.
  const CommandResult text = pciectl("peer 00:03.0 00:07.0 bar2");
  EXPECT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("  yes  type1 (the BAR's mapping): "), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("  note: "), std::string::npos) << text.out;
  EXPECT_EQ(pciectl("peer 00:03.0 00:03.0 0").exit_code, 2);
  EXPECT_EQ(pciectl("peer 00:03.0 00:07.0 7").exit_code, 2);
  EXPECT_EQ(pciectl("peer 00:03.0 00:09.0 0").exit_code, 3);
}

// A device on vfio-pci: its group node, its cdev and the backend a container would take,
// on a kernel without device cdevs (Linux 6.1), then with one whose /dev/iommu is no
// iommufd; devices on other drivers have no VFIO lines.
TEST_F(PciectlTest, InfoShowsHowVfioReachesADevice) {
  const std::string dir = tree_->directory();
  testing::FakeDevice vfio_edu = testing::qemu_edu(Bdf{0, 0, 6, 0});
  vfio_edu.driver = "vfio-pci";
  vfio_edu.iommu_group = 30;
  ASSERT_TRUE(tree_->add_device(vfio_edu));
  std::filesystem::create_directories(dir + "/dev/vfio");
  std::ofstream(dir + "/dev/vfio/30") << "";

  CommandResult run = pciectl("info 00:06.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("VFIO group:   " + dir + "/dev/vfio/30 (yours)\n"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("VFIO cdev:    none: vfio-pci gives the device no cdev"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("VFIO backend: type1: the kernel gives VFIO devices no cdevs"), std::string::npos) << run.out;
  EXPECT_EQ(pciectl("info 00:03.0").out.find("VFIO"), std::string::npos) << "00:03.0 is on no driver";
  EXPECT_TRUE(nlohmann::json::parse(pciectl("info 00:03.0 --json").out)["vfio"].is_null());

  // Linux 6.1 lists the device in vfio-dev/ without a device number.
  const std::string vfio_dev = dir + "/sys/bus/pci/devices/0000:00:06.0/vfio-dev/vfio0";
  std::filesystem::create_directories(vfio_dev);
  std::filesystem::create_directories(dir + "/sys/class/vfio-dev/vfio0");
  run = pciectl("info 00:06.0");
  EXPECT_NE(run.out.find("VFIO cdev:    none: the kernel gives 0000:00:06.0 no cdev"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("VFIO backend: type1: the kernel gives VFIO devices no cdevs"), std::string::npos) << run.out;

  // A cdev, and a /dev/iommu that opens but is no iommufd: type1, saying why.
  std::ofstream(vfio_dev + "/dev") << "511:0\n";
  std::ofstream(dir + "/sys/class/vfio-dev/vfio0/dev") << "511:0\n";
  std::filesystem::create_directories(dir + "/dev/vfio/devices");
  std::ofstream(dir + "/dev/vfio/devices/vfio0") << "";
  std::ofstream(dir + "/dev/iommu") << "";
  run = pciectl("info 00:06.0 --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  EXPECT_EQ(json["vfio"]["group_node"], dir + "/dev/vfio/30 (yours)");
  EXPECT_EQ(json["vfio"]["cdev"], dir + "/dev/vfio/devices/vfio0 (yours)");
  EXPECT_EQ(json["vfio"]["backend"], "type1");
  EXPECT_NE(json["vfio"]["backend_reason"].get<std::string>().find("not an iommufd node"), std::string::npos)
      << json["vfio"];

  // Forced, and a typo: the error is the reason, info still succeeds.
  run = pciectl("info 00:06.0", "PCIE_VFIO_BACKEND=type1");
  EXPECT_NE(run.out.find("VFIO backend: type1: asked for (PCIE_VFIO_BACKEND=type1)"), std::string::npos) << run.out;
  run = pciectl("info 00:06.0", "PCIE_VFIO_BACKEND=iommu");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("VFIO backend: "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("PCIE_VFIO_BACKEND=iommu"), std::string::npos) << run.out;
}

TEST_F(PciectlTest, InfoErrors) {
  expect_error(pciectl("info 00:20.0"), 2, "device 0x20 is out of range");
  expect_error(pciectl("info 07:00.0"), 3, "0000:07:00.0");
}

TEST_F(PciectlTest, ReadEduIdentification) {
  CommandResult run = pciectl("read 0000:00:03.0 bar0 0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x010000ed\n");
  run = pciectl("read 00:03.0 0 0x0 -w 8");
  EXPECT_EQ(run.out, "0xed\n");
  run = pciectl("read 00:03.0 BAR0 3 -w 8");
  EXPECT_EQ(run.out, "0x01\n");
  run = pciectl("read 00:03.0 bar0 0 -w 64");
  EXPECT_EQ(run.out, "0x00000000010000ed\n");
}

TEST_F(PciectlTest, WriteThenRead) {
  CommandResult run = pciectl("write 00:03.0 bar0 0x04 0x12345678 -w 32");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_TRUE(run.out.empty());
  EXPECT_EQ(file_bytes(kEdu, "resource0", 4, 4), (std::vector<std::uint8_t>{0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(pciectl("read 00:03.0 bar0 0x4").out, "0x12345678\n");
  ASSERT_EQ(pciectl("write 00:03.0 bar0 0x88 0x1122334455667788 -w 64").exit_code, 0);
  EXPECT_EQ(pciectl("read 00:03.0 bar0 0x8c").out, "0x11223344\n");
  ASSERT_EQ(pciectl("write 00:03.0 bar0 9 255 -w 8").exit_code, 0);
  EXPECT_EQ(file_bytes(kEdu, "resource0", 9, 1), (std::vector<std::uint8_t>{0xff}));
}

TEST_F(PciectlTest, IoPortBar) {
  ASSERT_EQ(pciectl("write 00:05.0 bar1 0x10 0xbeef -w 16").exit_code, 0);
  EXPECT_EQ(pciectl("read 00:05.0 bar1 0x10 -w 16").out, "0xbeef\n");
  EXPECT_EQ(file_bytes(kTestdev, "resource1", 0x10, 2), (std::vector<std::uint8_t>{0xef, 0xbe}));
  expect_error(pciectl("read 00:05.0 bar1 0 -w 64"), 2, "accepts 8/16/32-bit");
}

TEST_F(PciectlTest, AccessErrors) {
  expect_error(pciectl("read 00:03.0 bar0 2"), 2, "must be 4-byte aligned");
  expect_error(pciectl("read 00:03.0 bar0 0x100000"), 2, "past the end");
  expect_error(pciectl("read 00:03.0 bar0 0xffffffffffffffff -w 8"), 2, "past the end");
  expect_error(pciectl("read 00:03.0 bar0 12abc"), 2, "not a number");
  expect_error(pciectl("read 00:03.0 bar0 -- -4"), 2, "not a number");
  expect_error(pciectl("read 00:03.0 bar3 0"), 3, "does not implement this BAR");
  expect_error(pciectl("read 00:03.0 bar6 0"), 2, "bar0 .. bar5");
  expect_error(pciectl("read 00:03.0 barx 0"), 2, "bar0 .. bar5");
  expect_error(pciectl("read 07:00.0 bar0 0"), 3, "does not exist");
  expect_error(pciectl("read 00:03.0 bar0 0 -w 12"), 2, "12");
  expect_error(pciectl("write 00:03.0 bar0 0 0x100 -w 8"), 2, "does not fit in 8 bits");
  expect_error(pciectl("write 00:03.0 bar0 0 0x1ffffffffffffffff -w 64"), 2, "not a number");
}

TEST_F(PciectlTest, Dump) {
  CommandResult run = pciectl("dump 00:03.0 bar0 --length 32");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto lines = lines_of(run.out);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0], "00000000: 010000ed 00000000 00000000 00000000");
  EXPECT_EQ(lines[1], "00000010: 00000000 00000000 00000000 00000000");
  run = pciectl("dump 00:03.0 bar0 --length 4 -w 8");
  EXPECT_EQ(run.out, "00000000: ed 00 00 01\n");
  run = pciectl("dump 00:04.0 bar0");  // 256-byte BAR: whole BAR by default
  EXPECT_EQ(lines_of(run.out).size(), 16u);
  run = pciectl("dump 00:04.0 bar0 --offset 0xf0");
  EXPECT_EQ(lines_of(run.out).size(), 1u);
  expect_error(pciectl("dump 00:04.0 bar0 --offset 0xf0 --length 0x20"), 2, "past the end");
  expect_error(pciectl("dump 00:03.0 bar0 --length 6"), 2, "multiples of 4");
}

TEST_F(PciectlTest, Config) {
  CommandResult run = pciectl("config 00:03.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto lines = lines_of(run.out);
  ASSERT_EQ(lines.size(), 16u);
  EXPECT_TRUE(lines[0].starts_with("000: 34 12 e8 11")) << lines[0];
  EXPECT_EQ(pciectl("config 00:03.0 0 -w 16").out, "0x1234\n");
  EXPECT_EQ(pciectl("config 00:03.0 0").out, "0x11e81234\n");
  EXPECT_EQ(pciectl("config 00:03.0 0x0b -w 8").out, "0x00\n");
  ASSERT_EQ(pciectl("config 00:03.0 0x40 0xabcd -w 16").exit_code, 0);
  EXPECT_EQ(pciectl("config 00:03.0 0x40 -w 16").out, "0xabcd\n");
  EXPECT_EQ(lines_of(pciectl("config 01:00.0").out).size(), 256u);
  expect_error(pciectl("config 00:03.0 0x100"), 2, "past the 256 accessible bytes");
  expect_error(pciectl("config 00:03.0 1 -w 16"), 2, "aligned");
  EXPECT_EQ(pciectl("config 00:03.0 0 -w 64").exit_code, 2);  // config space takes 8, 16 or 32
  expect_error(pciectl("config 00:03.0 0x100000000"), 2, "wider than 32 bits");
  expect_error(pciectl("config 09:00.0"), 3, "0000:09:00.0");
}

// setpci's syntax: names with their own widths, capability-relative offsets, suffixes,
// masked writes, hex numbers, -s/-d selectors; and its refusals.
TEST_F(PciectlTest, ConfigTakesSetpciSyntax) {
  struct Case {
    const char* arguments;
    const char* output;
  };
  // The fake nvme: PM at 0x40, MSI-X at 0x48, PCI Express at 0x54, AER at 0x100, DSN at 0x148.
  const Case reads[] = {
      {"config 00:03.0 VENDOR_ID", "0x1234\n"},
      {"config 00:03.0 device_id", "0x11e8\n"},  // names ignore case, as in setpci
      {"config 00:03.0 REVISION", "0x10\n"},
      {"config 00:03.0 CLASS_DEVICE", "0x00ff\n"},
      {"config 00:03.0 VENDOR_ID.l", "0x11e81234\n"},  // a suffix overrides the name's width
      {"config 00:03.0 2.w", "0x11e8\n"},              // bare offsets are hex
      {"config 00:03.0 0x2.w", "0x11e8\n"},
      {"config 00:03.0 10 -w 8", "0x00\n"},            // 0x10, not ten
      {"config 01:00.0 CAP_EXP.b", "0x10\n"},          // the capability's own header: its ID
      {"config 01:00.0 CAP10.b", "0x10\n"},            // setpci's numeric form
      {"config 01:00.0 CAP_MSIX.b", "0x11\n"},
      {"config 01:00.0 ECAP_AER.w", "0x0001\n"},
      {"config 01:00.0 ECAP0003.w", "0x0003\n"},
      {"config 01:00.0 ECAP_DSN+0.w", "0x0003\n"},
      {"config -d 1b36: VENDOR_ID", "0000:00:05.0 0x1b36\n0000:01:00.0 0x1b36\n"},
      {"config -s 00:03.0 DEVICE_ID", "0000:00:03.0 0x11e8\n"},
  };
  for (const Case& c : reads) {
    const CommandResult run = pciectl(c.arguments);
    EXPECT_EQ(run.exit_code, 0) << c.arguments << ": " << run.err;
    EXPECT_EQ(run.out, c.output) << c.arguments;
  }
  // The link control register of the nvme through its PCI Express capability, against the
  // raw offset: 0x54 + 0x10.
  EXPECT_EQ(pciectl("config 01:00.0 CAP_EXP+0x10.w").out, pciectl("config 01:00.0 64.w").out);

  // Writes: REG=VALUE, REG=VALUE:MASK (only the mask's bits change), the older form.
  ASSERT_EQ(pciectl("config 00:03.0 0x40.l=0x11223344").exit_code, 0);
  EXPECT_EQ(pciectl("config 00:03.0 0x40.l").out, "0x11223344\n");
  ASSERT_EQ(pciectl("config 00:03.0 0x40.w=0xffff:0x0f0f").exit_code, 0);
  EXPECT_EQ(pciectl("config 00:03.0 0x40.l").out, "0x11223f4f\n");
  ASSERT_EQ(pciectl("config 00:03.0 0x42 ab -w 8").exit_code, 0);  // OFFSET VALUE, both hex
  EXPECT_EQ(pciectl("config 00:03.0 0x40.l").out, "0x11ab3f4f\n");
  ASSERT_EQ(pciectl("config 01:00.0 CAP_EXP+0x10.w=0x0040:0x0040").exit_code, 0);
  EXPECT_EQ(pciectl("config 01:00.0 64.w").out.substr(0, 4), "0x00");
  EXPECT_NE(std::stoul(pciectl("config 01:00.0 64.w").out, nullptr, 16) & 0x40, 0u);

  struct Refusal {
    const char* arguments;
    int exit_code;
    const char* fragment;
  };
  const Refusal refusals[] = {
      {"config 00:03.0 0x40=1", 2, "a write needs a width"},
      {"config 00:03.0 0x40 1", 2, "a write needs a width"},
      {"config 00:03.0 COMMAND.q", 2, "is not .b, .w or .l"},
      {"config 00:03.0 NOT_A_REGISTER", 2, "neither a hex offset nor a register name"},
      {"config 00:03.0 CAP_NOPE", 2, "unknown capability"},
      {"config 00:03.0 COMMAND=0x10000", 2, "does not fit in 16 bits"},
      {"config 00:03.0 0x40.b=1:0x100", 2, "does not fit in 8 bits"},
      {"config 00:03.0 0x40.w=", 2, "without a value"},
      {"config 00:03.0 0x40.w=1,2", 2, "several values"},
      {"config 00:03.0 CAP_EXP.w", 3, "no standard capability 0x10"},
      {"config 00:03.0 ECAP_AER.w", 3, "no extended capability 0x1"},
      {"config 00:03.0 ffffffff+1.b", 2, "overflows"},
      {"config -d 8086: COMMAND", 3, "no device matches"},
      {"config", 2, "no device given"},
  };
  for (const Refusal& r : refusals) {
    SCOPED_TRACE(r.arguments);
    expect_error(pciectl(r.arguments), r.exit_code, r.fragment);
  }
}

// A write never guesses its width (setpci refuses too); reads keep their 32-bit default.
TEST_F(PciectlTest, WritesNeedAnExplicitWidth) {
  expect_error(pciectl("write 00:03.0 bar0 0x4 0x12345678"), 2, "a write needs an explicit width");
  EXPECT_EQ(file_bytes(kEdu, "resource0", 4, 4), (std::vector<std::uint8_t>{0, 0, 0, 0})) << "nothing written";
  ASSERT_TRUE(tree_->set_iomem(kVmIomem));
  expect_error(pciectl("mem write 0x1000 1 --dev-mem " + tree_->directory() + "/none"), 2, "explicit width");
  EXPECT_EQ(pciectl("read 00:03.0 bar0 0").out, "0x010000ed\n");
}

// With --json (anywhere on the line), results and errors are JSON on stdout, and the error
// object's exit_code is the process's.
TEST_F(PciectlTest, JsonResultsAndErrors) {
  const char* failing[] = {
      "--json read 09:00.0 bar0 0",        // not found
      "read 00:03.0 bar0 0x100000 --json",  // out of range
      "--json write 00:03.0 bar0 0 1",      // no width
      "--json config 00:03.0 CAP_EXP.w",    // no such capability
      "--json read 00:03.0",                // a usage error from the parser
      "--json read not-a-bdf bar0 0",
      "--json info 00:03.1",
      "--json dump 00:03.0 bar0 --length 3",  // not a whole number of registers
  };
  for (const char* arguments : failing) {
    SCOPED_TRACE(arguments);
    const CommandResult run = pciectl(arguments);
    EXPECT_NE(run.exit_code, 0);
    nlohmann::json json;
    ASSERT_NO_THROW(json = nlohmann::json::parse(run.out)) << run.out;
    ASSERT_TRUE(json.contains("error")) << run.out;
    EXPECT_EQ(json["error"]["exit_code"].get<int>(), run.exit_code);
    EXPECT_FALSE(json["error"]["message"].get<std::string>().empty());
    EXPECT_TRUE(json["error"].contains("hint"));
  }
  const CommandResult read = pciectl("--json read 00:03.0 bar0 0");
  ASSERT_EQ(read.exit_code, 0) << read.err;
  const auto value = nlohmann::json::parse(read.out);
  EXPECT_EQ(value["value"].get<std::uint64_t>(), 0x010000edu);
  EXPECT_EQ(value["width"].get<int>(), 32);
  const CommandResult config = pciectl("config 00:03.0 VENDOR_ID DEVICE_ID --json");
  ASSERT_EQ(config.exit_code, 0) << config.err;
  const auto registers = nlohmann::json::parse(config.out);
  ASSERT_EQ(registers.size(), 2u);
  EXPECT_EQ(registers[0]["value"].get<int>(), 0x1234);
  EXPECT_EQ(registers[1]["offset"].get<int>(), 2);
  const CommandResult written = pciectl("--json write 00:03.0 bar0 4 0x55 -w 32");
  ASSERT_EQ(written.exit_code, 0) << written.err;
  EXPECT_EQ(nlohmann::json::parse(written.out)["written"].get<int>(), 0x55);
  const CommandResult dump = pciectl("--json dump 00:03.0 bar0 --length 8");
  ASSERT_EQ(dump.exit_code, 0) << dump.err;
  const auto dumped = nlohmann::json::parse(dump.out);
  ASSERT_EQ(dumped["values"].size(), 2u);
  EXPECT_EQ(dumped["values"][0]["value"].get<std::uint64_t>(), 0x010000edu);
  EXPECT_EQ(dumped["values"][1]["offset"].get<int>(), 4);
  ASSERT_TRUE(tree_->set_iomem(kVmIomem));
  const CommandResult iomem = pciectl("--json iomem");
  ASSERT_EQ(iomem.exit_code, 0) << iomem.err;
  EXPECT_EQ(nlohmann::json::parse(iomem.out)["ranges"][1]["name"], "System RAM");
  const CommandResult owner = pciectl("iomem 0x1000 --json");
  ASSERT_EQ(owner.exit_code, 0) << owner.err;
  EXPECT_TRUE(nlohmann::json::parse(owner.out)["ram"].get<bool>());
  // Without --json, errors stay one line on stderr and nothing on stdout.
  expect_error(pciectl("read 09:00.0 bar0 0"), 3, "0000:09:00.0");
}

// The opener's choice of path (pcie/bar_opener.h) as pciectl shows it. A device bound to
// vfio-pci is tried through VFIO first; here VFIO is absent (no /dev/vfio in the tree), so
// the sysfs path answers and pciectl says why VFIO did not.
TEST_F(PciectlTest, BarAccessPathChoice) {
  testing::FakeDevice vfio_edu = testing::qemu_edu(Bdf{0, 0, 6, 0});
  vfio_edu.driver = "vfio-pci";
  vfio_edu.iommu_group = 6;
  ASSERT_TRUE(tree_->add_device(vfio_edu));
  const std::vector<std::uint8_t> id = {0xed, 0x00, 0x00, 0x01};
  ASSERT_TRUE(tree_->write_device_bytes(Bdf{0, 0, 6, 0}, "resource0", 0, id));

  CommandResult run = pciectl("read 00:06.0 bar0 0");
  EXPECT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out, "0x010000ed\n");
  EXPECT_NE(run.err.find("0000:00:06.0 BAR0 through sysfs (VFIO: "), std::string::npos) << run.err;

  run = pciectl("read 00:06.0 bar0 0 --json");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(nlohmann::json::parse(run.out)["path"], "sysfs");

  // Asked for VFIO only: its error, the one path tried.
  run = pciectl("read 00:06.0 bar0 0 --vfio");
  EXPECT_EQ(run.exit_code, 3) << run.err;
  EXPECT_NE(run.err.find("/dev/vfio"), std::string::npos) << run.err;
  EXPECT_EQ(run.err.find("tried"), std::string::npos) << run.err;
  EXPECT_EQ(pciectl("read 00:06.0 bar0 0 --via vfio").exit_code, 3);
  expect_error(pciectl("bench 00:06.0 bar0 --vfio --length 4K --no-progress"), 3, "/dev/vfio");
  expect_error(pciectl("bench 00:06.0 bar0 --vfio --mapping wc --no-progress"), 2, "uncached only");

  // Sysfs only: no note; a device not bound to vfio-pci is never tried through VFIO.
  run = pciectl("read 00:06.0 bar0 0 --via sysfs");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_TRUE(run.err.empty()) << run.err;
  run = pciectl("read 00:03.0 bar0 0");
  EXPECT_TRUE(run.err.empty()) << run.err;

  // Both refused: the telling error first, the other path's reason after it.
  run = pciectl("read 00:06.0 bar3 0");
  EXPECT_EQ(run.exit_code, 3) << run.err;
  EXPECT_NE(run.err.find("tried VFIO and sysfs"), std::string::npos) << run.err;
  EXPECT_EQ(pciectl("read 00:06.0 bar0 0 --via nowhere").exit_code, 2);
}

// pciectl vfio grant/release on a fake tree whose device is already bound to vfio-pci
// (a fake tree cannot bind: no kernel probes it), with a fake /dev/vfio/30. The VM test
// (guest_vfio_test GuestVfioGrant) binds for real and has a normal user read the BAR.
TEST_F(PciectlTest, VfioGrantAndReleaseRecordAndRestore) {
  testing::FakeDevice vfio_edu = testing::qemu_edu(Bdf{0, 0, 6, 0});
  vfio_edu.driver = "vfio-pci";
  vfio_edu.iommu_group = 30;
  ASSERT_TRUE(tree_->add_device(vfio_edu));
  testing::FakeDevice ungrouped = testing::qemu_edu(Bdf{0, 0, 7, 0});
  ungrouped.iommu_group.reset();
  ASSERT_TRUE(tree_->add_device(ungrouped));
  const std::string dev_vfio = tree_->directory() + "/dev/vfio";
  std::filesystem::create_directories(dev_vfio);
  const std::string node = dev_vfio + "/30";
  std::ofstream(node) << "";
  ASSERT_EQ(::chmod(node.c_str(), 0640), 0);
  const std::string state = " --state-dir " + tree_->directory() + "/grants --limits-conf " + tree_->directory() +
                            "/limits.conf";
  if (::geteuid() != 0) {
    expect_error(pciectl("vfio grant 00:06.0 65534" + state), 4, "needs root");
    return;
  }
  // Bazel's sandbox maps only root into its user namespace, where chown to another uid is
  // EINVAL: grant to root there (the mode still changes and comes back); outside it, and in
  // the VM test, to a real other user.
  const bool other_users = ::chown(node.c_str(), 65534, 65533) == 0 && ::chown(node.c_str(), 0, 0) == 0;
  const unsigned uid = other_users ? 65534 : 0;
  const unsigned gid = other_users ? 65533 : 0;
  std::ofstream(tree_->directory() + "/limits.conf") << "# comment\n" << uid << " hard memlock 1024\n* soft nofile 1024\n";
  CommandResult run = pciectl("vfio grant 00:06.0 " + std::to_string(uid) + ":" + std::to_string(gid) + state);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.out.find("0000:00:06.0: bound to vfio-pci (was: vfio-pci); " + node + " now owned by"), std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find(fmt::format("uid {}, gid {}, mode 0600", uid, gid)), std::string::npos) << run.out;
  EXPECT_NE(run.out.find(fmt::format("{} hard memlock 1024", uid)), std::string::npos) << run.out;
  struct stat status {};
  ASSERT_EQ(::stat(node.c_str(), &status), 0);
  EXPECT_EQ(status.st_uid, uid);
  EXPECT_EQ(status.st_gid, gid);
  EXPECT_EQ(status.st_mode & 07777, 0600u);
  EXPECT_TRUE(std::filesystem::exists(tree_->directory() + "/grants/0000:00:06.0"));

  expect_error(pciectl("vfio grant 00:06.0 65534" + state), 5, fmt::format("already granted to uid {}", uid));
  run = pciectl("--json vfio release 00:06.0" + state);
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(nlohmann::json::parse(run.out)["driver"], "vfio-pci") << "it had vfio-pci before the grant";
  ASSERT_EQ(::stat(node.c_str(), &status), 0);
  EXPECT_EQ(status.st_uid, 0u);
  EXPECT_EQ(status.st_mode & 07777, 0640u) << "the node's own mode back";
  EXPECT_FALSE(std::filesystem::exists(tree_->directory() + "/grants/0000:00:06.0"));
  expect_error(pciectl("vfio release 00:06.0" + state), 3, "no grant is recorded");

  // Refusals: no user, an unknown user, a device without an IOMMU group, a record that is
  // not ours (fails closed: nothing is unbound on its word).
  EXPECT_EQ(pciectl("vfio grant 00:06.0" + state).exit_code, 2);
  EXPECT_EQ(pciectl("vfio release 00:06.0 65534" + state).exit_code, 2);
  expect_error(pciectl("vfio grant 00:06.0 no-such-user-here" + state), 3, "no such user");
  expect_error(pciectl("vfio grant 00:07.0 65534" + state), 2, "no IOMMU group");
  std::filesystem::create_directories(tree_->directory() + "/grants");
  std::ofstream(tree_->directory() + "/grants/0000:00:06.0") << "bdf 0000:00:06.0\nprevious_driver ../x\n";
  expect_error(pciectl("vfio release 00:06.0" + state), 1, "bad driver");
  std::ofstream(tree_->directory() + "/grants/0000:00:06.0") << "bdf 0000:00:07.0\n";
  expect_error(pciectl("vfio release 00:06.0" + state), 1, "fields");
}

// pciectl doctor on fake trees: the machine's checks, and a device's verdict with its
// exit status: ready (bound to vfio-pci, group viable, node present), not bound, and in a
// group that another device's host driver spoils.
TEST_F(PciectlTest, DoctorChecksTheMachineAndTheDevice) {
  const std::string dir = tree_->directory();
  testing::FakeDevice vfio_edu = testing::qemu_edu(Bdf{0, 0, 6, 0});
  vfio_edu.driver = "vfio-pci";
  vfio_edu.iommu_group = 30;
  ASSERT_TRUE(tree_->add_device(vfio_edu));
  testing::FakeDevice shared = testing::qemu_edu(Bdf{0, 0, 7, 0});
  shared.driver = "vfio-pci";
  shared.iommu_group = 31;
  ASSERT_TRUE(tree_->add_device(shared));
  testing::FakeDevice spoiler = testing::qemu_pci_testdev(Bdf{0, 0, 8, 0});
  spoiler.driver = "some_host_driver";
  spoiler.iommu_group = 31;
  ASSERT_TRUE(tree_->add_device(spoiler));
  ASSERT_TRUE(tree_->set_kernel_cmdline("BOOT_IMAGE=/vmlinuz intel_iommu=on iommu=pt\n"));
  std::filesystem::create_directories(dir + "/sys/module/vfio_iommu_type1");
  std::filesystem::create_directories(dir + "/sys/bus/pci/drivers/vfio-pci");
  std::filesystem::create_directories(dir + "/sys/kernel/mm/hugepages/hugepages-2048kB");
  std::ofstream(dir + "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages") << "64\n";
  std::ofstream(dir + "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages") << "60\n";
  std::filesystem::create_directories(dir + "/dev/vfio");
  std::ofstream(dir + "/dev/vfio/vfio") << "";
  std::ofstream(dir + "/dev/vfio/30") << "";
  std::ofstream(dir + "/dev/vfio/31") << "";

  CommandResult run = pciectl("doctor");
  EXPECT_EQ(run.exit_code, 0) << run.out << run.err;
  EXPECT_NE(run.out.find("ok    iommu         on: "), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("2 MiB pages: 64 total, 60 free"), std::string::npos) << run.out;
  EXPECT_NE(run.out.find("VFIO is usable on this machine"), std::string::npos) << run.out;

  run = pciectl("doctor 00:06.0");
  EXPECT_EQ(run.exit_code, 0) << run.out;
  EXPECT_NE(run.out.find("0000:00:06.0 is ready for a userspace driver"), std::string::npos) << run.out;

  run = pciectl("doctor 00:03.0 --json");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  const auto json = nlohmann::json::parse(run.out);
  EXPECT_FALSE(json["ready"].get<bool>());
  bool saw_driver = false;
  for (const auto& check : json["checks"]) {
    if (check["name"] != "driver") continue;
    saw_driver = true;
    EXPECT_EQ(check["status"], "fail");
    EXPECT_NE(check["fix"].get<std::string>().find("pciectl vfio grant 0000:00:03.0"), std::string::npos);
  }
  EXPECT_TRUE(saw_driver) << run.out;

  run = pciectl("doctor 00:07.0");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_NE(run.out.find("not viable: 0000:00:08.0 (bound to some_host_driver)"), std::string::npos) << run.out;

  // The machine without an IOMMU: not usable, and says how to turn it on.
  std::filesystem::remove_all(dir + "/sys/kernel/iommu_groups");
  run = pciectl("doctor");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_NE(run.out.find("although the command line asks (intel_iommu=on)"), std::string::npos) << run.out;
  EXPECT_EQ(pciectl("doctor 00:09.0").exit_code, 1) << "no such device: not ready";
  // Ready through UIO without an IOMMU, yet the IOMMU check fails: the command fails too,
  // so a script that runs doctor stops at every failure it prints.
  testing::FakeDevice uio = testing::qemu_edu(Bdf{0, 0, 0x0a, 0});
  uio.driver = "uio_pci_generic";
  ASSERT_TRUE(tree_->add_device(uio));
  std::filesystem::create_directories(dir + "/sys/bus/pci/drivers/uio_pci_generic");
  std::filesystem::remove_all(dir + "/sys/kernel/iommu_groups");  // add_device made one again
  run = pciectl("doctor 00:0a.0");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  EXPECT_NE(run.out.find("0000:00:0a.0 is ready for a userspace driver, but 1 check failed"), std::string::npos)
      << run.out;
  EXPECT_NE(run.out.find("fail  iommu "), std::string::npos) << run.out;
  run = pciectl("doctor 00:0a.0 --json");
  EXPECT_EQ(run.exit_code, 1) << run.out;
  const auto uio_json = nlohmann::json::parse(run.out);
  EXPECT_TRUE(uio_json["ready"].get<bool>()) << run.out;
  EXPECT_EQ(uio_json["failed"].get<int>(), 1) << run.out;
  expect_error(pciectl("doctor not-a-bdf"), 2, "not-a-bdf");
}

// pciectl sriov on a fake PF with two VFs (one bound to vfio-pci): the listing, and the
// refusals that come before any write. The VM test (vm_sriov_test) creates, binds and
// removes VFs on QEMU's SR-IOV nvme.
TEST_F(PciectlTest, SriovListsAndRefuses) {
  const Bdf pf{0, 2, 0, 0}, vf0{0, 2, 0, 1}, vf1{0, 2, 0, 2};
  ASSERT_TRUE(tree_->add_device(testing::sriov_pf(pf, 4, 2)));
  testing::FakeDevice first = testing::sriov_vf(vf0, pf);
  ASSERT_TRUE(tree_->add_device(first));
  testing::FakeDevice second = testing::sriov_vf(vf1, pf);
  second.driver = "vfio-pci";
  ASSERT_TRUE(tree_->add_device(second));

  CommandResult run = pciectl("sriov 02:00.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_EQ(run.out,
            "0000:02:00.0: SR-IOV, 2 of 4 VFs enabled\n"
            "  VF0   0000:02:00.1  driver none\n"
            "  VF1   0000:02:00.2  driver vfio-pci\n");
  run = pciectl("--json sriov 02:00.0");
  ASSERT_EQ(run.exit_code, 0) << run.err;
  const auto json = nlohmann::json::parse(run.out);
  EXPECT_EQ(json["total_vfs"], 4);
  EXPECT_EQ(json["vfs"][1]["bdf"], "0000:02:00.2");

  // Every refusal below comes before any write: sriov_numvfs keeps its content and its
  // modification time (set to a known past one here; any write, of any value, moves it).
  const std::string numvfs = tree_->device_dir(pf) + "/sriov_numvfs";
  const auto long_ago = std::filesystem::file_time_type(std::chrono::hours(24 * 365));
  std::filesystem::last_write_time(numvfs, long_ago);
  auto untouched = [&](const char* after) {
    EXPECT_EQ(cli::slurp(numvfs), "2\n") << after;
    EXPECT_EQ(std::filesystem::last_write_time(numvfs), long_ago) << "sriov_numvfs was written by: " << after;
  };
  expect_error(pciectl("sriov 02:00.0 --numvfs 5"), 2, "5 VFs asked, the device offers 4");
  untouched("--numvfs 5");
  expect_error(pciectl("sriov 02:00.0 --numvfs 0"), 5, "0000:02:00.2 (bound to vfio-pci)");
  untouched("--numvfs 0");
  expect_error(pciectl("sriov 02:00.0 --numvfs 1"), 5, "its VFs are in use");
  untouched("--numvfs 1");
  expect_error(pciectl("sriov 02:00.1"), 2, "it is a virtual function of 0000:02:00.0");
  expect_error(pciectl("sriov 00:03.0"), 2, "not an SR-IOV physical function");
  expect_error(pciectl("sriov 09:00.0"), 3, "no such device");
  EXPECT_EQ(pciectl("sriov 02:00.0 --autoprobe maybe").exit_code, 2);
  untouched("--autoprobe maybe");
  // The same count is no change: nothing is written, nothing refused.
  EXPECT_EQ(pciectl("sriov 02:00.0 --numvfs 2").exit_code, 0);
  untouched("--numvfs 2 (the same count)");
}

TEST_F(PciectlTest, HelpAndUsage) {
  CommandResult run = pciectl("--help");
  EXPECT_EQ(run.exit_code, 0);
  EXPECT_NE(run.out.find("Exit codes:"), std::string::npos);
  for (const char* command : {"ls", "info", "read", "write", "dump", "config"}) {
    run = pciectl(std::string(command) + " --help");
    EXPECT_EQ(run.exit_code, 0) << command;
    EXPECT_NE(run.out.find(command), std::string::npos) << command;
  }
  expect_error(pciectl(""), 2, "subcommand");
  expect_error(pciectl("read 00:03.0"), 2, "required");
  expect_error(pciectl("ls --bogus"), 2, "bogus");
}

TEST_F(PciectlTest, SysfsFromEnvironment) {
  const std::string command = "PCIE_SYSFS=" + tree_->directory() + "/sys " + g_pciectl + " ls";
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(command.c_str(), "r"), &pclose);
  ASSERT_TRUE(pipe);
  char buffer[4096] = {};
  const std::size_t n = fread(buffer, 1, sizeof buffer - 1, pipe.get());
  EXPECT_EQ(lines_of(std::string(buffer, n)).size(), 4u);
}

TEST_F(PciectlTest, UnbindAndBindWriteTheSysfsAttributes) {
  const CommandResult unbind = pciectl("unbind 0000:01:00.0");
  EXPECT_EQ(unbind.exit_code, 0) << unbind.err;
  EXPECT_EQ(unbind.out, "0000:01:00.0: unbound (was: nvme)\n");
  EXPECT_EQ(cli::slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");

  // A fake tree has no kernel to bind anything: the override is written, then the check fails.
  const CommandResult bind = pciectl("bind 0000:00:03.0 vfio-pci");
  EXPECT_EQ(bind.exit_code, 1);
  EXPECT_NE(bind.err.find("vfio-pci did not take the device (driver now: none)"), std::string::npos) << bind.err;
  EXPECT_EQ(cli::slurp(tree_->device_dir(kEdu) + "/driver_override"), "vfio-pci");

  const CommandResult nothing = pciectl("bind 0000:00:03.0");
  expect_error(nothing, 2, "no driver named");
}

}  // namespace
}  // namespace pcie

int main(int argc, char** argv) { return pcie::cli::run_all_tests(argc, argv); }
