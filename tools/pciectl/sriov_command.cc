// pciectl sriov BDF [--numvfs N] [--bind DRIVER] [--autoprobe on|off] (run_sriov, sriov.h).
#include <memory>

#include "tools/pciectl/command.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/sriov.h"

namespace pciectl {

void register_sriov(CLI::App& app, Commands& commands) {
  auto sriov = std::make_shared<SriovCommand>();
  CLI::App* command = app.add_subcommand(
      "sriov", "an SR-IOV physical function's VFs: list them, create or remove them (--numvfs), bind them (--bind)");
  command->add_option("bdf", sriov->bdf, "the physical function")->required();
  command->add_option("--numvfs", sriov->numvfs, "enable this many VFs (0 removes them; needs root)");
  command->add_option("--bind", sriov->bind,
                      "bind every VF to this driver, e.g. vfio-pci (then host drivers do not autoprobe them)");
  command->add_option("--autoprobe", sriov->autoprobe, "whether host drivers probe new VFs: on or off")
      ->check(CLI::IsMember({"on", "off"}));
  command->add_flag("--force", sriov->force, "remove VFs even while they are bound to drivers");
  commands.push_back({command, nullptr, [sriov](const GlobalOptions& global, bool) {
                        sriov->json = json_errors();
                        return run_sriov(paths_of(global), *sriov);
                      }});
}

}  // namespace pciectl
