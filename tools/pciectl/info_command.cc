// pciectl info BDF: everything discovery knows about one device, as text or JSON.
#include <fmt/format.h>

#include <memory>
#include <optional>

#include "pcie/discovery.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/render.h"
#include "tools/pciectl/vfio_nodes.h"

namespace pciectl {
namespace {

struct InfoOptions {
  std::string bdf;
  bool json = false;
};

int run_info(const GlobalOptions& global, const std::string& bdf_text, bool json) {
  auto bdf = pcie::Bdf::parse(bdf_text);
  if (!bdf) return fail(bdf.error());
  auto device = pcie::describe(*bdf, discovery_options(global));
  if (!device) return fail(device.error());
  const BarMemoryTypes memory_types = read_bar_memory_types(paths_of(global), *device);
  const std::optional<VfioNodes> vfio = read_vfio_nodes(vfio_paths_of(global), *device);
  const VfioNodes* vfio_or_null = vfio ? &*vfio : nullptr;
  if (json) {
    print_json_document(to_json(*device, &memory_types, vfio_or_null));
  } else {
    fmt::print("{}", render_details(*device, &memory_types, vfio_or_null));
  }
  return kSuccess;
}

}  // namespace

void register_info(CLI::App& app, Commands& commands) {
  auto info = std::make_shared<InfoOptions>();
  CLI::App* command = app.add_subcommand("info", "everything discovery knows about one device");
  command->add_option("bdf", info->bdf, "device address, e.g. 0000:03:00.0")->required();
  command->add_flag("--json", info->json, "print JSON");
  commands.push_back({command, [info] { return info->json; },
                      [info](const GlobalOptions& global, bool json) {
                        return run_info(global, info->bdf, info->json || json);
                      }});
}

}  // namespace pciectl
