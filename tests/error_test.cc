// Error messages are one line of readable text, whatever the user, the kernel or a device
// put into their fields: control characters and bytes that are not UTF-8 come out as \xNN.
#include "pcie/error.h"

#include <gtest/gtest.h>

namespace pcie {
namespace {

TEST(Error, MessageIsOneLineWhateverTheFieldsHold) {
  Error error = make_error(Errc::invalid_argument, "parse\noffset", "'12\r\n34'", "not a\tnumber\x1b[31m",
                           "use\x7f hex");
  const std::string message = error.message();
  for (char c : message) EXPECT_FALSE(static_cast<unsigned char>(c) < 0x20 || c == 0x7f) << message;
  EXPECT_EQ(message, "parse\\x0aoffset '12\\x0d\\x0a34': not a\\x09number\\x1b[31m (hint: use\\x7f hex)");
}

TEST(Error, ValidUtf8IsKeptInvalidBytesAreEscaped) {
  EXPECT_EQ(printable("caf\xc3\xa9"), "caf\xc3\xa9");
  EXPECT_EQ(printable("\xe2\x82\xac 5"), "\xe2\x82\xac 5");
  EXPECT_EQ(printable("\xf0\x9f\x98\x80"), "\xf0\x9f\x98\x80");
  EXPECT_EQ(printable("bad \xff end"), "bad \\xff end");
  EXPECT_EQ(printable("cut \xc3"), "cut \\xc3");
  EXPECT_EQ(printable("\xc3\x28"), "\\xc3(");           // a lead byte without its continuation
  EXPECT_EQ(printable("\xc0\xaf"), "\\xc0\\xaf");        // overlong encoding of '/'
  EXPECT_EQ(printable("\xed\xa0\x80"), "\\xed\\xa0\\x80"); // a UTF-16 surrogate
  EXPECT_EQ(printable("\xf4\x90\x80\x80"), "\\xf4\\x90\\x80\\x80");  // past U+10FFFF
  EXPECT_EQ(printable(std::string("nul\0here", 8)), "nul\\x00here");
  EXPECT_EQ(printable("plain ASCII, 100%"), "plain ASCII, 100%");
}

TEST(Error, ErrnoErrorsKeepTheirErrnoAndText) {
  const Error error = make_errno_error(EACCES, "open", "/sys/x");
  EXPECT_EQ(error.code, Errc::permission_denied);
  EXPECT_EQ(error.sys_errno, EACCES);
  EXPECT_EQ(error.message(), "open /sys/x: Permission denied");
}

}  // namespace
}  // namespace pcie
