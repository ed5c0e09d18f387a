// Numbers as sysfs attributes hold them (sysfs::parse_number, shared by discovery, binding,
// link and UIO code): a table of what is accepted and what is refused, including the
// inputs that would overflow a negation.
#include <gtest/gtest.h>

#include <limits>
#include <optional>

#include "src/pci/sysfs_links.h"

namespace pcie {
namespace {

TEST(SysfsNumber, AcceptsWhatTheKernelWritesAndNothingElse) {
  struct Case {
    const char* text;
    std::optional<std::int64_t> value;
  };
  const Case cases[] = {
      {"0", 0},
      {"42\n", 42},
      {"-1\n", -1},
      {"0x10de", 0x10de},
      {"0x7fffffffffffffff", std::numeric_limits<std::int64_t>::max()},
      {"-9223372036854775807", -std::numeric_limits<std::int64_t>::max()},
      {"", std::nullopt},
      {"-", std::nullopt},
      {"0x", std::nullopt},
      {"--5", std::nullopt},                      // one sign only
      {"-0x-5", std::nullopt},                    // no sign after the prefix
      {"0x-5", std::nullopt},
      {"-0x-8000000000000000", std::nullopt},     // found by fuzz_sysfs_text: negating INT64_MIN
      {"--9223372036854775808", std::nullopt},
      {"9223372036854775808", std::nullopt},      // past INT64_MAX
      {"+5", std::nullopt},
      {"5x", std::nullopt},
      {" 5", std::nullopt},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(sysfs::parse_number(c.text), c.value);
  }
}

}  // namespace
}  // namespace pcie
