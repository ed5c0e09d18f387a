// pciectl read BDF BAR OFFSET: one register of a BAR.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "tools/pciectl/bar_access.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

int run_read(const GlobalOptions& global, const AccessOptions& options) {
  auto access = open_bar_access(global, options, false, RemovalWatch::Span::single_access);
  if (!access) return fail(access.error());
  // Gone since the open: no access at all.
  if (auto present = access->removal->check("read"); !present) return fail(present.error());
  auto value = access->region->read(access->width, access->offset);
  if (!value) return fail(value.error());
  // A value read across the device's removal is all ones from a revoked mapping.
  if (auto present = access->removal->check("read"); !present) return fail(present.error());
  if (json_errors()) {  // --json
    nlohmann::ordered_json out = {{"bdf", options.bdf}, {"bar", options.bar}, {"offset", access->offset},
                                  {"width", pcie::byte_count(access->width) * 8}, {"value", *value},
                                  {"path", pcie::to_string(access->path)}};
    print_json_document(out);
    return kSuccess;
  }
  fmt::print("0x{:0{}x}\n", *value, pcie::byte_count(access->width) * 2);
  return kSuccess;
}

}  // namespace

void register_read(CLI::App& app, Commands& commands) {
  auto access = std::make_shared<AccessOptions>();
  CLI::App* command = app.add_subcommand("read", "read one register of a BAR");
  add_bdf_and_bar(command, *access);
  command->add_option("offset", access->offset, "byte offset (decimal or 0x hex)")->required();
  add_width(command, access->width_bits);
  command->add_flag("--enable", access->enable, kEnableHelp);
  add_path_choice(command, *access);
  commands.push_back(
      {command, nullptr, [access](const GlobalOptions& global, bool) { return run_read(global, *access); }});
}

}  // namespace pciectl
