// Driver binding on a fake tree: what is written where, and the refusal to unbind a device
// this machine uses. The guard is tested on the storage shapes real machines have (LVM,
// dm-crypt, md RAID, swap, partitions deep below SAS HBAs and USB controllers, huge trees)
// and on failures while looking, which must count as "in use" (fail closed). The VM tests
// bind for real and check the guard against a real kernel's sysfs.
#include "pcie/binding.h"

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <fcntl.h>
#include <sys/resource.h>

#include <filesystem>
#include <fstream>

#include "pcie/testing/fake_sysfs.h"
#include "tests/cli_helpers.h"

namespace pcie {
namespace {

namespace fs = std::filesystem;
using testing::FakeBlockDevice;
using testing::FakeSysfs;

const Bdf kNvme = testing::kVmNvme;  // bound to "nvme" in the VM tree
const Bdf kEdu = testing::kVmEdu;

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class BindingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    paths_ = tree_->paths();
  }
  // nvme0n1 below the nvme controller, with the given partitions (nvme0n1p1 = 259:1, ...).
  void add_nvme_disk(int partitions) {
    ASSERT_TRUE(tree_->add_block_device({"nvme0n1", "259:0", kNvme, "nvme/nvme0", ""}));
    for (int p = 1; p <= partitions; ++p) {
      ASSERT_TRUE(tree_->add_block_device(
          {"nvme0n1p" + std::to_string(p), "259:" + std::to_string(p), kNvme, "nvme/nvme0/nvme0n1", ""}));
    }
  }
  void add_dm(const std::string& name, const std::string& dev, const std::string& dm_name) {
    ASSERT_TRUE(tree_->add_block_device({name, dev, std::nullopt, "", dm_name}));
  }
  std::vector<std::string> uses() {
    auto found = host_uses_of(paths_, kNvme);
    EXPECT_TRUE(found) << found.error().message();
    return found ? *found : std::vector<std::string>{"<error>"};
  }
  // The guard refused, and nothing was written to the driver's unbind file.
  void expect_unbind_refused() {
    auto refused = unbind_driver(paths_, kNvme);
    ASSERT_FALSE(refused);
    EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "") << "nothing may be written";
  }
  std::optional<FakeSysfs> tree_;
  SysfsPaths paths_;
};

TEST_F(BindingTest, UnbindWritesTheBdfToTheDriversUnbindFile) {
  ASSERT_EQ(bound_driver(paths_, kNvme), "nvme");
  add_nvme_disk(2);  // a disk nothing uses
  EXPECT_TRUE(uses().empty());
  ASSERT_TRUE(unbind_driver(paths_, kNvme));
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
}

TEST_F(BindingTest, UnbindWithoutADriverDoesNothing) {
  EXPECT_EQ(bound_driver(paths_, kEdu).value(), std::nullopt);
  EXPECT_TRUE(unbind_driver(paths_, kEdu));
}

TEST_F(BindingTest, MountedPartitionBlocksUnbindUnlessForced) {
  add_nvme_disk(2);
  ASSERT_TRUE(tree_->set_mountinfo("22 1 252:1 / / rw - ext4 /dev/vda1 rw\n"
                                   "40 22 259:2 / /data rw,relatime - xfs /dev/nvme0n1p2 rw\n"));
  EXPECT_EQ(uses(), std::vector<std::string>{"nvme0n1p2 is mounted on /data"});
  auto refused = unbind_driver(paths_, kNvme);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_EQ(refused.error().message(),
            "unbind nvme from 0000:01:00.0: this machine uses it: nvme0n1p2 is mounted on /data (hint: unmount, "
            "swapoff or stop what holds it, or take the interface down, first; or force it if you are sure)");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "") << "nothing written";
  auto bind_refused = bind_driver(paths_, kNvme, "vfio-pci");
  ASSERT_FALSE(bind_refused);
  EXPECT_EQ(bind_refused.error().code, Errc::busy);

  EXPECT_TRUE(unbind_driver(paths_, kNvme, {.force = true}));
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
}

// Root on LVM: the partition is a physical volume held by dm-0, which is mounted on /.
// mountinfo names the logical volume by its device number (253:0), not the partition.
TEST_F(BindingTest, RootOnLvmIsFoundThroughHolders) {
  add_nvme_disk(2);
  add_dm("dm-0", "253:0", "vg-root");
  ASSERT_TRUE(tree_->add_holder("nvme0n1p2", "dm-0"));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 253:0 / / rw - ext4 /dev/mapper/vg-root rw\n"));
  EXPECT_EQ(uses(), (std::vector<std::string>{"nvme0n1p2 is held by dm-0 (vg-root)", "dm-0 (vg-root) is mounted on /"}));
  expect_unbind_refused();
}

// An active physical volume whose logical volumes are not mounted (a VM's disk, say) is
// still in use: holding it is using it.
TEST_F(BindingTest, HeldButUnmountedIsInUse) {
  add_nvme_disk(1);
  add_dm("dm-3", "253:3", "vg-vmdisk");
  ASSERT_TRUE(tree_->add_holder("nvme0n1p1", "dm-3"));
  EXPECT_EQ(uses(), std::vector<std::string>{"nvme0n1p1 is held by dm-3 (vg-vmdisk)"});
}

// dm-crypt on LVM: partition -> dm-0 (LV) -> dm-1 (crypt) -> mounted. Followed to the end.
TEST_F(BindingTest, HolderChainsAreFollowedToTheMount) {
  add_nvme_disk(1);
  add_dm("dm-0", "253:0", "vg-home");
  add_dm("dm-1", "253:1", "home-crypt");
  ASSERT_TRUE(tree_->add_holder("nvme0n1p1", "dm-0"));
  ASSERT_TRUE(tree_->add_holder("dm-0", "dm-1"));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 252:1 / / rw - ext4 /dev/vda1 rw\n30 22 253:1 / /home rw - ext4 "
                                   "/dev/mapper/home-crypt rw\n"));
  const auto found = uses();
  EXPECT_NE(std::find(found.begin(), found.end(), "dm-1 (home-crypt) is mounted on /home"), found.end())
      << ::testing::PrintToString(found);
  expect_unbind_refused();
}

// md RAID1 over a partition of this disk and one of another controller's disk.
TEST_F(BindingTest, MdRaidMemberIsInUse) {
  add_nvme_disk(1);
  ASSERT_TRUE(tree_->add_block_device({"md0", "9:0", std::nullopt, "", ""}));
  ASSERT_TRUE(tree_->add_holder("nvme0n1p1", "md0"));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 9:0 / /srv rw - ext4 /dev/md0 rw\n"));
  EXPECT_EQ(uses(), (std::vector<std::string>{"nvme0n1p1 is held by md0", "md0 is mounted on /srv"}));
}

// btrfs reports an anonymous device number in mountinfo: the source path decides.
TEST_F(BindingTest, MountSourceMatchesWhenTheDeviceNumberIsAnonymous) {
  add_nvme_disk(2);
  add_dm("dm-2", "253:2", "vg-data");
  ASSERT_TRUE(tree_->add_holder("nvme0n1p1", "dm-2"));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 0:31 / / rw - btrfs /dev/nvme0n1p2 rw\n"
                                   "23 22 0:32 / /data rw - btrfs /dev/mapper/vg-data rw\n"));
  const auto found = uses();
  EXPECT_NE(std::find(found.begin(), found.end(), "nvme0n1p2 is mounted on /"), found.end())
      << ::testing::PrintToString(found);
  EXPECT_NE(std::find(found.begin(), found.end(), "dm-2 (vg-data) is mounted on /data"), found.end())
      << ::testing::PrintToString(found);
}

TEST_F(BindingTest, SwapOnAPartitionOrALogicalVolumeIsInUse) {
  add_nvme_disk(3);
  add_dm("dm-1", "253:1", "vg-swap");
  ASSERT_TRUE(tree_->add_holder("nvme0n1p2", "dm-1"));
  ASSERT_TRUE(tree_->set_swaps("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
                               "/dev/nvme0n1p3                          partition\t1048572\t\t0\t\t-2\n"
                               "/dev/mapper/vg-swap                     partition\t1048572\t\t0\t\t-3\n"));
  const auto found = uses();
  EXPECT_NE(std::find(found.begin(), found.end(), "nvme0n1p3 is used as swap"), found.end())
      << ::testing::PrintToString(found);
  EXPECT_NE(std::find(found.begin(), found.end(), "dm-1 (vg-swap) is used as swap"), found.end())
      << ::testing::PrintToString(found);
  expect_unbind_refused();
}

// A SAS HBA: the partition sits nine directories below the PCI device.
TEST_F(BindingTest, PartitionsDeepBelowASasHba) {
  const std::string disk_path = "host0/port-0:0/end_device-0:0/target0:0:0/0:0:0:0/block";
  ASSERT_TRUE(tree_->add_block_device({"sda", "8:0", kNvme, disk_path, ""}));
  ASSERT_TRUE(tree_->add_block_device({"sda1", "8:1", kNvme, disk_path + "/sda", ""}));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"));
  EXPECT_EQ(uses(), std::vector<std::string>{"sda1 is mounted on /"});
}

// A USB disk and a USB network adapter behind an xHCI controller.
TEST_F(BindingTest, UsbDisksAndInterfacesBehindXhci) {
  ASSERT_TRUE(tree_->add_block_device({"sdb", "8:16", kEdu, "usb2/2-1/2-1:1.0/host3/target3:0:0/3:0:0:0/block", ""}));
  ASSERT_TRUE(tree_->add_block_device(
      {"sdb1", "8:17", kEdu, "usb2/2-1/2-1:1.0/host3/target3:0:0/3:0:0:0/block/sdb", ""}));
  ASSERT_TRUE(tree_->add_network_interface(kEdu, "usb1/1-2/1-2:1.0", "enx001122334455", "0x1003"));
  ASSERT_TRUE(tree_->set_mountinfo("22 1 252:1 / / rw - ext4 /dev/vda1 rw\n50 22 8:17 / /media/stick rw - vfat "
                                   "/dev/sdb1 rw\n"));
  auto found = host_uses_of(paths_, kEdu);
  ASSERT_TRUE(found) << found.error().message();
  EXPECT_EQ(*found, (std::vector<std::string>{"network interface enx001122334455 is up", "sdb1 is mounted on /media/stick"}));
}

// More than 4,096 entries below the device (an old budget stopped there and reported "not
// in use"), and a mounted disk after all of them.
TEST_F(BindingTest, HugeTreesAreSearchedWhole) {
  for (int i = 0; i < 5000; ++i) fs::create_directories(tree_->device_dir(kNvme) + "/aaaa/" + std::to_string(i));
  ASSERT_TRUE(tree_->add_block_device({"nvme0n1", "259:0", kNvme, "zzzz/nvme/nvme0", ""}));
  for (int i = 0; i < 300; ++i) {
    ASSERT_TRUE(tree_->add_block_device({"loop" + std::to_string(i), "7:" + std::to_string(i), std::nullopt, "", ""}));
  }
  // A mount table of a busy container host (10,000 mounts, about 700 KB, read in growing
  // chunks), with the mount that matters last.
  std::string mountinfo;
  for (int i = 0; i < 10000; ++i) {
    mountinfo += fmt::format("{} 22 0:{} / /run/containers/{}/merged rw - overlay overlay rw,lowerdir=/l\n",
                             100 + i, 100 + i, i);
  }
  mountinfo += "22 1 259:0 / / rw - ext4 /dev/nvme0n1 rw\n";
  ASSERT_GT(mountinfo.size(), 600000u);
  ASSERT_TRUE(tree_->set_mountinfo(mountinfo));
  EXPECT_EQ(uses(), std::vector<std::string>{"nvme0n1 is mounted on /"});
}

TEST_F(BindingTest, UpInterfaceBlocksButADownOneDoesNot) {
  ASSERT_TRUE(tree_->add_network_interface(kNvme, "", "eth0", "0x1003"));  // IFF_UP | BROADCAST | MULTICAST
  ASSERT_TRUE(tree_->add_network_interface(kNvme, "", "eth1", "0x1002"));  // down
  EXPECT_EQ(uses(), std::vector<std::string>{"network interface eth0 is up"});
}

TEST_F(BindingTest, UnknownInterfaceStateCountsAsInUse) {
  ASSERT_TRUE(tree_->add_network_interface(kNvme, "", "eth0", ""));  // no flags file
  EXPECT_EQ(uses(), std::vector<std::string>{"network interface eth0 is in an unknown state"});
}

// Every failure while looking means "in use, or unknown", never "free": the guard refuses,
// saying what it could not check, and only --force goes ahead.
TEST_F(BindingTest, ErrorsWhileLookingFailClosed) {
  struct Breakage {
    const char* what;
    std::function<void(const std::string& root)> apply;
  };
  const std::vector<Breakage> breakages = {
      {"no mount table", [](const std::string& root) { fs::remove(root + "/proc/self/mountinfo"); }},
      {"no swap list", [](const std::string& root) { fs::remove(root + "/proc/swaps"); }},
      {"class/block not a directory",
       [](const std::string& root) {
         fs::remove_all(root + "/sys/class/block");
         std::ofstream(root + "/sys/class/block") << "x";
       }},
      {"class/net not a directory",
       [](const std::string& root) {
         fs::remove_all(root + "/sys/class/net");
         std::ofstream(root + "/sys/class/net") << "x";
       }},
      {"holders not a directory",
       [](const std::string& root) {
         const fs::path holders = fs::canonical(root + "/sys/class/block/nvme0n1p1") / "holders";
         fs::remove_all(holders);
         std::ofstream(holders) << "x";
       }},
      {"dev unreadable", [](const std::string& root) { fs::remove(fs::canonical(root + "/sys/class/block/nvme0n1p1") / "dev"); }},
      {"dangling class/block link", [](const std::string& root) { fs::create_directory_symlink("../../nowhere", root + "/sys/class/block/sdz"); }},
      {"garbage in mountinfo", [](const std::string& root) { std::ofstream(root + "/proc/self/mountinfo") << "22 1 zz:zz\n"; }},
  };
  for (const Breakage& breakage : breakages) {
    SCOPED_TRACE(breakage.what);
    SetUp();  // a fresh tree for each
    add_nvme_disk(1);
    breakage.apply(tree_->directory());
    auto found = host_uses_of(paths_, kNvme);
    EXPECT_TRUE(!found || !found->empty()) << "reported free";
    expect_unbind_refused();
    EXPECT_TRUE(unbind_driver(paths_, kNvme, {.force = true}));
  }
}

// The audit's EMFILE: with no descriptors left, opendir fails; that is not "no disks".
TEST_F(BindingTest, RunningOutOfDescriptorsFailsClosed) {
  add_nvme_disk(1);
  ASSERT_TRUE(tree_->set_mountinfo("22 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"));
  const SysfsPaths paths = paths_;
  const int status = cli::run_in_child([&paths] {
    // Use up every descriptor up to a low limit, then ask.
    const rlimit limit{16, 16};
    if (setrlimit(RLIMIT_NOFILE, &limit) != 0) return 10;
    while (::open("/dev/null", O_RDONLY) >= 0) {
    }
    auto found = host_uses_of(paths, kNvme);
    if (found && found->empty()) return 11;
    auto unbound = unbind_driver(paths, kNvme);
    if (unbound) return 12;
    return 0;
  });
  EXPECT_EQ(status, 0) << "10: setrlimit, 11: reported free, 12: unbound";
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "");
}

// A driver link that cannot be read is not "no driver": unbinding must fail, not report
// success without unbinding.
TEST_F(BindingTest, UnreadableDriverLinkIsAnError) {
  const fs::path link = tree_->device_dir(kNvme) + "/driver";
  fs::remove(link);
  std::ofstream(link) << "not a link";  // readlink: EINVAL
  auto driver = bound_driver(paths_, kNvme);
  ASSERT_FALSE(driver);
  EXPECT_NE(driver.error().message().find("driver"), std::string::npos) << driver.error().message();
  auto unbound = unbind_driver(paths_, kNvme);
  ASSERT_FALSE(unbound);
  auto restored = restore_driver(paths_, kNvme);
  EXPECT_FALSE(restored);
}

TEST_F(BindingTest, BindSetsTheOverrideAndProbes) {
  // The fake kernel binds nothing, so the bind reports that vfio-pci did not take it; what
  // matters here is what was written.
  auto bound = bind_driver(paths_, kEdu, "vfio-pci");
  ASSERT_FALSE(bound);
  EXPECT_EQ(bound.error().code, Errc::io_error);
  EXPECT_NE(bound.error().reason.find("vfio-pci did not take the device (driver now: none)"), std::string::npos);
  EXPECT_NE(bound.error().hint.find("modprobe vfio-pci"), std::string::npos);
  EXPECT_EQ(slurp(tree_->device_dir(kEdu) + "/driver_override"), "vfio-pci");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers_probe"), "0000:00:03.0");
}

TEST_F(BindingTest, RestoreClearsTheOverride) {
  auto restored = restore_driver(paths_, kNvme);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(slurp(tree_->device_dir(kNvme) + "/driver_override"), "\n");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers_probe"), "0000:01:00.0");
}

TEST_F(BindingTest, MissingDevice) {
  auto found = host_uses_of(paths_, Bdf{0, 9, 0, 0});
  ASSERT_FALSE(found);
  EXPECT_EQ(found.error().code, Errc::not_found);
}

}  // namespace
}  // namespace pcie
