// Fuzz target: BDF text from the command line or a sysfs directory name. A BDF that parses
// prints back to text that parses to the same BDF; one that does not gives an error whose
// message is one line of printable text.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "pcie/bdf.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto bdf = pcie::Bdf::parse(text);
  if (bdf) {
    if (bdf->device > 31 || bdf->function > 7) std::abort();
    auto again = pcie::Bdf::parse(bdf->to_string());
    if (!again || *again != *bdf) std::abort();
    return 0;
  }
  const std::string message = bdf.error().message();
  for (const char c : message) {
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) std::abort();  // one printable line
  }
  return 0;
}
