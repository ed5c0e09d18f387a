// Fuzz target: pciectl's number, size and BAR parsing of command-line text. A value that
// parses prints back to the same value; one that does not is a one-line usage error.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "tools/pciectl/parse.h"

namespace {

void expect_one_line(const pcie::Error& error) {
  if (error.code != pcie::Errc::invalid_argument && error.code != pcie::Errc::out_of_range) std::abort();
  for (const char c : error.message()) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  if (auto number = pciectl::parse_number(text, "value")) {
    if (pciectl::parse_number(std::to_string(*number), "value") != *number) std::abort();
  } else {
    expect_one_line(number.error());
  }
  if (auto bytes = pciectl::parse_size(text, "size")) {
    if (pciectl::parse_size(std::to_string(*bytes), "size") != *bytes) std::abort();
  } else {
    expect_one_line(bytes.error());
  }
  if (auto bar = pciectl::parse_bar(text)) {
    if (*bar > 5) std::abort();
  } else {
    expect_one_line(bar.error());
  }
  return 0;
}
