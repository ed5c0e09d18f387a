// pciectl doctor BDF: the device's checks, in the order they are reported: the device, its
// driver (and whether the host uses it), its IOMMU group's viability and access, and who
// owns its memory BARs.
#pragma once

#include <vector>

#include "pcie/bdf.h"
#include "tools/pciectl/doctor.h"
#include "tools/pciectl/doctor_check.h"

namespace pciectl::doctor {

// Appends the checks of the device at `bdf` to `checks`, reading the trees `options`
// names; only the failed "device" check when it cannot be described. Only reads.
void device_checks(const DoctorOptions& options, const pcie::Bdf& bdf, std::vector<Check>& checks);

}  // namespace pciectl::doctor
