// How a pciectl subcommand plugs into main: a register_X function adds the subcommand and
// its options to the CLI11 app and appends a Command that runs it once the command line is
// parsed. main() holds only the table of register functions (tools/pciectl/main.cc).
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <vector>

#include "tools/pciectl/global_options.h"

namespace pciectl {

struct Command {
  CLI::App* cli = nullptr;  // the subcommand; owned by the app
  // Whether the subcommand's own --json was given; null for commands without one.
  std::function<bool()> json_flag;
  // Runs the command after parsing and returns its exit code; `json` is the global --json.
  std::function<int(const GlobalOptions& global, bool json)> run;
};
using Commands = std::vector<Command>;

// Adds one subcommand to `app` and its Command to `commands`. The options it parses into
// live as long as the Command.
using RegisterCommand = void (*)(CLI::App& app, Commands& commands);

void register_ls(CLI::App& app, Commands& commands);      // ls_command.cc
void register_info(CLI::App& app, Commands& commands);    // info_command.cc
void register_read(CLI::App& app, Commands& commands);    // read_command.cc
void register_write(CLI::App& app, Commands& commands);   // write_command.cc
void register_dump(CLI::App& app, Commands& commands);    // dump_command.cc
void register_config(CLI::App& app, Commands& commands);  // config_command.cc
void register_bind(CLI::App& app, Commands& commands);    // bind_command.cc
void register_unbind(CLI::App& app, Commands& commands);  // bind_command.cc
void register_iomem(CLI::App& app, Commands& commands);   // iomem_command.cc
void register_mem(CLI::App& app, Commands& commands);     // mem_command.cc
void register_vfio(CLI::App& app, Commands& commands);    // vfio_command.cc
void register_doctor(CLI::App& app, Commands& commands);  // doctor_command.cc
void register_sriov(CLI::App& app, Commands& commands);   // sriov_command.cc
void register_bench(CLI::App& app, Commands& commands);   // bench_command.cc
void register_peer(CLI::App& app, Commands& commands);    // peer_command.cc

// Options several commands share.

// -w/--width in bits (8, 16, 32 or 64); the help says whether the command requires it.
void add_width(CLI::App* command, unsigned& width_bits, bool required = false);

// A register write with no -w: refused rather than guessed (a 32-bit write to an 8-bit
// register also writes its three neighbours). Prints the error; returns the exit code.
int width_required(const char* command);

inline constexpr const char* kEnableHelp =
    "if the device does not decode the BAR (Memory/I/O Space Enable off), enable it first (needs root)";

}  // namespace pciectl
