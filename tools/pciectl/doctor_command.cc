// pciectl doctor [BDF]: what a userspace driver needs, checked (run_doctor, doctor.h).
#include <cstdlib>
#include <filesystem>
#include <memory>

#include "tools/pciectl/command.h"
#include "tools/pciectl/doctor.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

// The doctor's paths below the global mounts, and $PCIE_BOOT for /boot.
int run_doctor_command(const GlobalOptions& global, DoctorOptions& doctor) {
  doctor.json = json_errors();
  doctor.paths = paths_of(global);
  doctor.sysfs = global.sysfs;
  doctor.proc = global.proc;
  doctor.dev_vfio = global.dev_vfio;
  doctor.dev_root = std::filesystem::path(global.dev_vfio).parent_path().string();
  if (const char* boot = std::getenv("PCIE_BOOT")) doctor.boot_dir = boot;
  return run_doctor(doctor);
}

}  // namespace

void register_doctor(CLI::App& app, Commands& commands) {
  auto doctor = std::make_shared<DoctorOptions>();
  CLI::App* command = app.add_subcommand(
      "doctor", "check what a userspace driver needs (IOMMU, VFIO, memlock, huge pages, lockdown, PAT; with BDF the "
                "device's driver, group and BARs), each with its fix; exit 0 when ready and nothing failed, 1 when any "
                "check fails");
  command->add_option("bdf", doctor->bdf, "the device to check (optional)");
  commands.push_back(
      {command, nullptr, [doctor](const GlobalOptions& global, bool) { return run_doctor_command(global, *doctor); }});
}

}  // namespace pciectl
