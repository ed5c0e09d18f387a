// pciectl mem read|write|dump ADDRESS: physical memory through /dev/mem (run_mem, physical.h).
#include <fmt/format.h>

#include <cstdio>
#include <memory>

#include "tools/pciectl/command.h"
#include "tools/pciectl/exit_codes.h"
#include "tools/pciectl/physical.h"

namespace pciectl {
namespace {

int run_mem_command(const GlobalOptions& global, MemOptions& mem, const CLI::App& command) {
  if ((mem.action == "write") != !mem.value.empty()) {
    fmt::print(stderr, "pciectl: error: mem write takes a VALUE, read and dump do not (see 'pciectl mem --help')\n");
    return kUsage;
  }
  if (mem.action == "write" && command.count("--width") == 0) return width_required("mem");
  mem.iomem = global.proc + "/iomem";
  return run_mem(mem);
}

}  // namespace

void register_mem(CLI::App& app, Commands& commands) {
  auto mem = std::make_shared<MemOptions>();
  CLI::App* command = app.add_subcommand(
      "mem", "read, write or dump physical addresses through /dev/mem (root; uncached), like devmem2");
  command->add_option("action", mem->action, "read, write or dump")->required()->check(CLI::IsMember({"read", "write", "dump"}));
  command->add_option("address", mem->address, "physical address (decimal or 0x hex)")->required();
  command->add_option("value", mem->value, "value to write (write only)");
  command->add_option("--length", mem->length, "bytes to dump (default 256)");
  command->add_option("--dev-mem", mem->dev_mem, "the /dev/mem to use (default /dev/mem)");
  add_width(command, mem->width_bits);  // required for "write": run_mem_command checks
  commands.push_back({command, nullptr, [mem, command](const GlobalOptions& global, bool) {
                        return run_mem_command(global, *mem, *command);
                      }});
}

}  // namespace pciectl
