#include "pcie/bdf.h"

#include <gtest/gtest.h>

namespace pcie {
namespace {

struct GoodCase {
  const char* text;
  Bdf expected;
  const char* canonical;
};

class BdfParseGood : public ::testing::TestWithParam<GoodCase> {};

TEST_P(BdfParseGood, ParsesAndFormats) {
  const GoodCase& c = GetParam();
  auto bdf = Bdf::parse(c.text);
  ASSERT_TRUE(bdf) << bdf.error().message();
  EXPECT_EQ(*bdf, c.expected);
  EXPECT_EQ(bdf->to_string(), c.canonical);
}

INSTANTIATE_TEST_SUITE_P(
    Forms, BdfParseGood,
    ::testing::Values(GoodCase{"0000:03:00.0", {0, 3, 0, 0}, "0000:03:00.0"},
                      GoodCase{"03:00.0", {0, 3, 0, 0}, "0000:03:00.0"},
                      GoodCase{"3:0.0", {0, 3, 0, 0}, "0000:03:00.0"},
                      GoodCase{"0000:ff:1f.7", {0, 0xff, 0x1f, 7}, "0000:ff:1f.7"},
                      GoodCase{"FFFF:AB:1F.7", {0xffff, 0xab, 0x1f, 7}, "ffff:ab:1f.7"},
                      GoodCase{"10000:e0:00.0", {0x10000, 0xe0, 0, 0}, "10000:e0:00.0"},
                      GoodCase{"0:0:0.0", {0, 0, 0, 0}, "0000:00:00.0"},
                      GoodCase{"0001:00:02.1", {1, 0, 2, 1}, "0001:00:02.1"}));

struct BadCase {
  const char* text;
  const char* reason_fragment;
};

class BdfParseBad : public ::testing::TestWithParam<BadCase> {};

TEST_P(BdfParseBad, RejectedWithReason) {
  const BadCase& c = GetParam();
  auto bdf = Bdf::parse(c.text);
  ASSERT_FALSE(bdf) << "accepted '" << c.text << "' as " << bdf->to_string();
  EXPECT_EQ(bdf.error().code, Errc::invalid_argument);
  EXPECT_NE(bdf.error().reason.find(c.reason_fragment), std::string::npos)
      << "reason was: " << bdf.error().reason;
  EXPECT_FALSE(bdf.error().hint.empty());
}

INSTANTIATE_TEST_SUITE_P(
    Garbage, BdfParseBad,
    ::testing::Values(BadCase{"", "empty string"},
                      BadCase{"0000:03:00", "missing '.'"},
                      BadCase{"03", "missing '.'"},
                      BadCase{".0", "expected 'bus:device'"},
                      BadCase{"00.0", "expected 'bus:device'"},
                      BadCase{"0000:00:03:00.0", "expected 'bus:device'"},
                      BadCase{"0000:03:00.", "function is empty"},
                      BadCase{"0000:03:.0", "device is empty"},
                      BadCase{"0000::00.0", "bus is empty"},
                      BadCase{":03:00.0", "domain is empty"},
                      BadCase{"0000:03:20.0", "device 0x20 is out of range"},
                      BadCase{"0000:03:ff.0", "device 0xff is out of range"},
                      BadCase{"0000:03:00.8", "function 8 is out of range"},
                      BadCase{"0000:03:00.f", "function 15 is out of range"},
                      BadCase{"0000:03:00.10", "more than 1 hex digits"},
                      BadCase{"0000:100:00.0", "more than 2 hex digits"},
                      BadCase{"0000:03:001.0", "more than 2 hex digits"},
                      BadCase{"123456789:03:00.0", "more than 8 hex digits"},
                      BadCase{"0000:0g:00.0", "not hexadecimal"},
                      BadCase{"0x00:03:00.0", "not hexadecimal"},
                      BadCase{"0000:-3:00.0", "not hexadecimal"},
                      BadCase{"0000:+3:00.0", "not hexadecimal"},
                      BadCase{" 0000:03:00.0", "whitespace"},
                      BadCase{"0000:03:00.0 ", "whitespace"},
                      BadCase{"0000:03:00.0\n", "whitespace or a control character"},
                      BadCase{"0000:03:0 .0", "whitespace"},
                      BadCase{"0000:03:00.0\t", "whitespace"},
                      BadCase{"zzzz:03:00.0", "not hexadecimal"},
                      BadCase{"0000:03:00,0", "missing '.'"},
                      BadCase{"0000:03:00.0.0", "not hexadecimal"},
                      BadCase{"0000/03/00.0", "expected 'bus:device'"},
                      // Non-ASCII bytes are not whitespace (signed char made them look so).
                      BadCase{"0000:0\xc3\xa9:00.0", "not hexadecimal"},
                      BadCase{"\xff\xfe:03:00.0", "not hexadecimal"},
                      BadCase{"0000:03:00.\x80", "not hexadecimal"}));

TEST(Bdf, OrdersByDomainBusDeviceFunction) {
  EXPECT_LT((Bdf{0, 0, 0x1f, 7}), (Bdf{0, 1, 0, 0}));
  EXPECT_LT((Bdf{0, 0xff, 0, 0}), (Bdf{1, 0, 0, 0}));
  EXPECT_LT((Bdf{0, 3, 0, 0}), (Bdf{0, 3, 0, 1}));
}

TEST(Bdf, ErrorMessageNamesInputAndHint) {
  auto bdf = Bdf::parse("0000:03:20.0");
  ASSERT_FALSE(bdf);
  EXPECT_EQ(bdf.error().message(),
            "parse BDF '0000:03:20.0': device 0x20 is out of range (max 0x1f) "
            "(hint: expected DDDD:BB:DD.F or BB:DD.F in hex, e.g. 0000:03:00.0)");
}

TEST(Bdf, NonAsciiIsNotABdfAndNeverWhitespace) {
  for (const char* text : {"0000:0\xc3\xa9:00.0", "\xe2\x80\x83:00.0", "0\xa0:00.0"}) {
    auto bdf = Bdf::parse(text);
    ASSERT_FALSE(bdf) << text;
    EXPECT_EQ(bdf.error().reason.find("whitespace"), std::string::npos) << bdf.error().message();
  }
}

TEST(Bdf, ControlCharactersStayOutOfTheMessage) {
  auto bdf = Bdf::parse("00:03.0\nrm -rf /");
  ASSERT_FALSE(bdf);
  const std::string message = bdf.error().message();
  EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  EXPECT_NE(message.find("00:03.0\\x0arm -rf /"), std::string::npos) << message;
}

}  // namespace
}  // namespace pcie
