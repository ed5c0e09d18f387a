// The capability walker on hand-made, often malformed, config-space images.
#include "pcie/capabilities.h"

#include <gtest/gtest.h>

#include "pcie/config_space.h"
#include "pcie/link.h"

namespace pcie {
namespace {

// A type 0 header with the capability-list bit set and the first pointer at `first`.
std::vector<std::uint8_t> header(std::size_t size, std::uint8_t first) {
  std::vector<std::uint8_t> config(size, 0);
  config[0] = 0x34;
  config[1] = 0x12;
  config[cfg::kStatus] = cfg::kStatusCapabilityList;
  config[cfg::kCapabilityPointer] = first;
  return config;
}

void put_cap(std::vector<std::uint8_t>& config, std::size_t at, std::uint8_t id, std::uint8_t next) {
  config[at] = id;
  config[at + 1] = next;
}

void put_ext(std::vector<std::uint8_t>& config, std::size_t at, std::uint16_t id, std::uint8_t version, std::uint16_t next) {
  store_le(config, at, 4, id | static_cast<std::uint32_t>(version) << 16 | static_cast<std::uint32_t>(next) << 20);
}

TEST(StandardWalk, FollowsList) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kPowerManagement, 0x50);
  put_cap(config, 0x50, cap::kMsi, 0x70);
  put_cap(config, 0x70, cap::kPciExpress, 0);
  const auto walk = walk_standard_capabilities(config);
  EXPECT_FALSE(walk.problem);
  ASSERT_EQ(walk.capabilities.size(), 3u);
  EXPECT_EQ(walk.capabilities[0].offset, 0x40);
  EXPECT_EQ(walk.capabilities[1].id, cap::kMsi);
  EXPECT_EQ(walk.capabilities[2].name(), "PCI Express");
}

TEST(StandardWalk, NoCapabilityListBitMeansNone) {
  auto config = header(256, 0x40);
  config[cfg::kStatus] = 0;
  put_cap(config, 0x40, cap::kMsi, 0);
  const auto walk = walk_standard_capabilities(config);
  EXPECT_FALSE(walk.problem);
  EXPECT_TRUE(walk.capabilities.empty());
}

TEST(StandardWalk, MasksReservedPointerBits) {
  auto config = header(256, 0x43);
  put_cap(config, 0x40, cap::kMsi, 0x51);
  put_cap(config, 0x50, cap::kMsiX, 0);
  const auto walk = walk_standard_capabilities(config);
  EXPECT_FALSE(walk.problem);
  ASSERT_EQ(walk.capabilities.size(), 2u);
  EXPECT_EQ(walk.capabilities[1].offset, 0x50);
}

TEST(StandardWalk, SelfLoopStops) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kMsi, 0x40);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::malformed);
  EXPECT_NE(walk.problem->reason.find("loops back to 0x40"), std::string::npos);
  EXPECT_EQ(walk.capabilities.size(), 1u);
}

TEST(StandardWalk, LongLoopStops) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kPowerManagement, 0x80);
  put_cap(config, 0x80, cap::kMsi, 0xc0);
  put_cap(config, 0xc0, cap::kMsiX, 0x80);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("loops back to 0x80"), std::string::npos);
  EXPECT_EQ(walk.capabilities.size(), 3u);
}

// Every slot in use: 48 capabilities, each found once, the last pointing back (a loop), or
// ending the list (a full, valid list).
TEST(StandardWalk, EveryPossibleSlotIsWalkedOnce) {
  auto config = header(256, 0x40);
  for (std::size_t at = 0x40; at < 0x100; at += 4) {
    put_cap(config, at, cap::kVendorSpecific, static_cast<std::uint8_t>(at + 4 < 0x100 ? at + 4 : 0x40));
  }
  auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("loops back to 0x40"), std::string::npos) << walk.problem->message();
  ASSERT_EQ(walk.capabilities.size(), std::size_t(kMaxStandardCapabilities));
  for (std::size_t i = 0; i < walk.capabilities.size(); ++i) EXPECT_EQ(walk.capabilities[i].offset, 0x40 + 4 * i);
  put_cap(config, 0xfc, cap::kVendorSpecific, 0);
  walk = walk_standard_capabilities(config);
  EXPECT_FALSE(walk.problem) << walk.problem->message();
  EXPECT_EQ(walk.capabilities.size(), std::size_t(kMaxStandardCapabilities)) << "a full list is not corrupt";
}

TEST(StandardWalk, PointerIntoHeaderRejected) {
  for (std::uint8_t pointer : {0x04, 0x10, 0x3c}) {
    auto config = header(256, pointer);
    const auto walk = walk_standard_capabilities(config);
    ASSERT_TRUE(walk.problem) << int(pointer);
    EXPECT_NE(walk.problem->reason.find("points into the header"), std::string::npos);
    EXPECT_TRUE(walk.capabilities.empty());
  }
}

TEST(StandardWalk, LaterPointerIntoHeaderKeepsEarlierCapabilities) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kMsi, 0x08);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.capabilities.size(), 1u);
}

// The walker sees bytes, not who read them: whether "run as root" would help is for the
// caller to say (ConfigSpace::limited_by_privilege), never the walker.
TEST(StandardWalk, PointerPastTruncatedConfigIsOutOfRange) {
  auto config = header(64, 0x40);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::out_of_range);
  EXPECT_EQ(walk.problem->message().find("root"), std::string::npos) << walk.problem->message();
}

TEST(StandardWalk, CapabilityAtLastByteIsCutOff) {
  auto config = header(256, 0xfc);
  put_cap(config, 0xfc, cap::kMsi, 0);
  std::vector<std::uint8_t> cut(config.begin(), config.begin() + 0xfd);
  const auto walk = walk_standard_capabilities(cut);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("beyond the 253 readable bytes"), std::string::npos);
}

TEST(StandardWalk, ShorterThanHeaderIsMalformed) {
  std::vector<std::uint8_t> config(40, 0);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::malformed);
  EXPECT_NE(walk.problem->reason.find("truncated to 40 bytes"), std::string::npos);
}

TEST(StandardWalk, EmptySnapshotIsMalformed) {
  const auto walk = walk_standard_capabilities({});
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::malformed);
}

TEST(StandardWalk, AllOnesIsDeviceRemoved) {
  std::vector<std::uint8_t> config(256, 0xff);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::device_removed);
}

TEST(StandardWalk, AllOnesCapabilityIsDeviceRemoved) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, 0xff, 0xff);
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::device_removed);
}

TEST(StandardWalk, UnknownHeaderTypeIsMalformed) {
  auto config = header(256, 0x40);
  config[cfg::kHeaderType] = 0x05;
  const auto walk = walk_standard_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("unknown header type 0x05"), std::string::npos);
}

TEST(StandardWalk, CardbusUsesItsOwnPointer) {
  auto config = header(256, 0);
  config[cfg::kHeaderType] = 0x82;  // multi-function CardBus bridge
  config[cfg::kCardbusCapabilityPointer] = 0x80;
  put_cap(config, 0x80, cap::kPowerManagement, 0);
  const auto walk = walk_standard_capabilities(config);
  EXPECT_FALSE(walk.problem);
  ASSERT_EQ(walk.capabilities.size(), 1u);
  EXPECT_EQ(walk.capabilities[0].offset, 0x80);
}

TEST(ExtendedWalk, FollowsList) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 2, 0x148);
  put_ext(config, 0x148, ext_cap::kAccessControlServices, 1, 0x200);
  put_ext(config, 0x200, ext_cap::kResizableBar, 1, 0);
  const auto walk = walk_extended_capabilities(config);
  EXPECT_FALSE(walk.problem);
  ASSERT_EQ(walk.capabilities.size(), 3u);
  EXPECT_EQ(walk.capabilities[0].version, 2);
  EXPECT_EQ(walk.capabilities[1].name(), "Access Control Services");
  EXPECT_EQ(walk.capabilities[2].offset, 0x200);
}

TEST(ExtendedWalk, ConventionalConfigHasNone) {
  auto config = header(256, 0);
  const auto walk = walk_extended_capabilities(config);
  EXPECT_FALSE(walk.problem);
  EXPECT_TRUE(walk.capabilities.empty());
}

TEST(ExtendedWalk, ZeroOrAllOnesAtStartMeansNone) {
  auto config = header(4096, 0);
  EXPECT_TRUE(walk_extended_capabilities(config).capabilities.empty());
  put_ext(config, 0x100, 0xffff, 0xf, 0xfff);
  const auto walk = walk_extended_capabilities(config);
  EXPECT_FALSE(walk.problem);
  EXPECT_TRUE(walk.capabilities.empty());
}

TEST(ExtendedWalk, LoopStops) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 1, 0x200);
  put_ext(config, 0x200, ext_cap::kDeviceSerialNumber, 1, 0x100);
  const auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("loops back to 0x100"), std::string::npos);
  EXPECT_EQ(walk.capabilities.size(), 2u);
}

TEST(ExtendedWalk, PointerBelow0x100Rejected) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 1, 0x0fc);
  const auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("below 0x100"), std::string::npos);
}

TEST(ExtendedWalk, PointerPastTruncatedFileRejected) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 1, 0x800);
  config.resize(0x400);
  const auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("beyond the 1024 readable bytes"), std::string::npos);
}

TEST(ExtendedWalk, TruncatedJustPast256IsMalformed) {
  auto config = header(258, 0);
  const auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::malformed);
}

TEST(ExtendedWalk, AllOnesMidListIsDeviceRemoved) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 1, 0x200);
  for (int i = 0; i < 4; ++i) config[0x200 + i] = 0xff;
  const auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_EQ(walk.problem->code, Errc::device_removed);
}

TEST(ExtendedWalk, LastSlotIsReachable) {
  auto config = header(4096, 0);
  put_ext(config, 0x100, ext_cap::kAdvancedErrorReporting, 1, 0xffc);
  put_ext(config, 0xffc, ext_cap::kDeviceSerialNumber, 1, 0);
  const auto walk = walk_extended_capabilities(config);
  EXPECT_FALSE(walk.problem);
  ASSERT_EQ(walk.capabilities.size(), 2u);
  EXPECT_EQ(walk.capabilities[1].offset, 0xffc);
}

// Every extended slot in use: 960 capabilities, each found once; the last pointing back is
// a loop, the last ending the list a full, valid one.
TEST(ExtendedWalk, EveryPossibleSlotIsWalkedOnce) {
  auto config = header(4096, 0);
  for (std::size_t at = 0x100; at < 0x1000; at += 4) {
    put_ext(config, at, ext_cap::kDeviceSerialNumber, 1, static_cast<std::uint16_t>(at + 4 < 0x1000 ? at + 4 : 0x100));
  }
  auto walk = walk_extended_capabilities(config);
  ASSERT_TRUE(walk.problem);
  EXPECT_NE(walk.problem->reason.find("loops back to 0x100"), std::string::npos) << walk.problem->message();
  ASSERT_EQ(walk.capabilities.size(), std::size_t(kMaxExtendedCapabilities));
  EXPECT_EQ(walk.capabilities.back().offset, 0xffc);
  put_ext(config, 0xffc, ext_cap::kDeviceSerialNumber, 1, 0);
  walk = walk_extended_capabilities(config);
  EXPECT_FALSE(walk.problem) << walk.problem->message();
  EXPECT_EQ(walk.capabilities.size(), std::size_t(kMaxExtendedCapabilities));
}

TEST(CapabilityNames, KnownAndUnknown) {
  EXPECT_EQ(standard_capability_name(0x11), "MSI-X");
  EXPECT_EQ(standard_capability_name(0x7f), "unknown");
  EXPECT_EQ(extended_capability_name(0x0010), "Single Root I/O Virtualization");
  EXPECT_EQ(extended_capability_name(0x0023), "Designated Vendor-Specific");
  EXPECT_EQ(extended_capability_name(0x00ff), "unknown");
}

TEST(Link, DecodesCapabilityRegisters) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kPciExpress, 0);
  // 16 GT/s (encoding 4), x16: 0x104
  config[0x40 + pcie_cap::kLinkCapabilities] = 0x04;
  config[0x40 + pcie_cap::kLinkCapabilities + 1] = 0x01;
  config[0x40 + pcie_cap::kLinkStatus] = 0x03 | (8 << 4);        // 8 GT/s, x8
  const auto walk = walk_standard_capabilities(config);
  auto link = decode_link(config, walk.capabilities);
  ASSERT_TRUE(link);
  ASSERT_TRUE(*link);
  EXPECT_EQ((*link)->max_speed_gts, 16.0);
  EXPECT_EQ((*link)->max_width, 16u);
  EXPECT_EQ((*link)->current_speed_gts, 8.0);
  EXPECT_EQ((*link)->current_width, 8u);
}

TEST(Link, IntegratedEndpointHasNoLink) {
  auto config = header(256, 0x40);
  put_cap(config, 0x40, cap::kPciExpress, 0);
  config[0x40 + pcie_cap::kCapabilities] = 0x92;  // RCiEP, version 2
  const auto walk = walk_standard_capabilities(config);
  auto link = decode_link(config, walk.capabilities);
  ASSERT_TRUE(link);
  EXPECT_FALSE(*link);
}

TEST(Link, CapabilityCutOffIsAnError) {
  auto config = header(256, 0xf0);
  put_cap(config, 0xf0, cap::kPciExpress, 0);
  const auto walk = walk_standard_capabilities(config);
  auto link = decode_link(config, walk.capabilities);
  ASSERT_FALSE(link);
  EXPECT_EQ(link.error().code, Errc::out_of_range);
}

TEST(Link, SpeedEncodings) {
  EXPECT_EQ(link_speed_gts(1), 2.5);
  EXPECT_EQ(link_speed_gts(6), 64.0);
  EXPECT_FALSE(link_speed_gts(0));
  EXPECT_FALSE(link_speed_gts(7));
}

TEST(Link, SysfsSpeedText) {
  EXPECT_EQ(parse_sysfs_link_speed("8.0 GT/s PCIe\n"), 8.0);
  EXPECT_EQ(parse_sysfs_link_speed("2.5 GT/s"), 2.5);
  EXPECT_FALSE(parse_sysfs_link_speed("Unknown\n"));
  EXPECT_FALSE(parse_sysfs_link_speed(""));
  EXPECT_FALSE(parse_sysfs_link_speed("8.0GT/s"));
  EXPECT_FALSE(parse_sysfs_link_speed("-8.0 GT/s"));
}

}  // namespace
}  // namespace pcie
