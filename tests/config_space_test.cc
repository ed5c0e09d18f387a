#include "pcie/config_space.h"

#include <gtest/gtest.h>

#include <filesystem>

#include "pcie/testing/fake_sysfs.h"

namespace pcie {
namespace {

const Bdf kNvme{0, 1, 0, 0};
const Bdf kEdu{0, 0, 3, 0};

class ConfigSpaceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto tree = testing::FakeSysfs::create();
    ASSERT_TRUE(tree);
    tree_.emplace(std::move(*tree));
    ASSERT_TRUE(tree_->add_device(testing::qemu_nvme(kNvme)));
    ASSERT_TRUE(tree_->add_device(testing::qemu_edu(kEdu)));
  }
  std::optional<testing::FakeSysfs> tree_;
};

TEST_F(ConfigSpaceTest, TypedReadsAreLittleEndian) {
  auto config = ConfigSpace::open(tree_->paths(), kNvme);
  ASSERT_TRUE(config) << config.error().message();
  EXPECT_EQ(config->readable_size(), 4096u);
  EXPECT_EQ(config->read16(cfg::kVendorId), 0x1b36);
  EXPECT_EQ(config->read16(cfg::kDeviceId), 0x0010);
  EXPECT_EQ(config->read32(cfg::kVendorId), 0x00101b36u);
  EXPECT_EQ(config->read8(cfg::kClassCode + 2), 0x01);
  EXPECT_EQ(config->read8(cfg::kRevisionId), 0x02);
  EXPECT_EQ(config->read32(0x100).value() & 0xffff, 0x0001u);  // AER at 0x100
  EXPECT_TRUE(config->check_present());
}

TEST_F(ConfigSpaceTest, ConventionalDeviceHas256Bytes) {
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_TRUE(config);
  EXPECT_EQ(config->readable_size(), 256u);
  EXPECT_TRUE(config->read32(0xfc));
  auto past = config->read32(0x100);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
}

TEST_F(ConfigSpaceTest, WriteThenReadBack) {
  auto config = ConfigSpace::open(tree_->paths(), kEdu, ConfigSpace::Mode::read_write);
  ASSERT_TRUE(config) << config.error().message();
  ASSERT_TRUE(config->write16(cfg::kCommand, cfg::kCommandMemorySpace | cfg::kCommandBusMaster));
  EXPECT_EQ(config->read16(cfg::kCommand), cfg::kCommandMemorySpace | cfg::kCommandBusMaster);
  ASSERT_TRUE(config->write8(cfg::kInterruptLine, 0x0b));
  ASSERT_TRUE(config->write32(0x80, 0xdeadbeef));
  EXPECT_EQ(config->read32(0x80), 0xdeadbeefu);
  EXPECT_EQ(config->read8(0x80), 0xef);
  EXPECT_EQ(config->read16(0x82), 0xdead);
}

TEST_F(ConfigSpaceTest, ReadOnlyRefusesWrites) {
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_TRUE(config);
  auto written = config->write16(cfg::kCommand, 0);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::permission_denied);
}

struct AccessCase {
  std::uint32_t offset;
  std::size_t width;
  Errc expected;
};

class ConfigAccessErrors : public ConfigSpaceTest, public ::testing::WithParamInterface<AccessCase> {};

TEST_P(ConfigAccessErrors, ReadAndWriteRejected) {
  const AccessCase& c = GetParam();
  auto config = ConfigSpace::open(tree_->paths(), kEdu, ConfigSpace::Mode::read_write);
  ASSERT_TRUE(config);
  auto read = config->read(c.offset, c.width);
  ASSERT_FALSE(read) << "read offset " << c.offset << " width " << c.width;
  EXPECT_EQ(read.error().code, c.expected) << read.error().message();
  auto written = config->write(c.offset, c.width, 0);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, c.expected) << written.error().message();
}

INSTANTIATE_TEST_SUITE_P(
    Table, ConfigAccessErrors,
    ::testing::Values(AccessCase{0, 0, Errc::width_not_allowed}, AccessCase{0, 3, Errc::width_not_allowed},
                      AccessCase{0, 8, Errc::width_not_allowed}, AccessCase{0, 5, Errc::width_not_allowed},
                      AccessCase{1, 2, Errc::misaligned}, AccessCase{1, 4, Errc::misaligned},
                      AccessCase{2, 4, Errc::misaligned}, AccessCase{3, 4, Errc::misaligned},
                      AccessCase{0xff, 2, Errc::misaligned}, AccessCase{0xfe, 4, Errc::misaligned},
                      AccessCase{256, 1, Errc::out_of_range}, AccessCase{256, 4, Errc::out_of_range},
                      AccessCase{4096, 4, Errc::out_of_range}, AccessCase{0xfffffffc, 4, Errc::out_of_range},
                      AccessCase{0xffffffff, 1, Errc::out_of_range}, AccessCase{0xfffffffe, 2, Errc::out_of_range}));

TEST_F(ConfigSpaceTest, WriteValueTooWideRejected) {
  auto config = ConfigSpace::open(tree_->paths(), kEdu, ConfigSpace::Mode::read_write);
  ASSERT_TRUE(config);
  auto written = config->write(0x40, 1, 0x100);
  ASSERT_FALSE(written);
  EXPECT_EQ(written.error().code, Errc::invalid_argument);
}

// A config file that holds only 64 bytes: reads stop there, and since the whole file was
// readable, "run as root" would not help and is not said (real_machine_test checks the
// unprivileged view of real devices, where it is).
TEST_F(ConfigSpaceTest, ShortConfigFileOf64Bytes) {
  auto full = testing::FakeSysfs::build_config(testing::qemu_edu(kEdu));
  ASSERT_TRUE(full);
  full->resize(64);
  ASSERT_TRUE(tree_->write_config(kEdu, *full));
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_TRUE(config);
  EXPECT_EQ(config->readable_size(), 64u);
  EXPECT_FALSE(config->limited_by_privilege());
  EXPECT_TRUE(config->read32(60));
  auto past = config->read8(64);
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, Errc::out_of_range);
  EXPECT_EQ(past.error().message().find("root"), std::string::npos) << past.error().message();
}

TEST_F(ConfigSpaceTest, TruncatedBelowHeaderIsMalformed) {
  std::vector<std::uint8_t> short_config(20, 0);
  ASSERT_TRUE(tree_->write_config(kEdu, short_config));
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Errc::malformed);
  EXPECT_NE(config.error().reason.find("only 20 bytes"), std::string::npos);
}

TEST_F(ConfigSpaceTest, EmptyConfigIsMalformed) {
  ASSERT_TRUE(tree_->write_config(kEdu, {}));
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Errc::malformed);
}

TEST_F(ConfigSpaceTest, AllOnesIsDeviceRemoved) {
  std::vector<std::uint8_t> all_ones(256, 0xff);
  ASSERT_TRUE(tree_->write_config(kEdu, all_ones));
  auto config = ConfigSpace::open(tree_->paths(), kEdu);
  ASSERT_TRUE(config);
  auto present = config->check_present();
  ASSERT_FALSE(present);
  EXPECT_EQ(present.error().code, Errc::device_removed);
  EXPECT_NE(present.error().message().find("0000:00:03.0"), std::string::npos);
}

TEST_F(ConfigSpaceTest, MissingDeviceIsNotFoundWithHint) {
  auto config = ConfigSpace::open(tree_->paths(), Bdf{0, 0x42, 0, 0});
  ASSERT_FALSE(config);
  EXPECT_EQ(config.error().code, Errc::not_found);
  EXPECT_NE(config.error().message().find("0000:42:00.0/config"), std::string::npos);
  EXPECT_NE(config.error().hint.find("pciectl ls"), std::string::npos);
}

TEST(ByteOrder, LittleEndianRoundTrip) {
  std::vector<std::uint8_t> bytes(12, 0);
  store_le(bytes, 1, 8, 0x0807060504030201ull);
  EXPECT_EQ(bytes, (std::vector<std::uint8_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0}));
  EXPECT_EQ(load_le(bytes, 1, 8), 0x0807060504030201ull);
  EXPECT_EQ(load_le16(bytes, 1), 0x0201);
  EXPECT_EQ(load_le32(bytes, 2), 0x05040302u);
  EXPECT_EQ(load_le(bytes, 4, 1), 0x04u);
  store_le(bytes, 9, 3, 0xffaabbccu);  // only the low 3 bytes are stored
  EXPECT_EQ(load_le(bytes, 9, 3), 0xaabbccu);
}

TEST_F(ConfigSpaceTest, SnapshotIsWholeReadableSpace) {
  auto config = ConfigSpace::open(tree_->paths(), kNvme);
  ASSERT_TRUE(config);
  auto bytes = config->snapshot();
  ASSERT_TRUE(bytes);
  EXPECT_EQ(bytes->size(), 4096u);
  EXPECT_EQ(load_le16(*bytes, 0), 0x1b36);
}

}  // namespace
}  // namespace pcie
