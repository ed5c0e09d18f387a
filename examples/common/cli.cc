// --help and --version for the example programs.
#include "examples/common/cli.h"

#include <cstdio>
#include <string_view>

#include "pcie/version.h"

namespace examples {

std::optional<int> answer_help_or_version(int argc, char** argv, const char* program, const std::string& usage) {
  for (int i = 1; i < argc; ++i) {
    const std::string_view argument = argv[i];
    if (argument == "--help" || argument == "-h") {
      std::printf("usage: %s", usage.c_str());
      return 0;
    }
    if (argument == "--version") {
      std::printf("%s %s (libpcie %s)\n", program, PCIE_VERSION, pcie::library_version());
      return 0;
    }
  }
  return std::nullopt;
}

int usage_error(const std::string& usage) {
  std::fprintf(stderr, "usage: %s", usage.c_str());
  return 2;
}

}  // namespace examples
