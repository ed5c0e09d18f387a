// pciectl sriov BDF [--numvfs N] [--bind DRIVER] [--autoprobe on|off] [--force]: show a
// physical function's VFs, create or remove them, and bind them all in one step.
#pragma once

#include <optional>
#include <string>

#include "pcie/sysfs_paths.h"

namespace pciectl {

struct SriovCommand {
  std::string bdf;
  std::optional<unsigned> numvfs;
  std::string bind;
  std::string autoprobe;  // "", "on" or "off"
  bool force = false;
  bool json = false;
};

int run_sriov(const pcie::SysfsPaths& paths, const SriovCommand& command);

}  // namespace pciectl
