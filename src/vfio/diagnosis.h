// Gathering what explain_vfio_failure() needs about a device that could not be opened
// (private to the VFIO files).
#pragma once

#include "pcie/vfio.h"

namespace pcie::vfio_detail {

// The device's group, driver and group members as sysfs shows them now.
VfioFailureContext failure_context(const VfioPaths& paths, const Bdf& bdf);

}  // namespace pcie::vfio_detail
