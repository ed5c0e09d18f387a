// pciectl iomem [ADDRESS]: the kernel's physical address map (run_iomem, physical.h).
#include <memory>

#include "tools/pciectl/command.h"
#include "tools/pciectl/physical.h"

namespace pciectl {

void register_iomem(CLI::App& app, Commands& commands) {
  auto address = std::make_shared<std::string>();
  CLI::App* command = app.add_subcommand(
      "iomem", "the kernel's physical address map (/proc/iomem): RAM, each device's BARs and who claimed them");
  command->add_option("address", *address, "show only the ranges holding this physical address, and its owner");
  commands.push_back({command, nullptr, [address](const GlobalOptions& global, bool) {
                        return run_iomem(global.proc + "/iomem", *address);
                      }});
}

}  // namespace pciectl
