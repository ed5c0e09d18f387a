// pciectl vfio grant|release: hand a device to a normal user through VFIO and give it back
// (pcie/vfio_access.h), with the checks a first run trips over: group viability and the
// user's RLIMIT_MEMLOCK.
#pragma once

#include <string>

#include "pcie/vfio.h"

namespace pciectl {

struct GrantCommand {
  std::string action;  // grant or release
  std::string bdf;
  std::string user;    // name, or uid[:gid]
  std::string state_dir = "/run/pcie/vfio-grants";
  std::string limits_conf = "/etc/security/limits.conf";  // and limits.d beside it
  bool force = false;
  bool json = false;
};

int run_vfio_grant(const pcie::VfioPaths& paths, const GrantCommand& command);

}  // namespace pciectl
