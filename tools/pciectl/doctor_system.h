// pciectl doctor: the machine's checks, in the order they are reported: the IOMMU, VFIO
// and UIO, /dev/vfio, RLIMIT_MEMLOCK, huge pages, lockdown and Secure Boot, PAT, /dev/mem.
#pragma once

#include <vector>

#include "tools/pciectl/doctor.h"
#include "tools/pciectl/doctor_check.h"

namespace pciectl::doctor {

// Appends the machine's checks to `checks`, reading the trees `options` names. Only reads.
void system_checks(const DoctorOptions& options, std::vector<Check>& checks);

}  // namespace pciectl::doctor
