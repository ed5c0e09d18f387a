// "--key=value" arguments left after GoogleTest took its own, for the VM test programs on
// both sides (host runner and in-guest program).
#pragma once

#include <map>
#include <string>

namespace pcie::vm {

using Flags = std::map<std::string, std::string>;

inline Flags parse_flags(int argc, char** argv) {
  Flags flags;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    const std::size_t equals = argument.find('=');
    if (argument.starts_with("--") && equals != std::string::npos) {
      flags[argument.substr(2, equals - 2)] = argument.substr(equals + 1);
    }
  }
  return flags;
}

}  // namespace pcie::vm
