// pciectl: list, inspect and poke PCI devices through the pcie library.
//
// main() builds the CLI11 app from a table of commands; each command's options and run
// function live in its own file (tools/pciectl/*_command.cc, registered through command.h).
#include <fmt/format.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdio>
#include <optional>
#include <string_view>

#include "pcie/version.h"
#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/global_options.h"
#include "tools/pciectl/parse.h"

namespace pciectl {
namespace {

// In the order `pciectl --help` lists them.
constexpr RegisterCommand kCommands[] = {
    register_ls,     register_info,  register_read,  register_write, register_dump,
    register_config, register_bind,  register_unbind, register_iomem, register_mem,
    register_vfio,   register_doctor, register_sriov, register_bench, register_peer,
};

void add_global_options(CLI::App& app, GlobalOptions& global, bool& json) {
  app.footer(kExitCodeHelp);
  app.require_subcommand(1);
  // The version compiled in, and the library's own when a shared libpcie was swapped.
  app.set_version_flag("--version", fmt::format("pciectl {} (library {}), Apache-2.0", PCIE_VERSION,
                                                pcie::library_version()));
  app.add_option("--sysfs", global.sysfs, "sysfs mount to use (default /sys, or $PCIE_SYSFS)");
  app.add_option("--proc", global.proc, "proc mount for the mount table and swaps (default /proc, or $PCIE_PROC)");
  app.add_option("--pci-ids", global.pci_ids, "pci.ids file for names (default: libpci's)");
  app.add_option("--dev-vfio", global.dev_vfio, "VFIO's device nodes (default /dev/vfio, or $PCIE_DEV_VFIO)");
  app.add_flag("--json", json,
               "JSON on stdout: every command's result and any "
               "error as {\"error\": {...}}");
  app.fallthrough();  // --json after the command name too
}

// Errors while parsing the command line are JSON too when --json is anywhere in it.
bool json_anywhere(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string_view(argv[i]) == "--json") return true;
  }
  return false;
}

// Parses the command line; an exit code when that already ended the run (help, version,
// usage error).
std::optional<int> parse_command_line(CLI::App& app, int argc, char** argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    fmt::print(stderr, "pciectl: error: {} (see 'pciectl --help')\n", pcie::printable(e.what()));
    if (json_errors()) {
      print_json_error("usage", kUsage,
                       pcie::make_error(pcie::Errc::invalid_argument, "parse command line", "", e.what(), "see 'pciectl --help'"));
    }
    return kUsage;
  }
  return std::nullopt;
}

// One --json for every command, wherever it was given: the global flag or a command's own.
bool any_json(bool global_json, const Commands& commands) {
  return global_json || std::ranges::any_of(commands, [](const Command& c) { return c.json_flag && c.json_flag(); });
}

}  // namespace
}  // namespace pciectl

int main(int argc, char** argv) {
  using namespace pciectl;
  CLI::App app{"pciectl: list, inspect, read and write PCI devices", "pciectl"};
  GlobalOptions global = global_options_from_environment();
  bool json = false;
  add_global_options(app, global, json);
  if (json_anywhere(argc, argv)) set_json_errors(true);
  Commands commands;
  for (RegisterCommand add : kCommands) add(app, commands);
  if (std::optional<int> ended = parse_command_line(app, argc, argv)) return *ended;
  set_json_errors(any_json(json, commands));
  for (const Command& command : commands) {
    if (*command.cli) return command.run(global, json);
  }
  return kUsage;
}
