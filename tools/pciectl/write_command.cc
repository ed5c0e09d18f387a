// pciectl write BDF BAR OFFSET VALUE -w BITS: one register of a BAR.
#include <fmt/format.h>

#include <memory>
#include <nlohmann/json.hpp>

#include "tools/pciectl/bar_access.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

int run_write(const GlobalOptions& global, const AccessOptions& options) {
  auto value = parse_number(options.value, "value");
  if (!value) return fail(value.error());
  auto access = open_bar_access(global, options, true, RemovalWatch::Span::single_access);
  if (!access) return fail(access.error());
  // Gone since the open: no access at all.
  if (auto present = access->removal->check("write"); !present) return fail(present.error());
  auto written = access->region->write(access->width, access->offset, *value);
  if (!written) return fail(written.error());
  // A write across the device's removal may have gone to a revoked mapping: not written.
  if (auto present = access->removal->check("write"); !present) return fail(present.error());
  if (json_errors()) {
    nlohmann::ordered_json out = {{"bdf", options.bdf}, {"bar", options.bar}, {"offset", access->offset},
                                  {"width", pcie::byte_count(access->width) * 8}, {"written", *value},
                                  {"path", pcie::to_string(access->path)}};
    print_json_document(out);
  }
  return kSuccess;
}

}  // namespace

void register_write(CLI::App& app, Commands& commands) {
  auto access = std::make_shared<AccessOptions>();
  CLI::App* command = app.add_subcommand("write", "write one register of a BAR");
  add_bdf_and_bar(command, *access);
  command->add_option("offset", access->offset, "byte offset (decimal or 0x hex)")->required();
  command->add_option("value", access->value, "value (decimal or 0x hex)")->required();
  access->width_bits = 0;  // no default: 0 until -w is given
  add_width(command, access->width_bits, true);
  command->add_flag("--enable", access->enable, kEnableHelp);
  add_path_choice(command, *access);
  commands.push_back({command, nullptr, [access](const GlobalOptions& global, bool) {
                        return access->width_bits == 0 ? width_required("write") : run_write(global, *access);
                      }});
}

}  // namespace pciectl
