// VFIO error diagnosis without a kernel: the pure explain function over the situations a
// user meets (the VM tests trigger each for real), and a container that cannot open.
#include "pcie/vfio.h"

#include <gtest/gtest.h>

#include "pcie/testing/fake_sysfs.h"

namespace pcie {
namespace {

const Bdf kDevice{0, 0, 3, 0};

VfioFailureContext context_of(const Bdf& bdf, std::optional<int> group, std::optional<std::string> driver,
                              bool iommu_enabled = true) {
  VfioFailureContext context;
  context.bdf = bdf;
  context.group = group;
  context.driver = std::move(driver);
  context.iommu_enabled = iommu_enabled;
  return context;
}

Error raw_errno(int err) { return make_errno_error(err, "open VFIO group", "/dev/vfio/7"); }

TEST(ExplainVfioFailure, IommuOff) {
  VfioFailureContext context = context_of(kDevice, std::nullopt, std::nullopt, false);
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_supported);
  EXPECT_NE(error.reason.find("the IOMMU is off"), std::string::npos);
  EXPECT_NE(error.hint.find("intel_iommu=on"), std::string::npos);
  EXPECT_NE(error.hint.find("amd_iommu=on"), std::string::npos);
}

TEST(ExplainVfioFailure, DeviceOutsideAnyGroupWhileOthersHaveOne) {
  VfioFailureContext context = context_of(kDevice, std::nullopt, std::nullopt);
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_supported);
  EXPECT_NE(error.reason.find("in no IOMMU group"), std::string::npos);
}

TEST(ExplainVfioFailure, GroupNodeMissingMeansNotBoundToVfioPci) {
  VfioFailureContext context = context_of(kDevice, 7, "e1000e");
  const Error error = explain_vfio_failure(raw_errno(ENOENT), "group", context);
  EXPECT_EQ(error.code, Errc::not_found);
  EXPECT_EQ(error.reason, "/dev/vfio/7 does not exist: 0000:00:03.0 is bound to 'e1000e', not to vfio-pci");
  EXPECT_NE(error.hint.find("echo vfio-pci > /sys/bus/pci/devices/0000:00:03.0/driver_override"), std::string::npos);
  EXPECT_EQ(error.sys_errno, ENOENT);
}

TEST(ExplainVfioFailure, BusyAndPermission) {
  VfioFailureContext context = context_of(kDevice, 7, "vfio-pci");
  const Error busy = explain_vfio_failure(raw_errno(EBUSY), "group", context);
  EXPECT_EQ(busy.code, Errc::busy);
  EXPECT_NE(busy.reason.find("group 7 is already open"), std::string::npos);
  EXPECT_NE(busy.hint.find("fuser /dev/vfio/7"), std::string::npos);
  const Error denied = explain_vfio_failure(raw_errno(EACCES), "group", context);
  EXPECT_EQ(denied.code, Errc::permission_denied);
  EXPECT_NE(denied.hint.find("run as root"), std::string::npos);
}

TEST(ExplainVfioFailure, NotViableListsEveryBlockingDeviceButNotBridgesOrStubs) {
  VfioFailureContext context = context_of(Bdf{0, 0, 0x1f, 3}, 7, "vfio-pci");
  context.members = {
      {Bdf{0, 0, 0x1c, 0}, "pcieport", true},       // a bridge: allowed
      {Bdf{0, 0, 0x1f, 0}, "lpc_ich", false},
      {Bdf{0, 0, 0x1f, 2}, std::nullopt, false},    // no driver: allowed
      {Bdf{0, 0, 0x1f, 3}, "vfio-pci", false},
      {Bdf{0, 0, 0x1f, 4}, "pci-stub", false},      // allowed
      {Bdf{0, 0, 0x1f, 5}, "i801_smbus", false},
  };
  const Error error = explain_vfio_failure(make_error(Errc::busy, "open VFIO group", "/dev/vfio/7", ""), "viable", context);
  EXPECT_EQ(error.code, Errc::busy);
  EXPECT_EQ(error.reason,
            "group 7 not viable: 0000:00:1f.0 is bound to lpc_ich, 0000:00:1f.5 is bound to i801_smbus");
  EXPECT_NE(error.hint.find("echo 0000:00:1f.0 > /sys/bus/pci/drivers/lpc_ich/unbind"), std::string::npos);
}

TEST(ExplainVfioFailure, DeviceStepWhenNotBound) {
  VfioFailureContext context = context_of(kDevice, 7, std::nullopt);
  const Error error = explain_vfio_failure(raw_errno(ENODEV), "device", context);
  EXPECT_EQ(error.code, Errc::not_found);
  EXPECT_EQ(error.reason, "0000:00:03.0 is bound to no driver, not to vfio-pci");
}

TEST(VfioContainer, MissingVfioNodeSaysLoadTheModules) {
  auto tree = testing::FakeSysfs::create();
  ASSERT_TRUE(tree);
  VfioPaths paths;
  paths.sysfs = tree->paths();
  paths.dev_vfio = tree->directory() + "/dev/vfio";  // does not exist
  auto container = VfioContainer::open(paths);
  ASSERT_FALSE(container);
  EXPECT_EQ(container.error().code, Errc::not_found);
  EXPECT_NE(container.error().hint.find("modprobe vfio-pci"), std::string::npos) << container.error().message();
}

}  // namespace
}  // namespace pcie
