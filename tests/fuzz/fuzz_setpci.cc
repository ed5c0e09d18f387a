// Fuzz target: pciectl config's setpci register expressions (command-line text) resolved
// against a config space (device data). The input is "EXPRESSION\n" followed by config
// bytes. A parsed expression has a width of 1, 2 or 4 once settled, a value and mask that
// fit it, and resolves to an offset inside 32 bits, at a capability the walk found; every
// refusal is a one-line error of the expected kinds.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>

#include "pcie/capabilities.h"
#include "tools/pciectl/setpci.h"

namespace {

void expect_one_line(const pcie::Error& error) {
  if (error.code != pcie::Errc::invalid_argument && error.code != pcie::Errc::out_of_range &&
      error.code != pcie::Errc::not_found) {
    std::abort();
  }
  for (const char c : error.message()) {
    if (c == '\n') std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  const std::size_t newline = input.find('\n');
  const std::string text = input.substr(0, newline);
  std::span<const std::uint8_t> config;
  if (newline != std::string::npos) config = std::span<const std::uint8_t>(data + newline + 1, size - newline - 1);

  auto expression = pciectl::parse_register_expression(text);
  if (!expression) {
    expect_one_line(expression.error());
    return 0;
  }
  const unsigned width_bits = size % 4 == 0 ? 0 : 8u << (size % 3);  // sometimes a -w
  if (auto settled = pciectl::settle_width(*expression, width_bits / 8); !settled) {
    expect_one_line(settled.error());
    return 0;
  }
  const unsigned width = expression->width_bytes;
  if (width != 1 && width != 2 && width != 4) std::abort();
  const std::uint64_t limit = (1ull << (8 * width)) - 1;
  if (expression->value && *expression->value > limit) std::abort();
  if (pciectl::write_mask(*expression) > limit) std::abort();
  if (auto offset = pciectl::resolve_register_offset(*expression, config)) {
    if (expression->base == pciectl::RegisterExpression::Base::header && *offset != expression->offset) std::abort();
    if (expression->base != pciectl::RegisterExpression::Base::header && *offset < expression->offset) std::abort();
  } else {
    expect_one_line(offset.error());
  }
  return 0;
}
