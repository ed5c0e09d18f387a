// Error messages are one line of readable text, whatever the user, the kernel or a device
// put into their fields: control characters and bytes that are not UTF-8 come out as \xNN.
#include "pcie/error.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdint>

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
  // Well-formed, but a terminal or the reading order obeys them: C1 controls (an 8-bit CSI)
  // and bidirectional overrides and isolates; their neighbours stay.
  EXPECT_EQ(printable("a\xc2\x9b" "2Jb"), "a\\xc2\\x9b" "2Jb");
  EXPECT_EQ(printable("\xc2\x80\xc2\xa0"), "\\xc2\\x80\xc2\xa0");  // U+0080 escaped, U+00A0 kept
  EXPECT_EQ(printable("x\xe2\x80\xae" "evil"), "x\\xe2\\x80\\xaeevil");  // RIGHT-TO-LEFT OVERRIDE
  EXPECT_EQ(printable("\xe2\x81\xa6\xe2\x81\xa9"), "\\xe2\\x81\\xa6\\xe2\\x81\\xa9");
  EXPECT_EQ(printable("\xe2\x80\x8f\xe2\x80\x94"), "\\xe2\\x80\\x8f\xe2\x80\x94");  // RLM escaped, em dash kept
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

// ENODEV is "no such device" at open, "the device went away" on an open descriptor: the
// two builders must disagree on it and on nothing else.
TEST(Error, EnodevOnAnOpenDescriptorIsRemoval) {
  struct Case {
    int err;
    Errc at_open;
    Errc on_io;
  };
  for (const Case& c : {Case{ENODEV, Errc::not_found, Errc::device_removed},
                        Case{ENOENT, Errc::not_found, Errc::not_found},
                        Case{ENXIO, Errc::not_found, Errc::not_found},
                        Case{EACCES, Errc::permission_denied, Errc::permission_denied},
                        Case{EBUSY, Errc::busy, Errc::busy}, Case{EIO, Errc::io_error, Errc::io_error}}) {
    SCOPED_TRACE(c.err);
    EXPECT_EQ(make_errno_error(c.err, "open", "x").code, c.at_open);
    const Error io = make_io_errno_error(c.err, "read", "x");
    EXPECT_EQ(io.code, c.on_io);
    EXPECT_EQ(io.sys_errno, c.err);
    EXPECT_EQ(io.hint.empty(), c.err != ENODEV) << io.message();
  }
  EXPECT_EQ(make_io_errno_error(ENODEV, "read", "x", "mine").hint, "mine");
}

}  // namespace
// Result's own default constructor (user-provided, for the codegen reason in error.h)
// keeps what std::expected's promises: it exists only where the value type has one, is
// noexcept as that one is, and is usable in constant expressions.
struct NoDefault {
  explicit NoDefault(int) {}
};
struct ThrowingDefault {
  ThrowingDefault() noexcept(false) {}
};
static_assert(std::is_nothrow_default_constructible_v<Result<void>>);
static_assert(std::is_nothrow_default_constructible_v<Result<int>>);
static_assert(!std::is_default_constructible_v<Result<NoDefault>>);
static_assert(std::is_default_constructible_v<Result<ThrowingDefault>>);
static_assert(!std::is_nothrow_default_constructible_v<Result<ThrowingDefault>>);
static_assert(Result<int>().value() == 0);
static_assert(Result<void>().has_value());

// A Result converts to a Result of another value type as std::expected does: an error
// stays an error (with the same fields) and a value is converted, even to bool, where a
// constructor from "any U" would read the whole Result<int> as the value true.
TEST(Result, ConvertingKeepsAnErrorAnError) {
  const auto failing = []() -> Result<int> {
    return std::unexpected(make_error(Errc::busy, "open", "0000:00:04.0", "held"));
  };
  const auto as_bool = [&]() -> Result<bool> { return failing(); };
  const Result<bool> converted = as_bool();
  ASSERT_FALSE(converted.has_value());
  EXPECT_EQ(converted.error().code, Errc::busy);
  EXPECT_EQ(converted.error().object, "0000:00:04.0");
  const Result<int> zero = 0;
  const Result<bool> from_copy = zero;
  ASSERT_TRUE(from_copy.has_value());
  EXPECT_FALSE(*from_copy);
  const Result<long> widened = Result<int>(7);
  EXPECT_EQ(widened.value_or(0), 7);
  const Result<long> failed_copy = failing();
  EXPECT_EQ(failed_copy.error().code, Errc::busy);
}

// `result == value` is true only for a held value equal to it, in either order (and the
// fuzzers, built with clang, compile it without -Wambiguous-reversed-operator).
TEST(Result, ComparesEqualOnlyToAnEqualHeldValue) {
  const Result<std::uint64_t> five = std::uint64_t{5};
  const Result<std::uint64_t> failed = std::unexpected(make_error(Errc::busy, "read", "x", "held"));
  EXPECT_TRUE(five == 5u);
  EXPECT_TRUE(5u == five);
  EXPECT_FALSE(five != 5u);
  EXPECT_TRUE(five != 6u);
  EXPECT_FALSE(failed == 0u);
  EXPECT_TRUE(failed != 0u);
}

}  // namespace pcie
