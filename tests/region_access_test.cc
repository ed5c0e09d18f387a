// The access checks shared by every checked accessor: width allowed, natural alignment,
// overflow-safe bounds. Each case with the error it must produce.
#include <gtest/gtest.h>

#include <limits>

#include "pcie/region.h"

namespace pcie {
namespace {

constexpr std::uint64_t kMax = std::numeric_limits<std::uint64_t>::max();

struct Case {
  std::uint64_t size;
  WidthSet allowed;
  Width width;
  std::uint64_t offset;
  std::optional<Errc> expected;  // nullopt: allowed
};

class CheckAccess : public ::testing::TestWithParam<Case> {};

TEST_P(CheckAccess, Table) {
  const Case& c = GetParam();
  auto result = check_access("read", "test BAR", c.size, c.allowed, c.width, c.offset);
  if (!c.expected) {
    EXPECT_TRUE(result) << result.error().message();
    return;
  }
  ASSERT_FALSE(result) << "offset 0x" << std::hex << c.offset << " width " << bit_count(c.width);
  EXPECT_EQ(result.error().code, *c.expected) << result.error().message();
  EXPECT_NE(result.error().message().find("test BAR"), std::string::npos);
}

const WidthSet kAll = WidthSet::all();
const WidthSet k32 = WidthSet::only(Width::bits32);
const WidthSet kIo = WidthSet::up_to(Width::bits32);

INSTANTIATE_TEST_SUITE_P(
    Accepted, CheckAccess,
    ::testing::Values(Case{4096, kAll, Width::bits8, 0, {}}, Case{4096, kAll, Width::bits8, 4095, {}},
                      Case{4096, kAll, Width::bits16, 4094, {}}, Case{4096, kAll, Width::bits32, 4092, {}},
                      Case{4096, kAll, Width::bits64, 4088, {}}, Case{8, kAll, Width::bits64, 0, {}},
                      Case{1, kAll, Width::bits8, 0, {}}, Case{kMax, kAll, Width::bits8, kMax - 1, {}},
                      Case{4096, k32, Width::bits32, 0x80, {}}, Case{256, kIo, Width::bits16, 254, {}}));

INSTANTIATE_TEST_SUITE_P(
    OutOfRange, CheckAccess,
    ::testing::Values(Case{4096, kAll, Width::bits8, 4096, Errc::out_of_range},
                      Case{4096, kAll, Width::bits16, 4096, Errc::out_of_range},
                      Case{4096, kAll, Width::bits32, 4096, Errc::out_of_range},
                      Case{4096, kAll, Width::bits64, 4096, Errc::out_of_range},
                      Case{4096, kAll, Width::bits64, 8192, Errc::out_of_range},
                      Case{0, kAll, Width::bits8, 0, Errc::out_of_range},
                      Case{4, kAll, Width::bits64, 0, Errc::out_of_range},
                      Case{1, kAll, Width::bits16, 0, Errc::out_of_range},
                      Case{4096, kAll, Width::bits8, kMax, Errc::out_of_range},
                      Case{4096, kAll, Width::bits64, kMax - 7, Errc::out_of_range},
                      Case{4096, kAll, Width::bits32, kMax - 3, Errc::out_of_range},
                      Case{kMax, kAll, Width::bits64, kMax - 7, Errc::out_of_range},
                      Case{kMax, kAll, Width::bits8, kMax, Errc::out_of_range},
                      Case{4096, kAll, Width::bits32, 1ull << 63, Errc::out_of_range},
                      Case{256, kIo, Width::bits32, 256, Errc::out_of_range}));

INSTANTIATE_TEST_SUITE_P(
    Misaligned, CheckAccess,
    ::testing::Values(Case{4096, kAll, Width::bits16, 1, Errc::misaligned},
                      Case{4096, kAll, Width::bits16, 4095, Errc::misaligned},
                      Case{4096, kAll, Width::bits32, 1, Errc::misaligned},
                      Case{4096, kAll, Width::bits32, 2, Errc::misaligned},
                      Case{4096, kAll, Width::bits32, 3, Errc::misaligned},
                      Case{4096, kAll, Width::bits32, 0x82, Errc::misaligned},
                      Case{4096, kAll, Width::bits64, 4, Errc::misaligned},
                      Case{4096, kAll, Width::bits64, 1, Errc::misaligned},
                      Case{4096, kAll, Width::bits64, 0x84, Errc::misaligned},
                      Case{4096, kAll, Width::bits64, kMax, Errc::misaligned}));

INSTANTIATE_TEST_SUITE_P(
    WidthNotAllowed, CheckAccess,
    ::testing::Values(Case{4096, k32, Width::bits8, 0, Errc::width_not_allowed},
                      Case{4096, k32, Width::bits16, 0, Errc::width_not_allowed},
                      Case{4096, k32, Width::bits64, 0, Errc::width_not_allowed},
                      Case{256, kIo, Width::bits64, 0, Errc::width_not_allowed},
                      Case{4096, WidthSet(), Width::bits32, 0, Errc::width_not_allowed},
                      // Width is checked first: a bad width with a bad offset says "width".
                      Case{4096, k32, Width::bits8, 5000, Errc::width_not_allowed}));

TEST(WidthSet, UnionAndIntersection) {
  const WidthSet wide = WidthSet::only(Width::bits32) | WidthSet::only(Width::bits64);
  EXPECT_FALSE(wide.allows(Width::bits8));
  EXPECT_FALSE(wide.allows(Width::bits16));
  EXPECT_TRUE(wide.allows(Width::bits32));
  EXPECT_TRUE(wide.allows(Width::bits64));
  EXPECT_EQ(wide & WidthSet::up_to(Width::bits32), WidthSet::only(Width::bits32));
  EXPECT_EQ(WidthSet::up_to(Width::bits16) | wide, WidthSet::all());
  EXPECT_EQ(wide.to_string(), "32/64");
}

TEST(Widths, FromBits) {
  EXPECT_EQ(width_from_bits(8), Width::bits8);
  EXPECT_EQ(width_from_bits(64), Width::bits64);
  for (unsigned bad : {0u, 1u, 4u, 7u, 12u, 24u, 48u, 128u}) {
    auto width = width_from_bits(bad);
    ASSERT_FALSE(width) << bad;
    EXPECT_EQ(width.error().code, Errc::invalid_argument);
  }
}

TEST(Widths, SetsAndNames) {
  EXPECT_EQ(WidthSet::all().to_string(), "8/16/32/64");
  EXPECT_EQ(WidthSet::up_to(Width::bits32).to_string(), "8/16/32");
  EXPECT_EQ(WidthSet::only(Width::bits32).to_string(), "32");
  EXPECT_EQ(WidthSet().to_string(), "none");
  EXPECT_EQ((WidthSet::all() & WidthSet::only(Width::bits64)), WidthSet::only(Width::bits64));
  EXPECT_TRUE((WidthSet::only(Width::bits8) & WidthSet::only(Width::bits64)).empty());
}

TEST(CheckSpan, OverflowSafe) {
  EXPECT_TRUE(check_span("dump", "r", 4096, 0, 4096));
  EXPECT_TRUE(check_span("dump", "r", 4096, 4096, 0));
  EXPECT_FALSE(check_span("dump", "r", 4096, 1, 4096));
  EXPECT_FALSE(check_span("dump", "r", 4096, 4097, 0));
  EXPECT_FALSE(check_span("dump", "r", 4096, 16, kMax));
  EXPECT_FALSE(check_span("dump", "r", 4096, kMax, 16));
  EXPECT_EQ(check_span("dump", "r", 4096, kMax, 16).error().code, Errc::out_of_range);
}

}  // namespace
}  // namespace pcie
