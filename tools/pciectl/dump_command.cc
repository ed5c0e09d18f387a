// pciectl dump BDF BAR [--offset] [--length]: a hex dump of a BAR range, register by register.
#include <memory>

#include "tools/pciectl/bar_access.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"
#include "tools/pciectl/physical.h"

namespace pciectl {
namespace {

int run_dump(const GlobalOptions& global, const AccessOptions& options) {
  auto access = open_bar_access(global, options, false, RemovalWatch::Span::many_accesses);
  if (!access) return fail(access.error());
  const int status = dump_region(*access->region, access->width, access->offset, options.length);
  if (status != kSuccess) return status;
  // Rows read across the device's removal came from a revoked mapping: say so, and fail.
  if (auto present = access->removal->check("dump"); !present) return fail(present.error());
  return kSuccess;
}

}  // namespace

void register_dump(CLI::App& app, Commands& commands) {
  auto access = std::make_shared<AccessOptions>();
  access->offset = "0";
  CLI::App* command = app.add_subcommand("dump", "hex dump of a BAR range, read register by register");
  add_bdf_and_bar(command, *access);
  command->add_option("--offset", access->offset, "start offset (default 0)");
  command->add_option("--length", access->length, "bytes to dump (default 256 or to the end)");
  add_width(command, access->width_bits);
  command->add_flag("--enable", access->enable, kEnableHelp);
  add_path_choice(command, *access);
  commands.push_back(
      {command, nullptr, [access](const GlobalOptions& global, bool) { return run_dump(global, *access); }});
}

}  // namespace pciectl
