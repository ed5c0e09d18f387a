// pciectl's exit codes, documented in README.md and in `pciectl --help`.
#pragma once

#include "pcie/error.h"

namespace pciectl {

enum ExitCode : int {
  kSuccess = 0,
  kFailure = 1,           // the operation failed: I/O error, malformed data, device not
                          // decoding its BARs
  kUsage = 2,             // bad command line, BDF, offset, width, alignment or range
  kNotFound = 3,          // no such device, BAR or file
  kPermissionDenied = 4,  // not root, read-only, or kernel lockdown
  kBusy = 5,              // a driver owns the region, or the device is busy
  kDeviceRemoved = 6,     // the device went away (hot unplug) before or while the command ran
};

inline constexpr const char* kExitCodeHelp =
    "Exit codes: 0 success, 1 operation failed, 2 usage error (bad argument, offset, width,\n"
    "alignment or range), 3 device or BAR not found, 4 permission denied (not root,\n"
    "lockdown), 5 busy (a driver owns the region), 6 device removed (hot unplug).";

inline ExitCode exit_code_for(pcie::Errc code) {
  switch (code) {
    case pcie::Errc::invalid_argument:
    case pcie::Errc::out_of_range:
    case pcie::Errc::misaligned:
    case pcie::Errc::width_not_allowed:
    case pcie::Errc::not_supported: return kUsage;
    case pcie::Errc::not_found: return kNotFound;
    case pcie::Errc::permission_denied:
    case pcie::Errc::lockdown: return kPermissionDenied;
    case pcie::Errc::busy:
    case pcie::Errc::driver_owns_region: return kBusy;
    case pcie::Errc::device_removed: return kDeviceRemoved;
    case pcie::Errc::device_disabled:
    case pcie::Errc::malformed:
    case pcie::Errc::io_error: return kFailure;
  }
  return kFailure;
}

}  // namespace pciectl
