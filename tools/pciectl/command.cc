#include "tools/pciectl/command.h"

#include <fmt/format.h>

#include "tools/pciectl/parse.h"

namespace pciectl {

void add_width(CLI::App* command, unsigned& width_bits, bool required) {
  command->add_option("-w,--width", width_bits,
                      required ? "access width in bits: 8, 16, 32 or 64 (required: a write never guesses, as in setpci)"
                               : "access width in bits: 8, 16, 32 or 64 (default 32)")
      ->check(CLI::IsMember({8u, 16u, 32u, 64u}));
}

int width_required(const char* command) {
  return fail(pcie::make_error(pcie::Errc::invalid_argument, command, "", "a write needs an explicit width",
                               fmt::format("add -w 8, -w 16, -w 32 or -w 64 (see 'pciectl {} --help')", command)));
}

}  // namespace pciectl
