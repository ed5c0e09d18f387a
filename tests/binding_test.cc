// Driver binding on a fake tree: what is written where, and the refusal to unbind a device
// this machine uses (a mounted disk, an up interface). The VM tests bind for real.
#include "pcie/binding.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "pcie/testing/fake_sysfs.h"

namespace pcie {
namespace {

namespace fs = std::filesystem;
using testing::FakeSysfs;

std::string slurp(const fs::path& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

class BindingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::make_vm_tree();  // nvme 01:00.0 is bound to "nvme"
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
    paths_ = tree_->paths();
    paths_.mounts_file = tree_->directory() + "/mounts";
    std::ofstream(paths_.mounts_file) << "/dev/vda1 / ext4 rw 0 0\n";
  }
  fs::path nvme_dir() const { return tree_->device_dir(testing::kVmNvme); }
  void add_disk(const std::string& partition) {
    const fs::path disk = nvme_dir() / "nvme/nvme0/nvme0n1";
    for (const fs::path& dir : {disk, disk / partition}) {
      fs::create_directories(dir / "holders");
      std::ofstream(dir / "dev") << "259:0\n";
      std::ofstream(dir / "size") << "1000\n";
    }
  }
  std::optional<FakeSysfs> tree_;
  SysfsPaths paths_;
};

TEST_F(BindingTest, UnbindWritesTheBdfToTheDriversUnbindFile) {
  ASSERT_EQ(bound_driver(paths_, testing::kVmNvme), "nvme");
  auto uses = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_TRUE(uses) << uses.error().message();
  EXPECT_TRUE(uses->empty());
  ASSERT_TRUE(unbind_driver(paths_, testing::kVmNvme));
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
}

TEST_F(BindingTest, UnbindWithoutADriverDoesNothing) {
  EXPECT_FALSE(bound_driver(paths_, testing::kVmEdu));
  EXPECT_TRUE(unbind_driver(paths_, testing::kVmEdu));
}

TEST_F(BindingTest, MountedPartitionBlocksUnbindUnlessForced) {
  add_disk("nvme0n1p2");
  std::ofstream(paths_.mounts_file, std::ios::app) << "/dev/nvme0n1p2 /data xfs rw 0 0\n";
  auto uses = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_TRUE(uses) << uses.error().message();
  ASSERT_EQ(*uses, std::vector<std::string>{"nvme0n1p2 is mounted on /data"});

  auto refused = unbind_driver(paths_, testing::kVmNvme);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy);
  EXPECT_EQ(refused.error().message(),
            "unbind nvme from 0000:01:00.0: this machine uses it: nvme0n1p2 is mounted on /data (hint: unmount or "
            "take the interface down first, or force it if you are sure)");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "") << "nothing written";
  auto bind_refused = bind_driver(paths_, testing::kVmNvme, "vfio-pci");
  ASSERT_FALSE(bind_refused);
  EXPECT_EQ(bind_refused.error().code, Errc::busy);

  EXPECT_TRUE(unbind_driver(paths_, testing::kVmNvme, {.force = true}));
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
}

TEST_F(BindingTest, UnmountedDiskDoesNotBlock) {
  add_disk("nvme0n1p1");
  auto uses = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_TRUE(uses);
  EXPECT_TRUE(uses->empty());
}

TEST_F(BindingTest, UpInterfaceBlocksButADownOneDoesNot) {
  fs::create_directories(nvme_dir() / "net/eth0");
  fs::create_directories(nvme_dir() / "net/eth1");
  std::ofstream(nvme_dir() / "net/eth0/flags") << "0x1003\n";  // IFF_UP | IFF_BROADCAST | IFF_MULTICAST
  std::ofstream(nvme_dir() / "net/eth1/flags") << "0x1002\n";  // down
  auto uses = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_TRUE(uses);
  EXPECT_EQ(*uses, std::vector<std::string>{"network interface eth0 is up"});
}

TEST_F(BindingTest, UnknownStateCountsAsInUse) {
  fs::create_directories(nvme_dir() / "net/eth0");  // no flags file
  auto uses = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_TRUE(uses);
  EXPECT_EQ(*uses, std::vector<std::string>{"network interface eth0 is in an unknown state"});

  add_disk("nvme0n1p1");
  paths_.mounts_file = tree_->directory() + "/no-such-mounts";
  auto unreadable = host_uses_of(paths_, testing::kVmNvme);
  ASSERT_FALSE(unreadable) << "a disk and no mount table: refuse rather than guess";
  EXPECT_NE(unreadable.error().hint.find("nvme0n1"), std::string::npos) << unreadable.error().message();
  EXPECT_FALSE(unbind_driver(paths_, testing::kVmNvme));
  EXPECT_TRUE(unbind_driver(paths_, testing::kVmNvme, {.force = true}));
}

TEST_F(BindingTest, BindSetsTheOverrideAndProbes) {
  // The fake kernel binds nothing, so the bind reports that vfio-pci did not take it; what
  // matters here is what was written.
  auto bound = bind_driver(paths_, testing::kVmEdu, "vfio-pci");
  ASSERT_FALSE(bound);
  EXPECT_EQ(bound.error().code, Errc::io_error);
  EXPECT_NE(bound.error().reason.find("vfio-pci did not take the device (driver now: none)"), std::string::npos);
  EXPECT_NE(bound.error().hint.find("modprobe vfio-pci"), std::string::npos);
  EXPECT_EQ(slurp(tree_->device_dir(testing::kVmEdu) + "/driver_override"), "vfio-pci");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers_probe"), "0000:00:03.0");
}

TEST_F(BindingTest, RestoreClearsTheOverride) {
  auto restored = restore_driver(paths_, testing::kVmNvme);
  ASSERT_TRUE(restored) << restored.error().message();
  EXPECT_EQ(slurp(tree_->device_dir(testing::kVmNvme) + "/driver_override"), "\n");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers/nvme/unbind"), "0000:01:00.0");
  EXPECT_EQ(slurp(tree_->pci_root() + "/drivers_probe"), "0000:01:00.0");
}

TEST_F(BindingTest, MissingDevice) {
  auto uses = host_uses_of(paths_, Bdf{0, 9, 0, 0});
  ASSERT_FALSE(uses);
  EXPECT_EQ(uses.error().code, Errc::not_found);
}

}  // namespace
}  // namespace pcie
