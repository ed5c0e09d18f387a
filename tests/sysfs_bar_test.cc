// Mapping the fake tree's resourceN files and reaching them through the accessors. The
// files stand in for BARs: what the accessors write must land in the file, byte for byte.
#include "pcie/sysfs_bar.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>

#include "pcie/config_space.h"
#include "pcie/testing/fake_sysfs.h"
#include "tests/empty_handles.h"

namespace pcie {
namespace {

using namespace std::chrono_literals;

const Bdf kEdu = testing::kVmEdu;
const Bdf kIvshmem = testing::kVmIvshmem;
const Bdf kTestdev = testing::kVmPciTestdev;

class SysfsBarTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::make_vm_tree();
    ASSERT_TRUE(tree) << tree.error().message();
    tree_.emplace(std::move(*tree));
  }

  // Bytes of a BAR file as the "device" sees them.
  std::vector<std::uint8_t> file_bytes(const Bdf& bdf, const std::string& name, std::size_t offset, std::size_t count) {
    return tree_->read_device_bytes(bdf, name, offset, count).value_or(std::vector<std::uint8_t>{});
  }

  std::optional<testing::FakeSysfs> tree_;
};

TEST_F(SysfsBarTest, MapsWholeBarAndWritesReachTheFile) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->size(), 1u << 20);
  EXPECT_EQ(bar->name(), "0000:00:03.0 BAR0");
  EXPECT_EQ(bar->memory_type(), MemoryType::uncached);
  ASSERT_TRUE(bar->write(Width::bits32, 0x04, 0x12345678));
  ASSERT_TRUE(bar->write(Width::bits64, 0x88, 0x0123456789abcdefull));
  ASSERT_TRUE(bar->write(Width::bits16, 0x10, 0xbeef));
  ASSERT_TRUE(bar->write(Width::bits8, 0xfffff, 0x5a));
  EXPECT_EQ(bar->read(Width::bits32, 0x04), 0x12345678u);
  EXPECT_EQ(bar->read(Width::bits64, 0x88), 0x0123456789abcdefull);
  EXPECT_EQ(bar->read(Width::bits8, 0x05), 0x56u);
  EXPECT_EQ(file_bytes(kEdu, "resource0", 0x04, 4), (std::vector<std::uint8_t>{0x78, 0x56, 0x34, 0x12}));
  EXPECT_EQ(file_bytes(kEdu, "resource0", 0x10, 2), (std::vector<std::uint8_t>{0xef, 0xbe}));
  EXPECT_EQ(file_bytes(kEdu, "resource0", 0xfffff, 1), (std::vector<std::uint8_t>{0x5a}));
}

TEST_F(SysfsBarTest, MmioViewAccessors) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  const MmioView mmio = bar->mmio();
  mmio.write<std::uint32_t>(0x20, 0xcafef00d);
  EXPECT_EQ(mmio.read<std::uint32_t>(0x20), 0xcafef00du);
  mmio.write_relaxed<std::uint64_t>(0x80, 42);
  EXPECT_EQ(mmio.read_relaxed<std::uint64_t>(0x80), 42u);
  mmio.write<std::uint8_t>(0x30, 0x11);
  mmio.write<std::uint16_t>(0x32, 0x2233);
  EXPECT_EQ(mmio.read<std::uint32_t>(0x30), 0x22330011u);
  EXPECT_EQ(mmio.checked_read<std::uint32_t>(0x20), 0xcafef00du);
  EXPECT_TRUE(mmio.checked_write<std::uint64_t>(0x90, 7));
  EXPECT_EQ(file_bytes(kEdu, "resource0", 0x90, 1), (std::vector<std::uint8_t>{7}));
  auto bad = mmio.checked_read<std::uint32_t>(0x22);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::misaligned);
  auto past = mmio.checked_write<std::uint64_t>(1u << 20, 0);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
}

TEST_F(SysfsBarTest, WindowIsOffsetIntoTheBar) {
  BarMapOptions options;
  options.offset = 0x2000;
  options.length = 0x1000;
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0, options);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->size(), 0x1000u);
  EXPECT_EQ(bar->window_offset(), 0x2000u);
  ASSERT_TRUE(bar->write(Width::bits32, 0, 0xa1b2c3d4));
  EXPECT_EQ(file_bytes(kEdu, "resource0", 0x2000, 4), (std::vector<std::uint8_t>{0xd4, 0xc3, 0xb2, 0xa1}));
  auto past = bar->read(Width::bits32, 0x1000);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
}

TEST_F(SysfsBarTest, WindowToTheEnd) {
  BarMapOptions options;
  options.offset = 0xff000;
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0, options);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->size(), 0x1000u);
}

TEST_F(SysfsBarTest, WindowErrors) {
  BarMapOptions misaligned;
  misaligned.offset = 0x100;
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0, misaligned);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::misaligned);

  BarMapOptions too_long;
  too_long.offset = 0x1000;
  too_long.length = 1u << 20;
  bar = BarMapping::map(tree_->paths(), kEdu, 0, too_long);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::out_of_range);

  BarMapOptions past_end;
  past_end.offset = 2u << 20;
  bar = BarMapping::map(tree_->paths(), kEdu, 0, past_end);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::out_of_range);

  BarMapOptions at_end;
  at_end.offset = 1u << 20;
  bar = BarMapping::map(tree_->paths(), kEdu, 0, at_end);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::out_of_range);

  BarMapOptions wrapping;
  wrapping.offset = 0x1000;
  wrapping.length = ~0ull - 0x800;
  bar = BarMapping::map(tree_->paths(), kEdu, 0, wrapping);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::out_of_range);
}

TEST_F(SysfsBarTest, BarSmallerThanAPage) {
  auto bar = BarMapping::map(tree_->paths(), kIvshmem, 0);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->size(), 256u);
  EXPECT_TRUE(bar->write(Width::bits32, 252, 1));
  auto past = bar->write(Width::bits32, 256, 1);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
}

TEST_F(SysfsBarTest, WriteCombinedUsesResourceWcFile) {
  BarMapOptions options;
  options.memory_type = MemoryType::write_combined;
  auto bar = BarMapping::map(tree_->paths(), kIvshmem, 2, options);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->memory_type(), MemoryType::write_combined);
  EXPECT_EQ(bar->size(), 4u << 20);
  const MmioView mmio = bar->mmio();
  for (std::uint64_t offset = 0; offset < 4096; offset += 8) mmio.write<std::uint64_t>(offset, offset * 3);
  barrier_before_doorbell();
  EXPECT_EQ(file_bytes(kIvshmem, "resource2_wc", 8, 1), (std::vector<std::uint8_t>{24}));
  EXPECT_EQ(file_bytes(kIvshmem, "resource2", 8, 1), (std::vector<std::uint8_t>{0}));
}

TEST_F(SysfsBarTest, WriteCombiningNeedsPrefetchableBar) {
  BarMapOptions options;
  options.memory_type = MemoryType::write_combined;
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0, options);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::not_supported);
  EXPECT_NE(bar.error().reason.find("not prefetchable"), std::string::npos);
}

TEST_F(SysfsBarTest, ReadOnlyMappingRefusesWrites) {
  BarMapOptions options;
  options.writable = false;
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0, options);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_TRUE(bar->read(Width::bits32, 0));
  auto written = bar->write(Width::bits32, 0, 1);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::permission_denied);
}

TEST_F(SysfsBarTest, RestrictedWidths) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  bar->restrict_widths(WidthSet::only(Width::bits32));
  EXPECT_TRUE(bar->read(Width::bits32, 0));
  auto narrow = bar->read(Width::bits8, 0);
  ASSERT_FALSE(narrow);
  EXPECT_EQ(narrow.error().code, Errc::width_not_allowed);
  EXPECT_NE(narrow.error().reason.find("accepts 32-bit"), std::string::npos);
  auto view_narrow = bar->mmio().checked_read<std::uint16_t>(0);
  ASSERT_FALSE(view_narrow);
  EXPECT_EQ(view_narrow.error().code, Errc::width_not_allowed);
}

TEST_F(SysfsBarTest, WriteValueMustFitWidth) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  auto written = bar->write(Width::bits16, 0, 0x10000);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::invalid_argument);
}

TEST_F(SysfsBarTest, IoPortBarThroughPreadPwrite) {
  auto bar = IoPortBar::open(tree_->paths(), kTestdev, 1);
  ASSERT_TRUE(bar) << bar.error().message();
  EXPECT_EQ(bar->size(), 256u);
  ASSERT_TRUE(bar->write(Width::bits16, 2, 0xabcd));
  ASSERT_TRUE(bar->write(Width::bits32, 8, 0x01020304));
  EXPECT_EQ(bar->read(Width::bits16, 2), 0xabcdu);
  EXPECT_EQ(bar->read(Width::bits8, 8), 0x04u);
  EXPECT_EQ(file_bytes(kTestdev, "resource1", 8, 4), (std::vector<std::uint8_t>{4, 3, 2, 1}));
  auto wide = bar->read(Width::bits64, 0);
  ASSERT_FALSE(wide);
  EXPECT_EQ(wide.error().code, Errc::width_not_allowed);
  auto past = bar->read(Width::bits32, 256);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
}

// Default-constructed, moved-from and moved-over handles, for each kind of sysfs BAR. A
// moved-from mapping kept its size and name and read through a null mapping before.
TEST_F(SysfsBarTest, EmptyMovedFromAndMovedOverBarsFailCleanly) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  ASSERT_TRUE(bar->write(Width::bits32, 0x04, 0x600dcafe));
  testing::expect_moves_leave_empty(*bar, [](BarMapping& handle) {
    EXPECT_EQ(handle.read(Width::bits32, 0x04), 0x600dcafeu);
    EXPECT_EQ(handle.mmio().size(), 1u << 20);
  });
  EXPECT_EQ(bar->mmio().size(), 0u) << "an empty mapping's view is empty too";

  auto port = IoPortBar::open(tree_->paths(), kTestdev, 1);
  ASSERT_TRUE(port);
  ASSERT_TRUE(port->write(Width::bits16, 2, 0xabcd));
  testing::expect_moves_leave_empty(*port, [](IoPortBar& handle) { EXPECT_EQ(handle.read(Width::bits16, 2), 0xabcdu); });

  // The same through the interface a driver holds.
  auto any = open_sysfs_bar(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(any);
  EXPECT_TRUE((*any)->valid());
}

// An I/O-port file that ends before the BAR does (a device that stopped answering) is a
// short read, reported as an error naming the offset, not a value padded with zeros.
TEST_F(SysfsBarTest, IoPortShortReadIsAnError) {
  auto bar = IoPortBar::open(tree_->paths(), kTestdev, 1);
  ASSERT_TRUE(bar) << bar.error().message();
  ASSERT_EQ(::truncate((tree_->device_dir(kTestdev) + "/resource1").c_str(), 10), 0);
  auto value = bar->read(Width::bits32, 8);
  ASSERT_FALSE(value);
  EXPECT_EQ(value.error().code, Errc::io_error);
  EXPECT_NE(value.error().reason.find("2 of 4 bytes at offset 8"), std::string::npos) << value.error().message();
  EXPECT_TRUE(bar->read(Width::bits16, 8));
}

TEST_F(SysfsBarTest, OpenPicksTheRightKind) {
  auto io = open_sysfs_bar(tree_->paths(), kTestdev, 1);
  ASSERT_TRUE(io) << io.error().message();
  EXPECT_NE(dynamic_cast<IoPortBar*>(io->get()), nullptr);
  auto memory = open_sysfs_bar(tree_->paths(), kTestdev, 0);
  ASSERT_TRUE(memory) << memory.error().message();
  EXPECT_NE(dynamic_cast<BarMapping*>(memory->get()), nullptr);
  ASSERT_TRUE((*memory)->write(Width::bits32, 0, 5));
  EXPECT_EQ((*memory)->read(Width::bits32, 0), 5u);
}

TEST_F(SysfsBarTest, IoBarCannotBeMapped) {
  auto bar = BarMapping::map(tree_->paths(), kTestdev, 1);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::not_supported);
  auto memory_as_io = IoPortBar::open(tree_->paths(), kTestdev, 0);
  ASSERT_FALSE(memory_as_io);
  EXPECT_EQ(memory_as_io.error().code, Errc::not_supported);
  BarMapOptions window;
  window.offset = 4096;
  auto io_window = open_sysfs_bar(tree_->paths(), kTestdev, 1, window);
  ASSERT_FALSE(io_window);
  EXPECT_EQ(io_window.error().code, Errc::not_supported);
}

TEST_F(SysfsBarTest, AbsentBarAndBadIndexAndMissingDevice) {
  auto absent = BarMapping::map(tree_->paths(), kEdu, 3);
  ASSERT_FALSE(absent);
  EXPECT_EQ(absent.error().code, Errc::not_found);
  EXPECT_NE(absent.error().message().find("BAR3"), std::string::npos);
  auto upper_half = BarMapping::map(tree_->paths(), kIvshmem, 3);  // upper half of 64-bit BAR2
  ASSERT_FALSE(upper_half);
  EXPECT_EQ(upper_half.error().code, Errc::not_found);
  auto bad_index = BarMapping::map(tree_->paths(), kEdu, 6);
  ASSERT_FALSE(bad_index);
  EXPECT_EQ(bad_index.error().code, Errc::invalid_argument);
  auto missing = BarMapping::map(tree_->paths(), Bdf{0, 7, 0, 0}, 0);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code, Errc::not_found);
}

// Opening a BAR reads the device's own resource file, not a libpci scan of the bus: a
// neighbour's broken resource file (a buggy out-of-tree driver, a half-removed device) is
// no reason to refuse, and this device's broken one is named.
TEST_F(SysfsBarTest, OnlyTheDevicesOwnResourceFileMatters) {
  {
    std::ofstream broken(tree_->device_dir(kIvshmem) + "/resource", std::ios::trunc);
    broken << "not a resource line\n";
  }
  auto edu = BarMapping::map(tree_->paths(), kEdu, 0, {.enable_decoding = true});
  ASSERT_TRUE(edu) << edu.error().message();
  EXPECT_TRUE(edu->write(Width::bits32, 0x4, 0x1234));
  auto ivshmem = BarMapping::map(tree_->paths(), kIvshmem, 2);
  ASSERT_FALSE(ivshmem);
  EXPECT_EQ(ivshmem.error().code, Errc::malformed);
  EXPECT_NE(ivshmem.error().message().find(tree_->device_dir(kIvshmem) + "/resource"), std::string::npos)
      << ivshmem.error().message();
  auto enabled = enable_decoding(tree_->paths(), kIvshmem);
  ASSERT_FALSE(enabled);
  EXPECT_EQ(enabled.error().code, Errc::malformed);
}

// A BAR the kernel left without an address (UNSET) keeps a stale start in the resource file:
// mapping resourceN would reach whatever lies there, so it is refused before any mapping.
TEST_F(SysfsBarTest, ABarTheKernelGaveNoAddressIsRefused) {
  {
    std::ofstream resource(tree_->device_dir(kEdu) + "/resource", std::ios::trunc);
    resource << "0x00000000fea00000 0x00000000feafffff 0x0000000020040200\n";
    for (int i = 1; i < 13; ++i) resource << "0x0000000000000000 0x0000000000000000 0x0000000000000000\n";
  }
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::not_supported) << bar.error().message();
  EXPECT_NE(bar.error().message().find("no address"), std::string::npos) << bar.error().message();
  EXPECT_NE(bar.error().hint.find("pci=realloc"), std::string::npos) << bar.error().hint;
}

TEST_F(SysfsBarTest, MissingResourceFileNamesThePath) {
  ASSERT_EQ(::unlink((tree_->device_dir(kEdu) + "/resource0").c_str()), 0);
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::not_found);
  EXPECT_NE(bar.error().message().find("resource0"), std::string::npos);
}

TEST_F(SysfsBarTest, PollMatchesAndTimesOutWithLastValue) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  const MmioView mmio = bar->mmio();
  mmio.write<std::uint32_t>(0x20, 0x81);
  auto done = mmio.poll<std::uint32_t>(0x20, 0x80, 0x80, 1s);
  ASSERT_TRUE(done);
  EXPECT_TRUE(done->matched);
  EXPECT_EQ(done->value, 0x81u);

  const auto start = std::chrono::steady_clock::now();
  auto timed_out = mmio.poll<std::uint32_t>(0x20, 0x01, 0x00, 5ms);
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(timed_out);
  EXPECT_FALSE(timed_out->matched);
  EXPECT_EQ(timed_out->value, 0x81u);
  EXPECT_GE(elapsed, 5ms);
  EXPECT_LT(elapsed, 2s);

  auto bad = mmio.poll<std::uint32_t>(0x21, 1, 1, 1ms);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, Errc::misaligned);
}

TEST_F(SysfsBarTest, MovedMappingStaysValid) {
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_TRUE(bar);
  BarMapping moved = std::move(*bar);
  ASSERT_TRUE(moved.write(Width::bits32, 0, 77));
  EXPECT_EQ(moved.read(Width::bits32, 0), 77u);
}

// The diagnosis of refused opens and mappings, one case per cause.
BarFailureContext context(std::optional<std::string> driver, std::string lockdown, bool root) {
  return BarFailureContext{kEdu, 0, "/sys/bus/pci/devices/0000:00:03.0/resource0", std::move(driver), std::nullopt,
                           std::move(lockdown), root};
}

// IO_STRICT_DEVMEM refuses what is claimed in the resource tree: the claimer is named from
// there, even when no driver link says so (a range claimed by something else).
TEST(BarFailureDiagnosis, ClaimerNamedFromIomem) {
  const Error raw = make_errno_error(EINVAL, "mmap", "resource0");
  BarFailureContext claimed = context("vfio-pci", "none", true);
  claimed.claimed_by = "vfio";  // what vfio-pci calls its claim
  Error error = explain_bar_failure(raw, claimed);
  EXPECT_EQ(error.code, Errc::driver_owns_region);
  EXPECT_NE(error.reason.find("driver 'vfio-pci' owns it: its range is claimed as 'vfio' in /proc/iomem"),
            std::string::npos)
      << error.message();
  EXPECT_NE(error.hint.find("drivers/vfio-pci/unbind"), std::string::npos) << error.message();
  claimed.driver.reset();
  claimed.claimed_by = "some platform driver";
  error = explain_bar_failure(raw, claimed);
  EXPECT_EQ(error.code, Errc::driver_owns_region);
  EXPECT_NE(error.message().find("iomem=relaxed"), std::string::npos) << error.message();
  EXPECT_NE(error.reason.find("'some platform driver' has claimed its range (/proc/iomem"), std::string::npos);
}

// A resource file shorter than the BAR (a hand-made tree, a --sysfs directory) would fault
// with SIGBUS on the first access past its end: refused before mapping.
TEST_F(SysfsBarTest, ResourceFileShorterThanTheWindowIsRefusedBeforeMapping) {
  for (const std::uint64_t size : {std::uint64_t{0}, std::uint64_t{4096}, std::uint64_t{(1u << 20) - 1}}) {
    SCOPED_TRACE(size);
    ASSERT_EQ(::truncate((tree_->device_dir(kEdu) + "/resource0").c_str(), static_cast<off_t>(size)), 0);
    auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
    ASSERT_FALSE(bar);
    EXPECT_EQ(bar.error().code, Errc::malformed) << bar.error().message();
    EXPECT_NE(bar.error().message().find("holds " + std::to_string(size) + " bytes"), std::string::npos)
        << bar.error().message();
  }
  // A window that ends inside what the file holds is fine.
  ASSERT_EQ(::truncate((tree_->device_dir(kEdu) + "/resource0").c_str(), 4096), 0);
  auto window = BarMapping::map(tree_->paths(), kEdu, 0, {.length = 4096});
  ASSERT_TRUE(window) << window.error().message();
  EXPECT_TRUE(window->read(Width::bits32, 4092));
  auto past = BarMapping::map(tree_->paths(), kEdu, 0, {.offset = 4096, .length = 4096});
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::malformed);
}

// A device whose command register has Memory (or I/O) Space Enable off does not decode the
// BAR: reads return nothing the device said (zeros, all ones, or a fault). Refused with an
// error that says so, unless asked to enable decoding first (libpciaccess's
// pci_device_enable: sysfs "enable", then the command register).
TEST_F(SysfsBarTest, DecodingOffIsRefusedAndEnableTurnsItOn) {
  ConfigSpace config = ConfigSpace::open(tree_->paths(), kEdu, ConfigSpace::Mode::read_write).value();
  ASSERT_TRUE(config.write16(cfg::kCommand, 0));
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::device_disabled) << bar.error().message();
  EXPECT_NE(bar.error().reason.find("Memory Space Enable"), std::string::npos) << bar.error().message();
  EXPECT_NE(bar.error().hint.find("enable_decoding"), std::string::npos) << bar.error().message();

  auto enabled = BarMapping::map(tree_->paths(), kEdu, 0, {.enable_decoding = true});
  ASSERT_TRUE(enabled) << enabled.error().message();
  EXPECT_EQ(enabled->read(Width::bits32, 0), 0x010000edu);
  EXPECT_EQ(tree_->read_device_bytes(kEdu, "enable", 0, 1).value(), std::vector<std::uint8_t>{'1'});
  EXPECT_EQ(config.read16(cfg::kCommand).value() & cfg::kCommandMemorySpace, cfg::kCommandMemorySpace);
  EXPECT_TRUE(BarMapping::map(tree_->paths(), kEdu, 0));

  // I/O-port BARs need I/O Space Enable.
  ConfigSpace testdev = ConfigSpace::open(tree_->paths(), kTestdev, ConfigSpace::Mode::read_write).value();
  ASSERT_TRUE(testdev.write16(cfg::kCommand, cfg::kCommandMemorySpace));
  auto io = IoPortBar::open(tree_->paths(), kTestdev, 1);
  ASSERT_FALSE(io);
  EXPECT_EQ(io.error().code, Errc::device_disabled);
  EXPECT_NE(io.error().reason.find("I/O Space Enable"), std::string::npos) << io.error().message();
  EXPECT_TRUE(BarMapping::map(tree_->paths(), kTestdev, 0)) << "memory decoding is on";
  ASSERT_TRUE(enable_decoding(tree_->paths(), kTestdev));
  EXPECT_TRUE(IoPortBar::open(tree_->paths(), kTestdev, 1));
}

// A VF's own command register never enables memory decoding; its PF's SR-IOV control
// does (VF Memory Space Enable).
TEST_F(SysfsBarTest, VirtualFunctionDecodesByItsPfsSriovControl) {
  const Bdf pf{0, 2, 0, 0}, vf{0, 2, 2, 0};
  testing::FakeDevice pf_device = testing::sriov_pf(pf, 2, 1);
  ASSERT_TRUE(tree_->add_device(pf_device));
  ASSERT_TRUE(tree_->add_device(testing::sriov_vf(vf, pf)));
  auto mapped = BarMapping::map(tree_->paths(), vf, 0);
  ASSERT_TRUE(mapped) << mapped.error().message();

  pf_device.sriov->vf_memory_space_enable = false;
  auto config = testing::FakeSysfs::build_config(pf_device);
  ASSERT_TRUE(config);
  ASSERT_TRUE(tree_->write_config(pf, *config));
  auto refused = BarMapping::map(tree_->paths(), vf, 0);
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::device_disabled) << refused.error().message();
  EXPECT_NE(refused.error().reason.find("VF Memory Space Enable"), std::string::npos) << refused.error().message();
  EXPECT_NE(refused.error().reason.find("0000:02:00.0"), std::string::npos) << refused.error().message();
  auto enabled = BarMapping::map(tree_->paths(), vf, 0, {.enable_decoding = true});
  ASSERT_FALSE(enabled) << "a VF's decoding belongs to its PF's driver";
  EXPECT_EQ(enabled.error().code, Errc::device_disabled);
}

// x86 PAT gives a second mapping of a range the first one's type. The kernel's table says
// what it granted; a mapping whose type differs from the one asked for is refused, or
// taken with the granted type when asked; without the table it is "unverified".
TEST_F(SysfsBarTest, MemoryTypeIsCheckedAgainstTheKernelsPatTable) {
  // ivshmem BAR2: 0x800000000, 4 MiB.
  auto unverified = BarMapping::map(tree_->paths(), kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_TRUE(unverified) << unverified.error().message();
  EXPECT_FALSE(unverified->memory_type_report().verified());
  EXPECT_NE(unverified->memory_type_report().note.find("unverified"), std::string::npos);
  EXPECT_EQ(unverified->memory_type(), MemoryType::write_combined) << "as asked, since nothing says otherwise";
  unverified = std::unexpected(make_error(Errc::io_error, "", "", ""));

  ASSERT_TRUE(tree_->set_pat_memtypes("PAT memtype list:\n"
                                      "PAT: [mem 0x00000000fd000000-0x00000000fe000000] write-combining\n"
                                      "PAT: [mem 0x0000000800000000-0x0000000800400000] write-combining\n"));
  auto granted = BarMapping::map(tree_->paths(), kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_TRUE(granted) << granted.error().message();
  EXPECT_TRUE(granted->memory_type_report().verified());
  EXPECT_EQ(granted->memory_type_report().granted_name, "write-combining");
  EXPECT_EQ(granted->memory_type(), MemoryType::write_combined);

  // Another mapping made the range uncached first: asking for write-combining gets uncached.
  ASSERT_TRUE(tree_->set_pat_memtypes("PAT: [mem 0x0000000800000000-0x0000000800400000] uncached-minus\n"
                                      "PAT: [mem 0x0000000800000000-0x0000000800400000] uncached-minus\n"));
  auto refused = BarMapping::map(tree_->paths(), kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::busy) << refused.error().message();
  EXPECT_NE(refused.error().reason.find("granted uncached-minus"), std::string::npos) << refused.error().message();
  auto taken = BarMapping::map(tree_->paths(), kIvshmem, 2,
                               {.memory_type = MemoryType::write_combined,
                                .on_mismatch = MemoryTypeMismatch::use_granted});
  ASSERT_TRUE(taken) << taken.error().message();
  EXPECT_EQ(taken->memory_type(), MemoryType::uncached);
  EXPECT_EQ(taken->mmio().memory_type(), MemoryType::uncached) << "the copy path picks its kernel from this";
  EXPECT_EQ(taken->memory_type_report().requested, MemoryType::write_combined);
  // And the uncached mapping it asked for is what it got.
  auto uncached = BarMapping::map(tree_->paths(), kIvshmem, 2);
  ASSERT_TRUE(uncached) << uncached.error().message();
  EXPECT_TRUE(uncached->memory_type_report().verified());

  // A type that is none of ours (write-through) never matches, and is used as uncached.
  uncached = std::unexpected(make_error(Errc::io_error, "", "", ""));
  ASSERT_TRUE(tree_->set_pat_memtypes("PAT: [mem 0x0000000800000000-0x0000000800400000] write-through\n"));
  auto through = BarMapping::map(tree_->paths(), kIvshmem, 2);
  ASSERT_FALSE(through);
  EXPECT_NE(through.error().reason.find("granted write-through"), std::string::npos) << through.error().message();
  auto through_taken = BarMapping::map(tree_->paths(), kIvshmem, 2, {.on_mismatch = MemoryTypeMismatch::use_granted});
  ASSERT_TRUE(through_taken);
  EXPECT_TRUE(through_taken->memory_type_report().mismatch);
  EXPECT_EQ(through_taken->memory_type(), MemoryType::uncached);

  ASSERT_TRUE(tree_->set_pat_memtypes("PAT: [mem 0x0000000800000000 nonsense\n"));
  auto garbage = BarMapping::map(tree_->paths(), kIvshmem, 2);
  ASSERT_TRUE(garbage);
  EXPECT_FALSE(garbage->memory_type_report().verified()) << "an unreadable table verifies nothing";
}

// Booted with nopat, the kernel makes no resourceN_wc: the refusal says PAT is off.
TEST_F(SysfsBarTest, WriteCombiningWithoutPatSaysPatIsOff) {
  ASSERT_EQ(::unlink((tree_->device_dir(kIvshmem) + "/resource2_wc").c_str()), 0);
  auto refused = BarMapping::map(tree_->paths(), kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_FALSE(refused);
  EXPECT_EQ(refused.error().code, Errc::not_supported) << refused.error().message();
  EXPECT_NE(refused.error().reason.find("PAT is off"), std::string::npos) << refused.error().message();
  EXPECT_EQ(refused.error().message().find("device present"), std::string::npos) << refused.error().message();
  ASSERT_TRUE(tree_->set_kernel_cmdline("BOOT_IMAGE=/vmlinuz root=/dev/vda1 nopat quiet\n"));
  refused = BarMapping::map(tree_->paths(), kIvshmem, 2, {.memory_type = MemoryType::write_combined});
  ASSERT_FALSE(refused);
  EXPECT_NE(refused.error().reason.find("booted with nopat"), std::string::npos) << refused.error().message();
  EXPECT_TRUE(BarMapping::map(tree_->paths(), kIvshmem, 2)) << "uncached still works";
}

TEST_F(SysfsBarTest, RemovedDeviceIsNotMapped) {
  std::vector<std::uint8_t> all_ones(256, 0xff);
  ASSERT_TRUE(tree_->write_config(kEdu, all_ones));
  auto bar = BarMapping::map(tree_->paths(), kEdu, 0);
  ASSERT_FALSE(bar);
  EXPECT_EQ(bar.error().code, Errc::device_removed) << bar.error().message();
}

TEST(ExplainBarFailure, DriverOwnsRegionNamesTheDriver) {
  const Error raw = make_errno_error(EINVAL, "mmap", "resource0");
  const Error error = explain_bar_failure(raw, context("nvme", "none", true));
  EXPECT_EQ(error.code, Errc::driver_owns_region);
  EXPECT_EQ(error.sys_errno, EINVAL);
  EXPECT_NE(error.reason.find("driver 'nvme' owns it"), std::string::npos);
  EXPECT_NE(error.reason.find("CONFIG_IO_STRICT_DEVMEM"), std::string::npos);
  EXPECT_NE(error.hint.find("/sys/bus/pci/drivers/nvme/unbind"), std::string::npos);
  EXPECT_NE(error.message().find("0000:00:03.0 BAR0"), std::string::npos);
}

TEST(ExplainBarFailure, EinvalWithoutDriverPassesThrough) {
  const Error raw = make_errno_error(EINVAL, "mmap", "resource0");
  const Error error = explain_bar_failure(raw, context(std::nullopt, "none", true));
  EXPECT_EQ(error.code, Errc::io_error);
  EXPECT_EQ(error.sys_errno, EINVAL);
}

TEST(ExplainBarFailure, NotRootSaysRunAsRoot) {
  const Error raw = make_errno_error(EACCES, "open", "resource0");
  const Error error = explain_bar_failure(raw, context(std::nullopt, "none", false));
  EXPECT_EQ(error.code, Errc::permission_denied);
  EXPECT_NE(error.reason.find("root only"), std::string::npos);
  EXPECT_NE(error.hint.find("run as root"), std::string::npos);
}

TEST(ExplainBarFailure, LockdownWins) {
  const Error raw = make_errno_error(EPERM, "mmap", "resource0");
  const Error error = explain_bar_failure(raw, context("nvme", "integrity", true));
  EXPECT_EQ(error.code, Errc::lockdown);
  EXPECT_NE(error.reason.find("lockdown (integrity)"), std::string::npos);
  EXPECT_NE(error.hint.find("VFIO"), std::string::npos);
}

TEST(ExplainBarFailure, RootRefusedWithoutLockdown) {
  const Error raw = make_errno_error(EPERM, "mmap", "resource0");
  const Error error = explain_bar_failure(raw, context(std::nullopt, "none", true));
  EXPECT_EQ(error.code, Errc::permission_denied);
  EXPECT_NE(error.hint.find("SELinux"), std::string::npos);
}

TEST(LockdownMode, ParsesBracketedMode) {
  auto tree = testing::FakeSysfs::create();
  ASSERT_TRUE(tree);
  EXPECT_EQ(read_lockdown_mode(tree->paths().lockdown_file), "none");
  ASSERT_TRUE(tree->set_lockdown("none integrity [confidentiality]\n"));
  EXPECT_EQ(read_lockdown_mode(tree->paths().lockdown_file), "confidentiality");
  ASSERT_TRUE(tree->set_lockdown("garbage\n"));
  EXPECT_EQ(read_lockdown_mode(tree->paths().lockdown_file), "");
  EXPECT_EQ(read_lockdown_mode("/nonexistent/lockdown"), "");
}

}  // namespace
}  // namespace pcie
