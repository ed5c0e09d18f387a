// Runs inside the test VM on the kernel of our own (IOMMUFD, VFIO_DEVICE_CDEV) with the
// IOMMU on and edu 00:06.0 bound to vfio-pci (vm_iommufd_test): the iommufd wrappers
// (src/sys/iommufd_ioctls.h) against the real kernel. edu is reached through its VFIO
// device cdev (/dev/vfio/devices/vfioN, found from sysfs vfio-dev/), bound to /dev/iommu,
// attached to an IOAS; a DMA round trip goes through IOVAs mapped with IOMMU_IOAS_MAP, and
// unmapping reports the bytes the kernel unmapped: the layer VfioContainer's iommufd
// backend stands on (vm_vfio_iommufd_test runs the whole VFIO suite on it).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/vfio.h>
#include <sys/mman.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <thread>

#include "pcie/sys/unique_fd.h"
#include "src/sys/iommufd_ioctls.h"
#include "src/sys/vfio_ioctls.h"

namespace pcie::sys::iommufd {
namespace {

const char* kEdu = "0000:00:06.0";  // QEMU's 28-bit DMA mask: IOVAs below 256 MiB
constexpr std::uint64_t kDmaSource = 0x80, kDmaDestination = 0x88, kDmaCount = 0x90, kDmaCommand = 0x98;
constexpr std::uint64_t kEduBuffer = 0x40000;

// /dev/vfio/devices/vfioN for the device, from <device>/vfio-dev/vfioN.
std::string cdev_path(const std::string& bdf) {
  for (const auto& entry : std::filesystem::directory_iterator("/sys/bus/pci/devices/" + bdf + "/vfio-dev")) {
    return "/dev/vfio/devices/" + entry.path().filename().string();
  }
  return "";
}

// A VFIO region of the device fd, accessed with pread/pwrite at the region's offset.
struct Region {
  int fd = -1;
  std::uint64_t offset = 0;
  std::uint64_t read64(std::uint64_t at) const {
    std::uint64_t value = 0;
    EXPECT_EQ(::pread(fd, &value, 8, static_cast<off_t>(offset + at)), 8);
    return value;
  }
  void write64(std::uint64_t at, std::uint64_t value) const {
    EXPECT_EQ(::pwrite(fd, &value, 8, static_cast<off_t>(offset + at)), 8);
  }
  std::uint16_t read16(std::uint64_t at) const {
    std::uint16_t value = 0;
    EXPECT_EQ(::pread(fd, &value, 2, static_cast<off_t>(offset + at)), 2);
    return value;
  }
  void write16(std::uint64_t at, std::uint16_t value) const {
    EXPECT_EQ(::pwrite(fd, &value, 2, static_cast<off_t>(offset + at)), 2);
  }
};

Region region(int device_fd, std::uint32_t index) {
  auto info = sys::vfio::region_info(device_fd, index, kEdu);
  EXPECT_TRUE(info) << info.error().message();
  vfio_region_info base{};
  if (info) std::memcpy(&base, info->data(), sizeof base);
  return Region{device_fd, base.offset};
}

void run_dma(const Region& bar, std::uint64_t source, std::uint64_t destination, std::uint64_t count, bool to_ram) {
  bar.write64(kDmaSource, source);
  bar.write64(kDmaDestination, destination);
  bar.write64(kDmaCount, count);
  bar.write64(kDmaCommand, to_ram ? 0x3 : 0x1);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
  while ((bar.read64(kDmaCommand) & 1) != 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  EXPECT_EQ(bar.read64(kDmaCommand) & 1, 0u) << "edu's DMA did not finish";
}

TEST(GuestIommufd, EduDmaRoundTripThroughAnIoas) {
  const std::string cdev = cdev_path(kEdu);
  ASSERT_FALSE(cdev.empty()) << "no vfio-dev/ for " << kEdu << ": kernel without VFIO_DEVICE_CDEV?";
  UniqueFd iommu(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(iommu.valid()) << "/dev/iommu: " << std::strerror(errno);
  UniqueFd device(::open(cdev.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(device.valid()) << cdev << ": " << std::strerror(errno);

  auto devid = device_bind(device.get(), iommu.get(), kEdu);
  ASSERT_TRUE(devid) << devid.error().message();
  auto ioas = ioas_alloc(iommu.get());
  ASSERT_TRUE(ioas) << ioas.error().message();
  auto attached = device_attach(device.get(), *ioas, kEdu);
  ASSERT_TRUE(attached) << attached.error().message();
  // Given an IOAS, the kernel makes a hardware page table for it and answers with that.
  EXPECT_NE(*attached, *ioas);
  EXPECT_NE(*attached, *devid);

  auto ranges = ioas_iova_ranges(iommu.get(), *ioas);
  ASSERT_TRUE(ranges) << ranges.error().message();
  ASSERT_FALSE(ranges->ranges.empty());
  EXPECT_LE(ranges->alignment, 4096u);
  EXPECT_EQ(ranges->ranges.front().start, 0u) << "the IOMMU translates from 0";
  auto mode = rlimit_mode(iommu.get());
  ASSERT_TRUE(mode) << mode.error().message();
  EXPECT_EQ(*mode, RlimitMode::per_user) << "iommufd's default accounting";

  constexpr std::uint64_t kSize = 4096;
  constexpr std::uint64_t kSourceIova = 0x100000, kDestinationIova = 0x200000;
  auto* source = static_cast<std::uint8_t*>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  auto* destination =
      static_cast<std::uint8_t*>(::mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
  ASSERT_NE(source, MAP_FAILED);
  ASSERT_NE(destination, MAP_FAILED);
  for (std::uint64_t i = 0; i < kSize; ++i) source[i] = static_cast<std::uint8_t>(i * 7 + 3);
  ASSERT_TRUE(ioas_map_fixed(iommu.get(), *ioas, reinterpret_cast<std::uint64_t>(source), kSourceIova, kSize, true, false));
  ASSERT_TRUE(
      ioas_map_fixed(iommu.get(), *ioas, reinterpret_cast<std::uint64_t>(destination), kDestinationIova, kSize, false, true));
  auto again = ioas_map_fixed(iommu.get(), *ioas, reinterpret_cast<std::uint64_t>(source), kSourceIova, kSize, true, true);
  ASSERT_FALSE(again) << "an IOVA range is mapped once";
  EXPECT_EQ(again.error().sys_errno, EEXIST) << again.error().message();

  const Region config = region(device.get(), VFIO_PCI_CONFIG_REGION_INDEX);
  config.write16(0x04, static_cast<std::uint16_t>(config.read16(0x04) | 0x6));  // memory + bus master
  const Region bar = region(device.get(), VFIO_PCI_BAR0_REGION_INDEX);
  constexpr std::uint64_t kCount = 3000;  // QEMU 7.2's edu aborts on a 4096-byte transfer
  run_dma(bar, kSourceIova, kEduBuffer, kCount, false);
  run_dma(bar, kEduBuffer, kDestinationIova, kCount, true);
  EXPECT_EQ(std::memcmp(source, destination, kCount), 0) << "the bytes edu read through one IOVA came back through the other";
  for (std::uint64_t i = kCount; i < kSize; ++i) ASSERT_EQ(destination[i], 0) << "edu wrote past the transfer at " << i;
  config.write16(0x04, static_cast<std::uint16_t>(config.read16(0x04) & ~0x4));

  auto unmapped = ioas_unmap(iommu.get(), *ioas, kSourceIova, kSize);
  ASSERT_TRUE(unmapped) << unmapped.error().message();
  EXPECT_EQ(*unmapped, kSize);
  unmapped = ioas_unmap(iommu.get(), *ioas, kSourceIova, kSize);
  ASSERT_TRUE(unmapped) << unmapped.error().message();
  EXPECT_EQ(*unmapped, 0u) << "nothing mapped there any more";
  ASSERT_TRUE(ioas_unmap(iommu.get(), *ioas, kDestinationIova, kSize));

  auto busy = destroy(iommu.get(), *ioas);
  ASSERT_FALSE(busy) << "an IOAS with a device attached cannot go";
  EXPECT_EQ(busy.error().code, Errc::busy) << busy.error().message();
  ASSERT_TRUE(device_detach(device.get(), kEdu));
  auto destroyed = destroy(iommu.get(), *ioas);
  EXPECT_TRUE(destroyed) << destroyed.error().message();
  ::munmap(source, kSize);
  ::munmap(destination, kSize);
}

// A device is bound to one iommufd at a time: a second open of its cdev cannot bind it to
// another while the first holds it.
TEST(GuestIommufd, ASecondBindOfTheDeviceIsRefused) {
  const std::string cdev = cdev_path(kEdu);
  ASSERT_FALSE(cdev.empty());
  UniqueFd first_iommu(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
  UniqueFd second_iommu(::open("/dev/iommu", O_RDWR | O_CLOEXEC));
  UniqueFd first(::open(cdev.c_str(), O_RDWR | O_CLOEXEC));
  ASSERT_TRUE(first.valid() && first_iommu.valid() && second_iommu.valid());
  ASSERT_TRUE(device_bind(first.get(), first_iommu.get(), kEdu));
  UniqueFd second(::open(cdev.c_str(), O_RDWR | O_CLOEXEC));
  if (second.valid()) {
    auto refused = device_bind(second.get(), second_iommu.get(), kEdu);
    ASSERT_FALSE(refused) << "bound twice";
    EXPECT_NE(refused.error().message().find("VFIO_DEVICE_BIND_IOMMUFD"), std::string::npos);
  } else {
    EXPECT_EQ(errno, EBUSY) << "the cdev refused a second open with " << std::strerror(errno);
  }
}

}  // namespace
}  // namespace pcie::sys::iommufd
